package lifecycle

import (
	"testing"

	"github.com/carbide-dev/carbide/ent/machine"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		from, to machine.State
		want     bool
	}{
		"discovered to inventoried":  {machine.StateDiscovered, machine.StateInventoried, true},
		"inventoried to ready":       {machine.StateInventoried, machine.StateReady, true},
		"ready to provisioning":      {machine.StateReady, machine.StateProvisioning, true},
		"provisioning to assigned":   {machine.StateProvisioning, machine.StateAssigned, true},
		"assigned to cleaning":       {machine.StateAssigned, machine.StateCleaning, true},
		"provisioning to cleaning":   {machine.StateProvisioning, machine.StateCleaning, true},
		"cleaning to ready":          {machine.StateCleaning, machine.StateReady, true},
		"any to failed":              {machine.StateAssigned, machine.StateFailed, true},
		"any to maintenance":         {machine.StateProvisioning, machine.StateMaintenance, true},
		"maintenance back to ready":  {machine.StateMaintenance, machine.StateReady, true},
		"failed retried":             {machine.StateFailed, machine.StateDiscovered, true},
		"operator retry":             {machine.StateFailed, RetryState, true},
		"discovered skips to ready":  {machine.StateDiscovered, machine.StateReady, false},
		"assigned back to ready":     {machine.StateAssigned, machine.StateReady, false},
		"ready to assigned":          {machine.StateReady, machine.StateAssigned, false},
		"failed to assigned":         {machine.StateFailed, machine.StateAssigned, false},
		"self transition":            {machine.StateReady, machine.StateReady, false},
		"maintenance to maintenance": {machine.StateMaintenance, machine.StateMaintenance, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := Allowed(tc.from, tc.to); got != tc.want {
				t.Errorf("Allowed(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.want)
			}
		})
	}
}
