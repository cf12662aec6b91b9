package agent

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMalformedMachineID (issue 11, finding 10) calls the handlers as if
// validation had not run: a machine_id that is not a UUID is an
// InvalidArgument naming the field, never a panic.
func TestMalformedMachineID(t *testing.T) {
	t.Parallel()
	s := NewService(nil, nil, nil, nil, nil, prometheus.NewRegistry())
	calls := map[string]func() error{
		"ReportInventory": func() error {
			_, err := s.ReportInventory(t.Context(), connect.NewRequest(&agentv1.ReportInventoryRequest{
				MachineId: "not-a-uuid", Inventory: &machinev1.Inventory{}}))
			return err
		},
		"EnrollBMC": func() error {
			_, err := s.EnrollBMC(t.Context(), connect.NewRequest(&agentv1.EnrollBMCRequest{MachineId: "not-a-uuid"}))
			return err
		},
		"GetInstruction": func() error {
			_, err := s.GetInstruction(t.Context(), connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: "not-a-uuid"}))
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := call()
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "machine_id") {
				t.Errorf("got %v, want invalid_argument naming machine_id", err)
			}
		})
	}
}
