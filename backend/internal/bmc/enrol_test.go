package bmc

import (
	"context"
	"log/slog"
	"testing"

	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/google/uuid"
)

// TestMayEnroll: an agent may store credentials over none, over a BMC
// without a password, and over an agent's; never over an operator's.
func TestMayEnroll(t *testing.T) {
	t.Parallel()
	sealed := []byte("sealed")
	empty := []byte{}
	tests := map[string]struct {
		bmc  *ent.BMC
		want bool
	}{
		"no BMC":                 {nil, true},
		"no password":            {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator}, true},
		"empty password":         {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, PasswordSealed: &empty}, true},
		"an agent's password":    {&ent.BMC{CredentialSource: entbmc.CredentialSourceAgent, PasswordSealed: &sealed}, true},
		"an operator's password": {&ent.BMC{CredentialSource: entbmc.CredentialSourceOperator, PasswordSealed: &sealed}, false},
	}
	for name, tc := range tests {
		if got := mayEnroll(tc.bmc); got != tc.want {
			t.Errorf("%s: mayEnroll = %t, want %t", name, got, tc.want)
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
