package apiserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/google/go-cmp/cmp"
	googleuuid "github.com/google/uuid"
	"google.golang.org/protobuf/testing/protocmp"
)

// googleUUID parses an id the API returned.
func googleUUID(t *testing.T, s string) googleuuid.UUID {
	t.Helper()
	id, err := googleuuid.Parse(s)
	if err != nil {
		t.Fatalf("id %q: %v", s, err)
	}
	return id
}

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

// booted is a machine that got an address from DHCP, started a boot as
// carbide-pxe does when it serves the iPXE script, and exchanged the
// boot's nonce for its agent configuration.
type booted struct {
	mac, address, segment string
	nonce                 string
	config                *bootv1.GetBootConfigResponse
}

// bootMachine leases mac an address on the "local" segment of
// dhcpSegments, starts a boot from that address and, when the machine
// boots discovery, asks for its agent token with the boot's nonce.
func bootMachine(t *testing.T, e *env, mac string) booted {
	t.Helper()
	l := dhcpLease(t, e.as(t, "dhcp"), &dhcpv1.LeaseRequest{Mac: mac, Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"}})
	b := booted{mac: mac, address: l.GetAddress(), segment: l.GetOptions().GetSegmentId()}
	b.config, b.nonce = startBoot(t, e, mac, b.address)
	if b.nonce == "" {
		return b
	}
	b.config = redeem(t, e, mac, b.address, b.nonce)
	return b
}

// startBoot asks, as the PXE daemon serving the iPXE script, to start a
// boot of mac from addr; it returns the configuration and the nonce.
func startBoot(t *testing.T, e *env, mac, addr string) (*bootv1.GetBootConfigResponse, string) {
	t.Helper()
	resp, err := e.as(t, "pxe").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: mac, ClientAddress: addr, StartBoot: true,
	}))
	if err != nil {
		t.Fatalf("start a boot of %s: %v", mac, err)
	}
	return resp.Msg, resp.Msg.GetBootNonce()
}

// redeem asks, as the PXE daemon serving the agent configuration, for the
// agent token of mac's boot with nonce, from addr.
func redeem(t *testing.T, e *env, mac, addr, nonce string) *bootv1.GetBootConfigResponse {
	t.Helper()
	resp, err := e.as(t, "pxe").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: mac, ClientAddress: addr, BootNonce: nonce,
	}))
	if err != nil {
		t.Fatalf("redeem the boot nonce of %s: %v", mac, err)
	}
	return resp.Msg
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

// TestAgentTokenGoesToTheLeaseHolderOnly checks that the PXE daemon can
// start a boot and get an agent token only for the address that holds the
// MAC's lease, and a token only with the current boot's nonce, once.
func TestAgentTokenGoesToTheLeaseHolderOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "postgres", "grpc")
	dhcpSegments(t, e)
	b := bootMachine(t, e, "52:54:00:b0:00:02")
	if b.config.GetAgentToken() == "" {
		t.Fatalf("the lease holder got no token: %v", b.config)
	}
	pxe := e.as(t, "pxe")
	for name, addr := range map[string]string{"another address": "10.1.0.250", "no address": ""} {
		for what, req := range map[string]*bootv1.GetBootConfigRequest{
			"start a boot": {Mac: b.mac, ClientAddress: addr, StartBoot: true},
			"redeem":       {Mac: b.mac, ClientAddress: addr, BootNonce: b.nonce},
		} {
			resp, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatalf("%s, %s: %v", name, what, err)
			}
			if resp.Msg.GetAgentToken() != "" || resp.Msg.GetBootNonce() != "" || resp.Msg.GetTokenWithheldReason() == "" ||
				resp.Msg.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY {
				t.Errorf("%s, %s: got %v, want discovery without a nonce or token, and a reason", name, what, resp.Msg)
			}
		}
	}
	// A nonce buys one token.
	again := redeem(t, e, b.mac, b.address, b.nonce)
	if again.GetAgentToken() != "" || !strings.Contains(again.GetTokenWithheldReason(), "used already") {
		t.Errorf("a used nonce: %v", again)
	}
	// Only the current boot's nonce does.
	_, first := startBoot(t, e, b.mac, b.address)
	_, second := startBoot(t, e, b.mac, b.address)
	if first == "" || second == "" || first == second {
		t.Fatalf("nonces %q and %q: want two distinct ones", first, second)
	}
	if r := redeem(t, e, b.mac, b.address, first); r.GetAgentToken() != "" {
		t.Errorf("the nonce of a superseded boot bought a token")
	}
	// Plain reads start nothing and issue nothing.
	plain, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, ClientAddress: b.address}))
	if err != nil || plain.Msg.GetAgentToken() != "" || plain.Msg.GetBootNonce() != "" {
		t.Errorf("a plain read: %v, %v", plain, err)
	}

	expireLease(t, e, b.segment, b.mac, time.Now().Add(-time.Minute))
	resp, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, ClientAddress: b.address, BootNonce: second}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetAgentToken() != "" || !strings.Contains(resp.Msg.GetTokenWithheldReason(), "does not hold a lease") {
		t.Errorf("after the lease expired: %v", resp.Msg)
	}

	// Four requests from the wrong address, then one after the lease
	// expired; a used nonce and a superseded one.
	wantMetrics(t, e, `carbide_boot_withheld_total{reason="no_lease"} 5`, `carbide_boot_withheld_total{reason="nonce"} 2`)

	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: "52:54:00:ff:ff:ff", ClientAddress: b.address}))
	wantError(t, err, connect.CodeNotFound, "52:54:00:ff:ff:ff")
	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: "nonsense"}))
	wantError(t, err, connect.CodeInvalidArgument, "mac")
	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, BootNonce: "short"}))
	wantError(t, err, connect.CodeInvalidArgument, "boot_nonce")
	_, err = pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, StartBoot: true, BootNonce: second}))
	wantError(t, err, connect.CodeInvalidArgument, "start_boot or boot_nonce")
	_, err = e.as(t, "dhcp").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac}))
	wantError(t, err, connect.CodePermissionDenied, "")
}

// TestAdminGetsNoAgentToken (issue 11, finding 2): an admin may read how a
// machine boots, but naming the machine's leased address gets it no agent
// token, and it can neither start a boot nor redeem a nonce: only the pxe
// role mints tokens.
func TestAdminGetsNoAgentToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "connect")
	dhcpSegments(t, e)
	l := dhcpLease(t, e.as(t, "dhcp"), &dhcpv1.LeaseRequest{Mac: "52:54:00:b0:00:0a", Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"}})
	admin := e.as(t, "admin")
	resp, err := admin.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: "52:54:00:b0:00:0a", ClientAddress: l.GetAddress(),
	}))
	if err != nil {
		t.Fatalf("an admin reads the boot configuration: %v", err)
	}
	if resp.Msg.GetAgentToken() != "" || resp.Msg.GetMachineId() == "" || resp.Msg.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY {
		t.Errorf("an admin naming the leased address got %v; want the configuration without a token", resp.Msg)
	}
	_, err = admin.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: "52:54:00:b0:00:0a", ClientAddress: l.GetAddress(), StartBoot: true,
	}))
	wantError(t, err, connect.CodePermissionDenied, "only the PXE daemon")
	_, nonce := startBoot(t, e, "52:54:00:b0:00:0a", l.GetAddress())
	_, err = admin.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
		Mac: "52:54:00:b0:00:0a", ClientAddress: l.GetAddress(), BootNonce: nonce,
	}))
	wantError(t, err, connect.CodePermissionDenied, "only the PXE daemon")
	// The refused attempt did not use the nonce up.
	if tok := redeem(t, e, "52:54:00:b0:00:0a", l.GetAddress(), nonce).GetAgentToken(); tok == "" {
		t.Error("the PXE daemon got no token after an admin's refused attempt")
	}
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

// report sends inventory inv for b's machine with token tok.
func report(t *testing.T, e *env, tok, machineID string, inv *machinev1.Inventory) (*agentv1.ReportInventoryResponse, error) {
	t.Helper()
	resp, err := agentClients(t, e, tok).Agent.ReportInventory(t.Context(),
		connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: machineID, Inventory: inv}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// listConflicts returns the held reports, as an admin sees them.
func listConflicts(t *testing.T, e *env) []*machinev1.IdentityConflict {
	t.Helper()
	resp, err := e.as(t, "admin").Machines.ListIdentityConflicts(t.Context(), connect.NewRequest(&machinev1.ListIdentityConflictsRequest{}))
	if err != nil {
		t.Fatalf("ListIdentityConflicts: %v", err)
	}
	return resp.Msg.GetConflicts()
}

// TestIdentityTakeoverIsHeld (issue 11, finding 1): a host that got a
// lease of its own and reports the SMBIOS UUID of a Ready machine gets no
// token for it and changes nothing of it; its report is held as a
// conflict, listed for an admin, and an admin's rejection fails the
// intruding record. Its own token keeps speaking for its own record only.
func TestIdentityTakeoverIsHeld(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		const uuid = "5b2c6d1e-0000-4000-8000-0000000000c1"
		victim := bootMachine(t, e, "52:54:00:b0:03:01")
		if _, err := report(t, e, victim.config.GetAgentToken(), victim.config.GetMachineId(), fullInventory(uuid)); err != nil {
			t.Fatal(err)
		}
		before := getMachine(t, e, victim.config.GetMachineId())
		if before.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
			t.Fatalf("the victim is %s, want Ready", before.GetState())
		}

		intruder := bootMachine(t, e, "52:54:00:b0:03:02")
		forged := fullInventory(uuid)
		forged.MemoryBytes = 1 << 30
		forged.Nics = []*machinev1.NIC{{Mac: intruder.mac, Driver: "e1000"}}
		resp, err := report(t, e, intruder.config.GetAgentToken(), intruder.config.GetMachineId(), forged)
		if err != nil {
			t.Fatalf("the intruder's report: %v", err)
		}
		if got := resp.GetMachine().GetId(); got != intruder.config.GetMachineId() {
			t.Fatalf("the intruder's report answered for machine %s, want its own %s", got, intruder.config.GetMachineId())
		}
		if resp.GetInstruction().GetAction() != agentv1.Instruction_ACTION_WAIT || !strings.Contains(resp.GetInstruction().GetReason(), "held") {
			t.Errorf("instruction %v, want to wait for an operator", resp.GetInstruction())
		}
		// Its renewed token still speaks for its own record only.
		_, err = agentClients(t, e, resp.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: victim.config.GetMachineId()}))
		wantError(t, err, connect.CodePermissionDenied, "")
		_, err = report(t, e, resp.GetAgentToken(), victim.config.GetMachineId(), forged)
		wantError(t, err, connect.CodePermissionDenied, "")

		after := getMachine(t, e, victim.config.GetMachineId())
		if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
			t.Errorf("the victim changed (-before +after):\n%s", diff)
		}
		if m := getMachine(t, e, intruder.config.GetMachineId()); m.GetHardwareId() != "" || m.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED {
			t.Errorf("the intruder's record took the hardware id or moved on: %v", m)
		}

		wantMetrics(t, e, "carbide_identity_conflicts_held_total 1")
		cs := listConflicts(t, e)
		if len(cs) != 1 || cs[0].GetMachineId() != intruder.config.GetMachineId() || cs[0].GetKnownMachineId() != victim.config.GetMachineId() ||
			cs[0].GetHardwareId() != "uuid:"+uuid || cs[0].GetInventory().GetMemoryBytes() != 1<<30 ||
			!strings.Contains(cs[0].GetReportedBy(), intruder.config.GetMachineId()) {
			t.Fatalf("held reports = %v", cs)
		}
		_, err = e.as(t, "operator").Machines.ResolveIdentityConflict(t.Context(), connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
			MachineId: intruder.config.GetMachineId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_MERGE,
		}))
		wantError(t, err, connect.CodePermissionDenied, "")
		rejected, err := e.as(t, "admin").Machines.ResolveIdentityConflict(t.Context(), connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
			MachineId: intruder.config.GetMachineId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_REJECT,
		}))
		if err != nil {
			t.Fatalf("reject: %v", err)
		}
		if m := rejected.Msg.GetMachine(); m.GetId() != intruder.config.GetMachineId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_FAILED {
			t.Errorf("after the rejection: %v", m)
		}
		if cs := listConflicts(t, e); len(cs) != 0 {
			t.Errorf("held reports after the rejection: %v", cs)
		}
		if diff := cmp.Diff(before, getMachine(t, e, victim.config.GetMachineId()), protocmp.Transform()); diff != "" {
			t.Errorf("the rejection changed the victim (-before +after):\n%s", diff)
		}
		_, err = e.as(t, "admin").Machines.ResolveIdentityConflict(t.Context(), connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
			MachineId: intruder.config.GetMachineId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_REJECT,
		}))
		wantError(t, err, connect.CodeNotFound, "no held report")
	})
}

// TestSameHardwareOnAnotherNIC boots one box twice, from two NICs: the
// second enrolment names the hardware of a Ready machine, so it is held
// until an admin merges it; the first machine then keeps its state and
// gains the interface. A box whose known record is still only discovered,
// with no leased interface, is merged at once, and its agent is handed a
// token for that record, of the same boot.
func TestSameHardwareOnAnotherNIC(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		const uuid = "5b2c6d1e-0000-4000-8000-0000000000aa"
		first := bootMachine(t, e, "52:54:00:b0:01:01")
		r1, err := report(t, e, first.config.GetAgentToken(), first.config.GetMachineId(), fullInventory(uuid))
		if err != nil {
			t.Fatal(err)
		}
		second := bootMachine(t, e, "52:54:00:b0:01:02")
		if second.config.GetMachineId() == first.config.GetMachineId() {
			t.Fatal("a new NIC was enrolled as the known machine before any report")
		}
		r2, err := report(t, e, second.config.GetAgentToken(), second.config.GetMachineId(), fullInventory(uuid))
		if err != nil {
			t.Fatalf("report from the second NIC: %v", err)
		}
		if r2.GetMachine().GetId() != second.config.GetMachineId() || len(listConflicts(t, e)) != 1 {
			t.Fatalf("the report naming a Ready machine's hardware was not held: %v", r2.GetMachine())
		}
		merged, err := e.as(t, "admin").Machines.ResolveIdentityConflict(t.Context(), connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
			MachineId: second.config.GetMachineId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_MERGE,
		}))
		if err != nil {
			t.Fatalf("merge: %v", err)
		}
		m := merged.Msg.GetMachine()
		if m.GetId() != r1.GetMachine().GetId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_READY || len(m.GetInterfaces()) != 2 {
			t.Errorf("after the merge: %v", m)
		}
		_, err = e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: second.config.GetMachineId()}))
		wantError(t, err, connect.CodeNotFound, second.config.GetMachineId())
		list, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{HardwareId: "uuid:" + uuid}))
		if err != nil || len(list.Msg.GetMachines()) != 1 || list.Msg.GetMachines()[0].GetId() != m.GetId() {
			t.Errorf("list by hardware id = %v, %v", list, err)
		}

		// A record that is only discovered, with no leased interface (the
		// box was re-enrolled on another port), is merged at once.
		if err := e.Store.Client.Machine.UpdateOneID(googleUUID(t, m.GetId())).SetState("discovered").Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, mac := range []string{first.mac, second.mac} {
			expireLease(t, e, first.segment, mac, time.Now().Add(-time.Minute))
		}
		third := bootMachine(t, e, "52:54:00:b0:01:03")
		r3, err := report(t, e, third.config.GetAgentToken(), third.config.GetMachineId(), fullInventory(uuid))
		if err != nil {
			t.Fatalf("report from the third NIC: %v", err)
		}
		if r3.GetMachine().GetId() != m.GetId() || len(r3.GetMachine().GetInterfaces()) != 3 || r3.GetAgentToken() == "" {
			t.Fatalf("after the third report: %v, token %t", r3.GetMachine(), r3.GetAgentToken() != "")
		}
		// The old token speaks for the deleted machine only; the new one
		// for the machine the box is, in the same boot.
		_, err = agentClients(t, e, third.config.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: m.GetId()}))
		wantError(t, err, connect.CodePermissionDenied, "")
		if _, err := agentClients(t, e, r3.GetAgentToken()).Agent.GetInstruction(t.Context(),
			connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: m.GetId()})); err != nil {
			t.Errorf("GetInstruction with the new token: %v", err)
		}
		if !r3.GetAgentTokenExpireTime().AsTime().Equal(third.config.GetAgentTokenExpireTime().AsTime()) {
			t.Errorf("the renewed token expires at %s, the boot's at %s", r3.GetAgentTokenExpireTime().AsTime(), third.config.GetAgentTokenExpireTime().AsTime())
		}
	})
}

// TestAgentTokensEndWithTheirBoot checks that an agent token is bound to
// the boot it was issued for: renewing it never moves its expiry past the
// boot's, and once the machine boots again the old boot's tokens, renewed
// or not, are refused.
func TestAgentTokensEndWithTheirBoot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "postgres", "connect")
	dhcpSegments(t, e)
	b := bootMachine(t, e, "52:54:00:b0:04:01")
	inv := fullInventory("")
	inv.Disks = nil // failed, so that it boots discovery again
	r, err := report(t, e, b.config.GetAgentToken(), b.config.GetMachineId(), inv)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetAgentTokenExpireTime().AsTime().Equal(b.config.GetAgentTokenExpireTime().AsTime()) {
		t.Errorf("renewal moved the expiry from %s to %s", b.config.GetAgentTokenExpireTime().AsTime(), r.GetAgentTokenExpireTime().AsTime())
	}
	next := bootMachine(t, e, b.mac)
	if next.config.GetAgentToken() == "" {
		t.Fatalf("the next boot got no token: %v", next.config)
	}
	for name, tok := range map[string]string{"first": b.config.GetAgentToken(), "renewed": r.GetAgentToken()} {
		t.Run(name, func(t *testing.T) {
			_, err := agentClients(t, e, tok).Agent.GetInstruction(t.Context(),
				connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: b.config.GetMachineId()}))
			wantError(t, err, connect.CodeUnauthenticated, "earlier boot")
			_, err = report(t, e, tok, b.config.GetMachineId(), inv)
			wantError(t, err, connect.CodeUnauthenticated, "earlier boot")
		})
	}
	if _, err := agentClients(t, e, next.config.GetAgentToken()).Agent.GetInstruction(t.Context(),
		connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: b.config.GetMachineId()})); err != nil {
		t.Errorf("the current boot's token: %v", err)
	}
	wantMetrics(t, e, "carbide_agent_tokens_superseded_total 4")
}

// TestBootConfigReadsAreNotAudited checks that a GetBootConfig that starts
// no boot and issues no token writes no audit record, and one that does
// writes one.
func TestBootConfigReadsAreNotAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "grpc")
	dhcpSegments(t, e)
	b := bootMachine(t, e, "52:54:00:b0:05:01")
	for range 3 {
		if _, err := e.as(t, "pxe").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: b.mac, ClientAddress: b.address})); err != nil {
			t.Fatal(err)
		}
	}
	rs := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{Procedure: bootv1connect.BootServiceGetBootConfigProcedure})
	if len(rs) != 2 {
		t.Errorf("%d audit records of GetBootConfig, want 2 (the boot started, the token issued): %v", len(rs), rs)
	}
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
