package apiserver

import (
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/machine"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// TestRetryMachine fails a machine the way discovery does (its agent
// reports no disk), has an operator retry it with a reason, and checks
// that it runs discovery and the hardware checks again and becomes ready.
func TestRetryMachine(t *testing.T) {
	t.Parallel()
	const (
		unspecified = machinev1.MachineState_MACHINE_STATE_UNSPECIFIED
		discovered  = machinev1.MachineState_MACHINE_STATE_DISCOVERED
		inventoried = machinev1.MachineState_MACHINE_STATE_INVENTORIED
		ready       = machinev1.MachineState_MACHINE_STATE_READY
		failed      = machinev1.MachineState_MACHINE_STATE_FAILED
		reason      = "replaced the missing disk"
	)
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		operator := e.as(t, "operator")
		retry := func(c clients, id, reason string) (*machinev1.Machine, error) {
			resp, err := c.Machines.RetryMachine(t.Context(), connect.NewRequest(&machinev1.RetryMachineRequest{Id: id, Reason: reason}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetMachine(), nil
		}

		cfg := bootMachine(t, e, "52:54:00:b1:00:01").config
		id := cfg.GetMachineId()
		inv := fullInventory("5b2c6d1e-0000-4000-8000-0000000000b1")
		inv.Disks = nil
		report, err := agentClients(t, e, cfg.GetAgentToken()).Agent.ReportInventory(t.Context(),
			connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: id, Inventory: inv}))
		if err != nil {
			t.Fatalf("ReportInventory: %v", err)
		}
		if st := report.Msg.GetMachine().GetState(); st != failed {
			t.Fatalf("a machine without disks is %s, want FAILED", st)
		}

		// Neither a missing reason nor a viewer gets anywhere.
		_, err = retry(operator, id, "")
		wantError(t, err, connect.CodeInvalidArgument, "reason")
		_, err = retry(operator, id, " \t")
		wantError(t, err, connect.CodeInvalidArgument, "reason")
		_, err = retry(e.as(t, "viewer"), id, reason)
		wantError(t, err, connect.CodePermissionDenied, "RetryMachine")
		_, err = retry(operator, "machine-1", reason)
		wantError(t, err, connect.CodeInvalidArgument, "id")
		unknown := uuid.NewString()
		_, err = retry(operator, unknown, reason)
		wantError(t, err, connect.CodeNotFound, unknown)
		if st := getMachine(t, e, id).GetState(); st != failed {
			t.Fatalf("after refused retries the machine is %s, want still FAILED", st)
		}

		m, err := retry(operator, id, reason)
		if err != nil {
			t.Fatalf("RetryMachine: %v", err)
		}
		if m.GetState() != discovered || m.GetId() != id {
			t.Fatalf("retried machine = %v, want it DISCOVERED", m)
		}
		hist := transitionsOf(t, e, id, 0)
		last := hist[len(hist)-1]
		operatorID := userID(principal.RoleOperator)
		if last.GetFromState() != failed || last.GetToState() != discovered ||
			!strings.Contains(last.GetReason(), reason) || last.GetActor() != operatorID {
			t.Errorf("retry transition = %v, want FAILED -> DISCOVERED by %s with reason %q", last, operatorID, reason)
		}
		records := auditRecords(t, e, machinev1connect.MachineServiceRetryMachineProcedure)
		if !slices.ContainsFunc(records, func(r *ent.AuditRecord) bool {
			return r.Principal == operatorID && r.Code == "ok" && slices.Contains(r.ResourceIds, id)
		}) {
			t.Errorf("no successful audit record of the retry by %s on %s among %v", operatorID, id, records)
		}

		// Retrying again, or a machine that never failed, is refused.
		_, err = retry(operator, id, reason)
		wantError(t, err, connect.CodeFailedPrecondition, string(machine.StateDiscovered))
		other := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(0xb102)}})
		moveMachine(t, e, other.GetId(), machine.StateInventoried, machine.StateReady)
		_, err = retry(operator, other.GetId(), reason)
		wantError(t, err, connect.CodeFailedPrecondition, "only a failed machine can be retried")
		setMaintenance(t, e, other.GetId(), true)
		_, err = retry(operator, other.GetId(), reason)
		wantError(t, err, connect.CodeFailedPrecondition, "clear the maintenance hold first")

		// Discovery runs again, and with the disk back the machine is ready.
		again := bootMachine(t, e, "52:54:00:b1:00:01").config
		if again.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY || again.GetAgentToken() == "" {
			t.Fatalf("boot config of the retried machine = %v, want discovery with a token", again)
		}
		report, err = agentClients(t, e, again.GetAgentToken()).Agent.ReportInventory(t.Context(),
			connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: id, Inventory: fullInventory("5b2c6d1e-0000-4000-8000-0000000000b1")}))
		if err != nil {
			t.Fatalf("ReportInventory after the retry: %v", err)
		}
		if st := report.Msg.GetMachine().GetState(); st != ready {
			t.Errorf("after the retry and a full report the machine is %s, want READY", st)
		}
		want := []hop{
			{unspecified, discovered, ""}, {discovered, inventoried, ""}, {inventoried, failed, ""},
			{failed, discovered, operatorID}, {discovered, inventoried, ""}, {inventoried, ready, ""},
		}
		got := hops(transitionsOf(t, e, id, 0))
		for i := range got {
			if want[min(i, len(want)-1)].Actor == "" {
				got[i].Actor = "" // the DHCP and agent identities are not this test's business
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("history (-want +got):\n%s", diff)
		}
	})
}
