package pki_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/google/uuid"
)

// TestAgentTokenBoot checks that an agent token names its boot and never
// outlives it, whatever the TTL.
func TestAgentTokenBoot(t *testing.T) {
	t.Parallel()
	a, _, err := pki.NewAgentTokens(filepath.Join(t.TempDir(), "agent.key"), "", time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}
	machine, boot := uuid.New(), uuid.New()
	now := time.Now()
	tests := map[string]struct {
		limit, want time.Time
	}{
		"the TTL, within the boot": {now.Add(2 * time.Hour), now.Add(time.Hour)},
		"the boot's end":           {now.Add(10 * time.Minute), now.Add(10 * time.Minute)},
	}
	for name, tt := range tests {
		tok, exp, err := a.Issue(machine, boot, now, tt.limit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !exp.Equal(tt.want.Truncate(time.Second)) {
			t.Errorf("%s: expires at %s, want %s", name, exp, tt.want.Truncate(time.Second))
		}
		p, err := a.Verify(tok, now)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.MachineID != machine.String() || p.BootID != boot.String() || !p.Expires.Equal(exp) {
			t.Errorf("%s: principal %+v, want machine %s, boot %s, expiry %s", name, p, machine, boot, exp)
		}
	}
	if _, _, err := a.Issue(machine, boot, now, now.Add(-time.Second)); !errors.Is(err, pki.ErrBootEnded) {
		t.Errorf("a token for a boot that ended: %v, want ErrBootEnded", err)
	}
}
