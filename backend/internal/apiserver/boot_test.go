package apiserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// fullInventory is the inventory of a machine that passes the hardware
// checks, with the given system UUID ("" for none).
func fullInventory(uuid string) *machinev1.Inventory {
	return &machinev1.Inventory{
		System:      &machinev1.SystemInfo{Manufacturer: "QEMU", Product: "Standard PC", Uuid: uuid},
		Cpu:         &machinev1.CPUInfo{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2},
		MemoryBytes: 8 << 30,
		Disks:       []*machinev1.Disk{{Name: "vda", Serial: "disk-1", SizeBytes: 64 << 30}},
		Nics:        []*machinev1.NIC{{Mac: "52:54:00:00:00:01", Driver: "virtio_net", LinkUp: true}},
	}
}

// booted is a machine that got an address from DHCP and its boot
// configuration from the API, as the PXE daemon asks for it.
type booted struct {
	mac, address, segment string
	config                *bootv1.GetBootConfigResponse
}

// bootMachine leases mac an address on the "local" segment of
// dhcpSegments and asks for its boot configuration from that address.
func bootMachine(t *testing.T, e *env, mac string) booted {
	t.Helper()
	l := dhcpLease(t, e.as(t, "dhcp"), &dhcpv1.LeaseRequest{Mac: mac, Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"}})
	resp, err := e.as(t, "pxe").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: mac, ClientAddress: l.GetAddress(),
	}))
	if err != nil {
		t.Fatalf("GetBootConfig(%s): %v", mac, err)
	}
	return booted{mac: mac, address: l.GetAddress(), segment: l.GetOptions().GetSegmentId(), config: resp.Msg}
}

// agentClients returns clients that authenticate with an agent token.
func agentClients(t *testing.T, e *env, token string) clients {
	t.Helper()
	testsecret.Register(t, token)
	return e.clientsOver(e.httpClient(t, ""), connect.WithInterceptors(bearer(token)))
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}
func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestDiscoveryToReady walks a machine from its first DHCP request to
// Ready: the PXE daemon's boot configuration carries an agent token, the
// agent reports with it, the hardware checks pass, and the machine then
// boots from disk.
func TestDiscoveryToReady(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		b := bootMachine(t, e, "52:54:00:b0:00:01")
		cfg := b.config
		if cfg.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY || cfg.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED ||
			cfg.GetAgentToken() == "" || cfg.GetTokenWithheldReason() != "" {
			t.Fatalf("boot config of a new machine = %v", cfg)
		}
		if exp := cfg.GetAgentTokenExpireTime().AsTime(); exp.Before(time.Now().Add(50*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
			t.Errorf("token expires at %s, want in about an hour", exp)
		}

		agent := agentClients(t, e, cfg.GetAgentToken())
		resp, err := agent.Agent.ReportInventory(t.Context(), connect.NewRequest(&agentv1.ReportInventoryRequest{
			MachineId: cfg.GetMachineId(), Inventory: fullInventory("5b2c6d1e-0000-4000-8000-000000000001"),
		}))
		if err != nil {
			t.Fatalf("report with the agent token: %v", err)
		}
		m := resp.Msg.GetMachine()
		if m.GetId() != cfg.GetMachineId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_READY ||
			m.GetHardwareId() != "uuid:5b2c6d1e-0000-4000-8000-000000000001" {
			t.Errorf("machine after the report = %v", m)
		}
		if resp.Msg.GetAgentToken() == "" || resp.Msg.GetInstruction().GetAction() != agentv1.Instruction_ACTION_POWER_OFF {
			t.Errorf("report response: token %t, instruction %v", resp.Msg.GetAgentToken() != "", resp.Msg.GetInstruction())
		}
		in, err := agentClients(t, e, resp.Msg.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: m.GetId()}))
		if err != nil || in.Msg.GetInstruction().GetAction() != agentv1.Instruction_ACTION_POWER_OFF {
			t.Errorf("GetInstruction = %v, %v; want power off", in, err)
		}

		hist, err := e.Machines.ListMachineTransitions(t.Context(), connect.NewRequest(&machinev1.ListMachineTransitionsRequest{MachineId: m.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, tr := range hist.Msg.GetTransitions() {
			states = append(states, strings.TrimPrefix(tr.GetToState().String(), "MACHINE_STATE_"))
		}
		if want := []string{"DISCOVERED", "INVENTORIED", "READY"}; !slices.Equal(states, want) {
			t.Errorf("history %v, want %v", states, want)
		}
		if r := hist.Msg.GetTransitions()[1].GetReason(); !strings.Contains(r, "2 CPUs, 8.0 GiB memory, 1 disks (64.0 GiB), 1 NICs") {
			t.Errorf("inventoried reason %q does not summarise the hardware", r)
		}

		again := bootMachine(t, e, b.mac).config
		if again.GetAction() != bootv1.BootAction_BOOT_ACTION_LOCAL_DISK || again.GetAgentToken() != "" {
			t.Errorf("boot config of a ready machine = %v", again)
		}
	})
}

// TestAgentTokenGoesToTheLeaseHolderOnly checks that the PXE daemon gets
// an agent token only for the address that holds the MAC's lease.
func TestAgentTokenGoesToTheLeaseHolderOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "postgres", "grpc")
	dhcpSegments(t, e)
	b := bootMachine(t, e, "52:54:00:b0:00:02")
	pxe := e.as(t, "pxe")
	for name, addr := range map[string]string{"another address": "10.1.0.250", "no address": ""} {
		resp, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, ClientAddress: addr}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resp.Msg.GetAgentToken() != "" || resp.Msg.GetTokenWithheldReason() == "" ||
			resp.Msg.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY {
			t.Errorf("%s: got %v, want discovery without a token and a reason", name, resp.Msg)
		}
	}
	expireLease(t, e, b.segment, b.mac, time.Now().Add(-time.Minute))
	resp, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, ClientAddress: b.address}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetAgentToken() != "" || !strings.Contains(resp.Msg.GetTokenWithheldReason(), "does not hold a lease") {
		t.Errorf("after the lease expired: %v", resp.Msg)
	}

	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: "52:54:00:ff:ff:ff", ClientAddress: b.address}))
	wantError(t, err, connect.CodeNotFound, "52:54:00:ff:ff:ff")
	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: "nonsense"}))
	wantError(t, err, connect.CodeInvalidArgument, "mac")
	_, err = e.as(t, "dhcp").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac}))
	wantError(t, err, connect.CodePermissionDenied, "")
}

// TestHardwareChecksFail checks that a machine without a disk fails, with
// the reason in its history and in the agent's instruction.
func TestHardwareChecksFail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "connect")
	dhcpSegments(t, e)
	b := bootMachine(t, e, "52:54:00:b0:00:03")
	inv := fullInventory("")
	inv.Disks = nil
	resp, err := agentClients(t, e, b.config.GetAgentToken()).Agent.ReportInventory(t.Context(),
		connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: b.config.GetMachineId(), Inventory: inv}))
	if err != nil {
		t.Fatal(err)
	}
	in := resp.Msg.GetInstruction()
	if resp.Msg.GetMachine().GetState() != machinev1.MachineState_MACHINE_STATE_FAILED ||
		in.GetAction() != agentv1.Instruction_ACTION_POWER_OFF || !strings.Contains(in.GetReason(), "no disk") {
		t.Errorf("state %s, instruction %v", resp.Msg.GetMachine().GetState(), in)
	}
	if resp.Msg.GetMachine().GetHardwareId() != "" {
		t.Errorf("hardware id %q from an inventory without UUID or serial", resp.Msg.GetMachine().GetHardwareId())
	}
}

// TestSameHardwareOnAnotherNIC boots one box twice, from two NICs: the
// second enrolment folds into the first machine, which keeps its state and
// gains the interface, and the agent is handed a token for it.
func TestSameHardwareOnAnotherNIC(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		const uuid = "5b2c6d1e-0000-4000-8000-0000000000aa"
		first := bootMachine(t, e, "52:54:00:b0:01:01")
		r1, err := agentClients(t, e, first.config.GetAgentToken()).Agent.ReportInventory(t.Context(),
			connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: first.config.GetMachineId(), Inventory: fullInventory(uuid)}))
		if err != nil {
			t.Fatal(err)
		}
		second := bootMachine(t, e, "52:54:00:b0:01:02")
		if second.config.GetMachineId() == first.config.GetMachineId() {
			t.Fatal("a new NIC was enrolled as the known machine before any report")
		}
		r2, err := agentClients(t, e, second.config.GetAgentToken()).Agent.ReportInventory(t.Context(),
			connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: second.config.GetMachineId(), Inventory: fullInventory(uuid)}))
		if err != nil {
			t.Fatalf("report from the second NIC: %v", err)
		}
		m := r2.Msg.GetMachine()
		if m.GetId() != r1.Msg.GetMachine().GetId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_READY || len(m.GetInterfaces()) != 2 {
			t.Errorf("after the second report: %v", m)
		}
		_, err = e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: second.config.GetMachineId()}))
		wantError(t, err, connect.CodeNotFound, second.config.GetMachineId())
		list, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{HardwareId: "uuid:" + uuid}))
		if err != nil || len(list.Msg.GetMachines()) != 1 || list.Msg.GetMachines()[0].GetId() != m.GetId() {
			t.Errorf("list by hardware id = %v, %v", list, err)
		}
		// The old token speaks for the deleted machine only; the new one
		// for the machine the box is.
		_, err = agentClients(t, e, second.config.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: m.GetId()}))
		wantError(t, err, connect.CodePermissionDenied, "")
		if _, err := agentClients(t, e, r2.Msg.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: m.GetId()})); err != nil {
			t.Errorf("GetInstruction with the new token: %v", err)
		}
	})
}

// TestConflictingHardwareIsNotMerged checks that a machine that already
// has one hardware identity is not folded into another's.
func TestConflictingHardwareIsNotMerged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "postgres", "grpc")
	dhcpSegments(t, e)
	a := bootMachine(t, e, "52:54:00:b0:02:01")
	b := bootMachine(t, e, "52:54:00:b0:02:02")
	report := func(bt booted, uuid string) error {
		_, err := agentClients(t, e, bt.config.GetAgentToken()).Agent.ReportInventory(t.Context(),
			connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: bt.config.GetMachineId(), Inventory: fullInventory(uuid)}))
		return err
	}
	if err := report(a, "5b2c6d1e-0000-4000-8000-0000000000a1"); err != nil {
		t.Fatal(err)
	}
	if err := report(b, "5b2c6d1e-0000-4000-8000-0000000000b1"); err != nil {
		t.Fatal(err)
	}
	err := report(b, "5b2c6d1e-0000-4000-8000-0000000000a1")
	wantError(t, err, connect.CodeFailedPrecondition, a.config.GetMachineId())
	if getMachine(t, e, b.config.GetMachineId()).GetHardwareId() != "uuid:5b2c6d1e-0000-4000-8000-0000000000b1" {
		t.Error("the refused report changed the machine")
	}
}
