package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

const (
	e2eBMCPassword = "e2e-BMC-pw-7d1c"
	// e2eSegmentPassword is the default BMC password of a segment.
	e2eSegmentPassword = "e2e-segment-pw-41f0"
)

// TestBMCReplicasShareMachines: two carbide-bmc replicas serve eleven
// machines (nine ipmi_sim BMCs, two Redfish BMCs, without VMs) on one API
// on PostgreSQL; one replica is killed with SIGKILL while it holds leases.
// One of the ipmi_sim BMCs is registered by its address alone: it gets the
// default credentials of the segment that holds its address, which the
// others, with credentials of their own, ignore. Every operation
// succeeds, each action (boot device and power) reaches its BMC once,
// also those the killed replica had sent, no machine ever has two lease
// holders at once (from the API's log of grants and ends), and the
// passwords appear in no log.
func TestBMCReplicasShareMachines(t *testing.T) {
	lookPaths(t, "ipmi_sim", "ipmitool")
	testsecret.Register(t, e2eBMCPassword, e2eSegmentPassword)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbURL := startPostgres(t)
	dataDir := t.TempDir()
	apiProc := startProc(t, nil, "carbide-api", bins.api, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--database-url", dbURL, "--bmc-lease", "3s")
	a := apiFrom(t, apiProc, dataDir)
	// Every BMC of this test listens on loopback: one segment holds
	// them all, with default credentials.
	loopback := a.createSegment(t, &networkv1.Segment{Name: "bmc-loopback", Prefix: "127.0.0.0/8"})
	if _, err := a.client.BMC.SetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.SetSegmentCredentialsRequest{
		SegmentId: loopback.GetId(), Username: "rackadmin", Password: e2eSegmentPassword})); err != nil {
		t.Fatalf("SetSegmentCredentials: %v", err)
	}

	type bmcUnderTest struct {
		machine string
		ipmi    *bmcsim.IPMI
		redfish *bmcsim.Redfish
	}
	var bmcs []*bmcUnderTest
	const byDefault = 10 // the machine whose BMC uses the segment's credentials
	for i := range 11 {
		m, err := a.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
			Macs: []string{fmt.Sprintf("52:54:00:bc:00:%02x", i)}}))
		if err != nil {
			t.Fatal(err)
		}
		b := &bmcUnderTest{machine: m.Msg.GetMachine().GetId()}
		set := &bmcv1.SetBMCRequest{MachineId: b.machine, Username: "admin", Password: e2eBMCPassword}
		if i < 8 || i == byDefault {
			addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
			cfg := bmcsim.IPMIConfig{Addr: addr, Password: e2eBMCPassword, Dir: t.TempDir()}
			if i == byDefault {
				cfg.Username, cfg.Password = "rackadmin", e2eSegmentPassword
				set.Username, set.Password = "", ""
			}
			b.ipmi, err = bmcsim.StartIPMI(ctx, cfg)
			if err != nil {
				t.Fatalf("start ipmi_sim: %v", err)
			}
			t.Cleanup(b.ipmi.Stop)
			set.Address, set.Port, set.Protocol = "127.0.0.1", uint32(addr.Port()), bmcv1.Protocol_PROTOCOL_IPMI
		} else {
			b.redfish, err = bmcsim.StartRedfish(ctx, bmcsim.RedfishConfig{Password: e2eBMCPassword})
			if err != nil {
				t.Fatalf("start the Redfish service: %v", err)
			}
			t.Cleanup(b.redfish.Stop)
			ap := netip.MustParseAddrPort(b.redfish.Addr().String())
			set.Address, set.Port, set.Protocol = "127.0.0.1", uint32(ap.Port()), bmcv1.Protocol_PROTOCOL_REDFISH
		}
		got, err := a.client.BMC.SetBMC(ctx, connect.NewRequest(set))
		if err != nil {
			t.Fatalf("SetBMC: %v", err)
		}
		if want := map[bool]string{true: loopback.GetId()}[i == byDefault]; got.Msg.GetBmc().GetCredentialsSegmentId() != want {
			t.Errorf("machine %d: credentials_segment_id %q, want %q", i, got.Msg.GetBmc().GetCredentialsSegmentId(), want)
		}
		for _, op := range []*bmcv1.RequestOperationRequest{
			{Type: bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, Boot: &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE}},
			{Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON},
			{Type: bmcv1.OperationType_OPERATION_TYPE_POWER_OFF},
		} {
			op.MachineId = b.machine
			if _, err := a.client.BMC.RequestOperation(ctx, connect.NewRequest(op)); err != nil {
				t.Fatalf("RequestOperation: %v", err)
			}
		}
		bmcs = append(bmcs, b)
	}

	// Two more machines whose BMCs cannot be reached: one answers but
	// refuses the password, one does not answer at all. Their operations
	// fail with errors that say so; the daemons keep serving the others.
	badAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	wrong, err := bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{Addr: badAddr, Password: "another-password", Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	t.Cleanup(wrong.Stop)
	bad := map[string]string{} // machine -> what its error must say
	for i, c := range []struct {
		port uint16
		want string
	}{{badAddr.Port(), "refused the credentials"}, {uint16(freeUDPPort(t)), "after 2 attempts: BMC 127.0.0.1"}} {
		m, err := a.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
			Macs: []string{fmt.Sprintf("52:54:00:bc:01:%02x", i)}}))
		if err != nil {
			t.Fatal(err)
		}
		id := m.Msg.GetMachine().GetId()
		if _, err := a.client.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: "127.0.0.1",
			Port: uint32(c.port), Protocol: bmcv1.Protocol_PROTOCOL_IPMI, Username: "admin", Password: e2eBMCPassword})); err != nil {
			t.Fatal(err)
		}
		if _, err := a.client.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON})); err != nil {
			t.Fatal(err)
		}
		bad[id] = c.want
	}

	daemon := func(name string) *proc {
		return startProc(t, nil, "carbide-bmc "+name, bins.bmc, "--pki-dir", a.pki, "--api-url", "https://"+a.addr,
			"--worker", name, "--poll-interval", "1s", "--claim-interval", "100ms", "--metrics-listen", "",
			"--call-timeout", "2s", "--attempts", "2", "--retry-backoff", "200ms", "--log-level", "debug",
			// ipmi_sim keeps a boot override's device, never its valid bit.
			"--ipmi-ignore-boot-valid")
	}
	first := daemon("first")
	granted := regexp.MustCompile(`msg="BMC lease granted".* worker=first`)
	if !waitFor(30*time.Second, func() bool { return granted.MatchString(apiProc.out.String()) }) {
		t.Fatalf("the first daemon was granted no lease:\n%s", tail(first.out.String(), 30))
	}
	second := daemon("second")
	first.signal(t, syscall.SIGKILL)

	done := func() bool {
		resp, err := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 100,
			States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_SUCCEEDED}}))
		return err == nil && len(resp.Msg.GetOperations()) == 3*len(bmcs)
	}
	if !waitFor(2*time.Minute, done) {
		resp, _ := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 100}))
		t.Fatalf("not every operation succeeded: %v\nsecond daemon:\n%s", resp.Msg, tail(second.out.String(), 40))
	}

	// The operations on the unreachable BMCs failed, each with an error
	// that says why, after bounded tries.
	if !waitFor(time.Minute, func() bool {
		resp, err := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 100,
			States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_FAILED}}))
		return err == nil && len(resp.Msg.GetOperations()) == len(bad)
	}) {
		t.Fatal("the operations on the unreachable BMCs did not fail")
	}
	failed, err := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 100,
		States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_FAILED}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range failed.Msg.GetOperations() {
		want, ok := bad[op.GetMachineId()]
		if !ok || !strings.Contains(op.GetError(), want) || strings.Contains(op.GetError(), e2eBMCPassword) {
			t.Errorf("failed operation on machine %s: %q, want an error with %q", op.GetMachineId(), op.GetError(), want)
		}
		t.Logf("failed as expected: %s", op.GetError())
	}

	// Each action reached its BMC once, in order: the boot device, on,
	// off (as the simulators log them); the machines end off, as the
	// daemons saw.
	for i, b := range bmcs {
		var names, want []string
		if b.ipmi != nil {
			acts, err := b.ipmi.Actions()
			if err != nil {
				t.Fatal(err)
			}
			names = bmcsim.Names(acts)
			want = []string{"boot pxe", "power on", "power off"}
		} else {
			names = bmcsim.Names(b.redfish.Actions())
			want = []string{"boot Pxe Once Legacy", "reset On", "reset ForceOff"}
		}
		if strings.Join(names, "\n") != strings.Join(want, "\n") {
			t.Errorf("machine %d: BMC actions %q, want each once: %q", i, names, want)
		}
		if !waitFor(10*time.Second, func() bool {
			g, err := a.client.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: b.machine}))
			return err == nil && g.Msg.GetBmc().GetPowerState() == bmcv1.PowerState_POWER_STATE_OFF
		}) {
			t.Errorf("machine %d: the API never saw it off", i)
		}
	}

	// No two holders at once: a grant to another worker comes after the
	// last holder's lease ended or expired.
	checkLeaseLog(t, apiProc.out.String())

	for _, p := range []*proc{apiProc, first, second} {
		if strings.Contains(p.out.String(), e2eBMCPassword) || strings.Contains(p.out.String(), e2eSegmentPassword) {
			t.Errorf("%s logged a BMC password", p.name)
		}
	}
	// The killed daemon held operations it had started: the second took
	// them over.
	all, err := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 100,
		States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_SUCCEEDED}}))
	if err != nil {
		t.Fatal(err)
	}
	takenOver := 0
	for _, op := range all.Msg.GetOperations() {
		if op.GetAttempts() >= 2 {
			takenOver++
			if op.GetWorker() != "second" {
				t.Errorf("operation %s taken over by %q, want second", op.GetId(), op.GetWorker())
			}
		}
	}
	if takenOver == 0 {
		t.Error("no operation was taken over from the killed daemon")
	}
	t.Logf("%d operations taken over from the killed daemon", takenOver)
}

var leaseLine = regexp.MustCompile(`msg="BMC lease (granted|ended)" machine=(\S+) worker=(\S+) token=(\d+) at=(\S+)(?: until=(\S+))?`)

// checkLeaseLog checks the API's log of lease grants and ends: each
// machine's holders never overlap.
func checkLeaseLog(t *testing.T, log string) {
	t.Helper()
	type holder struct {
		worker string
		until  time.Time
	}
	last := map[string]*holder{}
	grants := 0
	for _, m := range leaseLine.FindAllStringSubmatch(log, -1) {
		at, err := time.Parse(time.RFC3339Nano, m[5])
		if err != nil {
			t.Fatalf("lease log time %q: %v", m[5], err)
		}
		machine, worker := m[2], m[3]
		switch m[1] {
		case "granted":
			grants++
			until, err := time.Parse(time.RFC3339Nano, m[6])
			if err != nil {
				t.Fatalf("lease log until %q: %v", m[6], err)
			}
			if h := last[machine]; h != nil && h.worker != worker && at.Before(h.until) {
				t.Errorf("machine %s granted to %s at %s while %s held it until %s", machine, worker, at, h.worker, h.until)
			}
			last[machine] = &holder{worker: worker, until: until}
		case "ended":
			if h := last[machine]; h != nil && h.worker == worker {
				h.until = at
			}
		}
	}
	if grants < 10 {
		t.Errorf("%d lease grants in the API's log, want at least one per machine", grants)
	}
	var ms []string
	for m := range last {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	t.Logf("%d lease grants over %d machines", grants, len(ms))
}

// TestBMCBootsAMachine: for each protocol, a VM whose BMC is simulated
// (ipmi_sim over IPMI, the test Redfish service driving QEMU over QMP) is
// registered; Carbide sets its next boot to PXE and powers it on through
// carbide-bmc, it boots through carbide-dhcp and carbide-pxe to Ready (and
// its agent powers it off), Carbide powers it off, and the API follows its
// power state.
func TestBMCBootsAMachine(t *testing.T) {
	requireRoot(t)
	lookPaths(t, "ipmi_sim", "ipmitool")
	testsecret.Register(t, e2eBMCPassword)
	l := newLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	daemon := startProc(t, l.ns, "carbide-bmc", bins.bmc, "--pki-dir", l.pki, "--api-url", "https://"+labAPI,
		"--poll-interval", "1s", "--claim-interval", "200ms", "--metrics-listen", "")
	wrap := func(argv []string) []string { return append([]string{"ip", "netns", "exec", l.ns.name}, argv...) }

	for i, protocol := range []bmcv1.Protocol{bmcv1.Protocol_PROTOCOL_IPMI, bmcv1.Protocol_PROTOCOL_REDFISH} {
		spec := vmSpec{name: fmt.Sprintf("bmc-%d", i), mac: fmt.Sprintf("52:54:00:cb:00:2%d", i), serial: fmt.Sprintf("CB-BMC-002%d", i),
			uuid: fmt.Sprintf("6c1d7c1e-0b6e-4b1a-9d7e-00000000002%d", i), cpus: 2, memoryMB: 768, diskMB: 1024, diskID: fmt.Sprintf("CBDISK-BMC%d", i)}
		qemu, console := l.vmCommand(t, spec, false)
		var port uint16
		var actions func() []string
		var vmPid func() int
		if protocol == bmcv1.Protocol_PROTOCOL_IPMI {
			addr := netip.AddrPortFrom(netip.MustParseAddr(labAddr), 6230)
			sim, err := bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{Addr: addr, Password: e2eBMCPassword, Dir: t.TempDir(), QEMU: qemu, Wrap: wrap})
			if err != nil {
				t.Fatalf("start ipmi_sim: %v", err)
			}
			t.Cleanup(sim.Stop)
			port = addr.Port()
			actions = func() []string {
				acts, err := sim.Actions()
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, a := range acts {
					names = append(names, a.Name)
				}
				return names
			}
			vmPid = func() int { pid, _ := sim.VMPid(); return pid }
		} else {
			machine, err := bmcsim.NewQEMUMachine(ctx, bmcsim.QEMUConfig{Command: qemu, Dir: t.TempDir(), Wrap: wrap})
			if err != nil {
				t.Fatal(err)
			}
			var ln net.Listener
			if err := nsenter.Do(l.ns.name, func() (err error) { ln, err = net.Listen("tcp", labAddr+":8443"); return err }); err != nil {
				t.Fatal(err)
			}
			rf, err := bmcsim.StartRedfish(ctx, bmcsim.RedfishConfig{Listener: ln, Password: e2eBMCPassword,
				Systems: map[string]bmcsim.Machine{"1": machine}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(rf.Stop)
			port = 8443
			actions = func() []string {
				var names []string
				for _, a := range rf.Actions() {
					names = append(names, a.Name)
				}
				return names
			}
			vmPid = machine.Pid
		}
		bootThroughBMC(t, l, ctx, spec, console, protocol, port, daemon)
		if pid := vmPid(); pid > 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("%s: QEMU (pid %d) still runs after the power-off", protocol, pid)
		}
		if names := actions(); len(names) < 2 || !strings.HasPrefix(names[0], "boot") || !strings.Contains(strings.ToLower(names[0]), "pxe") ||
			(names[1] != "power on" && names[1] != "reset On") {
			t.Errorf("%s: BMC actions %q, want the PXE boot, then power on, first", protocol, names)
		}
	}
}

// bootThroughBMC registers the VM of spec with its BMC, has Carbide set it
// to boot from PXE and power it on, waits until it is Ready, powers it off
// and checks the power states the API saw.
func bootThroughBMC(t *testing.T, l *lab, ctx context.Context, spec vmSpec, console string, protocol bmcv1.Protocol, port uint16, daemon *proc) {
	t.Helper()
	// The machine is known before it boots, as an operator registers a
	// rack: by its MAC, with its BMC.
	m, err := l.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{Macs: []string{spec.mac}}))
	if err != nil {
		t.Fatal(err)
	}
	id := m.Msg.GetMachine().GetId()
	if _, err := l.client.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: labAddr,
		Port: uint32(port), Protocol: protocol, Username: "admin", Password: e2eBMCPassword})); err != nil {
		t.Fatal(err)
	}
	request := func(typ bmcv1.OperationType, boot *bmcv1.Boot) string {
		resp, err := l.client.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{MachineId: id, Type: typ, Boot: boot}))
		if err != nil {
			t.Fatalf("RequestOperation %s: %v", typ, err)
		}
		return resp.Msg.GetOperation().GetId()
	}
	request(bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE})
	request(bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
	power := func(want bmcv1.PowerState) func() bool {
		return func() bool {
			g, err := l.client.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: id}))
			return err == nil && g.Msg.GetBmc().GetPowerState() == want
		}
	}
	if !waitFor(time.Minute, power(bmcv1.PowerState_POWER_STATE_ON)) {
		t.Fatalf("%s: the API never saw the machine on:\n%s", protocol, tail(daemon.out.String(), 30))
	}
	v := &vm{spec: spec, console: console, started: time.Now()}
	ready, took := l.waitReady(t, v, 4*time.Minute)
	if ready == nil {
		t.FailNow()
	}
	if ready.GetId() != id {
		t.Errorf("%s: the VM became machine %s, want the registered %s", protocol, ready.GetId(), id)
	}
	t.Logf("%s: power-on through the BMC to Ready in %s", protocol, took.Round(100*time.Millisecond))
	off := request(bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, nil)
	if !waitFor(time.Minute, func() bool {
		g, err := l.client.BMC.GetOperation(ctx, connect.NewRequest(&bmcv1.GetOperationRequest{Id: off}))
		return err == nil && g.Msg.GetOperation().GetState() == bmcv1.OperationState_OPERATION_STATE_SUCCEEDED
	}) {
		t.Fatalf("%s: the power-off did not succeed:\n%s", protocol, tail(daemon.out.String(), 30))
	}
	if !waitFor(30*time.Second, power(bmcv1.PowerState_POWER_STATE_OFF)) {
		t.Errorf("%s: the API never saw the machine off", protocol)
	}
}
