package bmc

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/google/uuid"
)

// TestEnrolRefusal: an agent may store credentials over none, over a BMC
// without a password, and over an agent's; never over an operator's, nor
// over a BMC registered to use its segment's default credentials.
func TestEnrolRefusal(t *testing.T) {
	t.Parallel()
	sealed := []byte("sealed")
	empty := []byte{}
	segment := uuid.New()
	d := defaults{{prefix: netip.MustParsePrefix("10.9.0.0/16"), creds: &ent.SegmentCredentials{SegmentID: segment, Username: "rack"}}}
	tests := map[string]struct {
		bmc    *ent.BMC
		refuse string // in the refusal; "" when allowed
	}{
		"no BMC":                 {nil, ""},
		"no password":            {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, Username: "admin"}, ""},
		"empty password":         {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, Username: "admin", PasswordSealed: &empty}, ""},
		"an agent's password":    {&ent.BMC{CredentialSource: entbmc.CredentialSourceAgent, Username: "carbide", PasswordSealed: &sealed}, ""},
		"an operator's password": {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, Username: "admin", PasswordSealed: &sealed}, "an operator set"},
		"outside every segment":  {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, Address: "10.10.0.1"}, ""},
		"on segment defaults":    {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, Address: "10.9.9.9"}, segment.String()},
	}
	for name, tc := range tests {
		got := enrolRefusal(tc.bmc, d)
		if (got == "") != (tc.refuse == "") || !strings.Contains(got, tc.refuse) {
			t.Errorf("%s: enrolRefusal = %q, want a refusal with %q", name, got, tc.refuse)
		}
	}
}

// TestMayEnrollWithoutKeyring: without a keyring no agent is asked to
// enrol, since the API could not store the password it would set.
func TestMayEnrollWithoutKeyring(t *testing.T) {
	t.Parallel()
	s := NewService(nil, nil, 0, slog.New(slog.DiscardHandler))
	ok, err := s.MayEnroll(context.Background(), uuid.New())
	if ok || err != nil {
		t.Errorf("MayEnroll without a keyring = %t, %v; want false", ok, err)
	}
}
