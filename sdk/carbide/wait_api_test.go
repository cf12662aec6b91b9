package carbide

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// lab drives a real carbide-api the way its daemons and a machine's
// discovery agent do, so that machines and instances move through their
// states without hardware.
type lab struct {
	t        *testing.T
	api      *testAPI
	admin    *Client
	dhcp     *Client
	pxe      *Client
	segment  *networkv1.Segment
	serverCA *x509.CertPool
}

func newLab(t *testing.T) *lab {
	t.Helper()
	api := startAPI(t)
	l := &lab{t: t, api: api, admin: api.client(t, "admin"), dhcp: api.client(t, "dhcp"), pxe: api.client(t, "pxe")}
	ca, err := os.ReadFile(filepath.Join(api.pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	l.serverCA = x509.NewCertPool()
	l.serverCA.AppendCertsFromPEM(ca)
	resp, err := l.admin.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "local", Prefix: "10.1.0.0/24", Gateway: "10.1.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.1.0.100", End: "10.1.0.120"}},
	}}))
	if err != nil {
		t.Fatalf("CreateSegment: %v", err)
	}
	l.segment = resp.Msg.GetSegment()
	return l
}

// lease gets mac an address as carbide-dhcp would, which enrols a new
// machine; it returns the machine id and the address.
func (l *lab) lease(mac string) (machineID, address string) {
	l.t.Helper()
	resp, err := l.dhcp.DHCP.Lease(l.t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{
		Mac: mac, Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"},
	}))
	if err != nil {
		l.t.Fatalf("Lease: %v", err)
	}
	return resp.Msg.GetMachineId(), resp.Msg.GetAddress()
}

// bootAgent boots the discovery agent of mac, as carbide-pxe serves it,
// and has it report its hardware. It returns the agent's client and the
// instruction it got.
func (l *lab) bootAgent(mac, address string) (*Client, *agentv1.Instruction) {
	l.t.Helper()
	ctx := l.t.Context()
	start, err := l.pxe.Boot.GetBootConfig(ctx, connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: address, StartBoot: true}))
	if err != nil {
		l.t.Fatalf("start a boot: %v", err)
	}
	if start.Msg.GetBootNonce() == "" {
		l.t.Fatalf("the boot of %s is %v, want the discovery agent", mac, start.Msg.GetAction())
	}
	cfg, err := l.pxe.Boot.GetBootConfig(ctx, connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: address, BootNonce: start.Msg.GetBootNonce()}))
	if err != nil {
		l.t.Fatalf("redeem the boot nonce: %v", err)
	}
	token := cfg.Msg.GetAgentToken()
	if token == "" {
		l.t.Fatalf("no agent token: %s", cfg.Msg.GetTokenWithheldReason())
	}
	testsecret.Register(l.t, token)
	agent, err := New("https://"+l.api.addr, WithTLS(&tls.Config{RootCAs: l.serverCA}), WithBearerToken(token))
	if err != nil {
		l.t.Fatal(err)
	}
	rep, err := agent.Agent.ReportInventory(ctx, connect.NewRequest(&agentv1.ReportInventoryRequest{
		MachineId: cfg.Msg.GetMachineId(),
		Inventory: &machinev1.Inventory{
			System:      &machinev1.SystemInfo{Manufacturer: "QEMU", Product: "Standard PC", Uuid: "5b2c6d1e-0000-4000-8000-0000000000c1"},
			Cpu:         &machinev1.CPUInfo{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2},
			MemoryBytes: 8 << 30,
			Disks:       []*machinev1.Disk{{Name: "vda", Serial: "disk-1", SizeBytes: 64 << 30}},
			Nics:        []*machinev1.NIC{{Mac: mac, Driver: "virtio_net", LinkUp: true}},
		},
	}))
	if err != nil {
		l.t.Fatalf("ReportInventory: %v", err)
	}
	return agent, rep.Msg.GetInstruction()
}

// complete ends the agent's current step, with failure ("" for success).
func (l *lab) complete(agent *Client, machineID, step, failure string) {
	l.t.Helper()
	if _, err := agent.Agent.CompleteStep(l.t.Context(), connect.NewRequest(&agentv1.CompleteStepRequest{
		MachineId: machineID, Step: step, Error: failure, Bytes: 2 << 30, Duration: durationpb.New(20 * time.Second),
	})); err != nil {
		l.t.Fatalf("CompleteStep %s: %v", step, err)
	}
}

// untilStep polls the machine until the lifecycle controller (which runs
// every second in carbide-api) has it at step.
func (l *lab) untilStep(machineID, step string) {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := l.admin.Machines.GetMachine(l.t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: machineID}))
		if err != nil {
			l.t.Fatal(err)
		}
		if resp.Msg.GetMachine().GetTask().GetStep() == step {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("machine still at %v after 30s, want step %s", resp.Msg.GetMachine().GetTask(), step)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// background runs a wait on its own goroutine, recording its progress.
type background[T any] struct {
	done     chan struct{}
	val      T
	err      error
	mu       sync.Mutex
	progress []Progress
}

func inBackground[T any](f func(opt WaitOption) (T, error)) *background[T] {
	b := &background[T]{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.val, b.err = f(WithProgress(func(p Progress) {
			b.mu.Lock()
			b.progress = append(b.progress, p)
			b.mu.Unlock()
		}))
	}()
	return b
}

// result waits for the wait to end.
func (b *background[T]) result(t *testing.T) (T, error) {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the wait did not return within 60s")
	}
	return b.val, b.err
}

// sawNow blocks until the wait reported a progress whose String contains
// s, so that the test changes the resource only once the waiter is in
// the state before.
func (b *background[T]) sawNow(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b.saw(s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the waiter never reported %q; it saw %v", s, b.seen())
}

func (b *background[T]) saw(s string) bool {
	return slices.ContainsFunc(b.seen(), func(p string) bool { return strings.Contains(p, s) })
}

func (b *background[T]) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, p := range b.progress {
		out = append(out, p.String())
	}
	return out
}

// TestWaitAgainstAPI takes a machine through discovery, maintenance, an
// instance that runs, its release and cleaning, and an instance that
// fails, waiting for each with the SDK's waiters against a real
// carbide-api; then lists what that left with the iterators.
func TestWaitAgainstAPI(t *testing.T) {
	l := newLab(t)
	c := l.admin
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const mac = "52:54:00:5d:00:01"

	// Discovery: the machine becomes Ready when its agent reports.
	id, addr := l.lease(mac)
	readyWait := inBackground(func(opt WaitOption) (*machinev1.Machine, error) {
		return c.WaitMachineState(ctx, id, []machinev1.MachineState{ready}, opt)
	})
	readyWait.sawNow(t, ": discovered")
	l.bootAgent(mac, addr)
	m, err := readyWait.result(t)
	if err != nil || m.GetState() != ready {
		t.Fatalf("WaitMachineState(READY) = %v, %v", m, err)
	}

	// Maintenance and back.
	setMaintenance := func(on bool) {
		t.Helper()
		if _, err := c.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine:    &machinev1.Machine{Id: id, Maintenance: on},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"maintenance"}},
		})); err != nil {
			t.Fatalf("UpdateMachine maintenance=%v: %v", on, err)
		}
	}
	maint := inBackground(func(opt WaitOption) (*machinev1.Machine, error) {
		return c.WaitMachineState(ctx, id, []machinev1.MachineState{machinev1.MachineState_MACHINE_STATE_MAINTENANCE}, opt)
	})
	maint.sawNow(t, ": ready")
	setMaintenance(true)
	if m, err := maint.result(t); err != nil || !m.GetMaintenance() {
		t.Fatalf("WaitMachineState(MAINTENANCE) = %v, %v", m, err)
	}
	setMaintenance(false)
	if m, err := c.WaitMachineState(ctx, id, []machinev1.MachineState{ready}); err != nil || m.GetState() != ready {
		t.Fatalf("WaitMachineState(READY) after maintenance = %v, %v", m, err)
	}

	// An instance: installed by the agent, then phoning home.
	imgs := make([]*instancev1.Image, 2)
	for i, version := range []string{"12", "13"} {
		resp, err := c.Images.CreateImage(ctx, connect.NewRequest(&instancev1.CreateImageRequest{Image: &instancev1.Image{
			Name: "debian", Version: version, Architecture: "amd64",
			Firmware: []instancev1.Firmware{instancev1.Firmware_FIRMWARE_UEFI, instancev1.Firmware_FIRMWARE_BIOS},
			Boot: &instancev1.Image_Disk{Disk: &instancev1.DiskImage{
				File:   &instancev1.Artifact{Url: "http://images.example/debian.raw", Sha256: strings.Repeat("ab", 32), SizeBytes: 2 << 30},
				Format: instancev1.DiskFormat_DISK_FORMAT_RAW, Compression: instancev1.Compression_COMPRESSION_NONE,
			}},
		}}))
		if err != nil {
			t.Fatalf("CreateImage: %v", err)
		}
		imgs[i] = resp.Msg.GetImage()
	}
	create := func(hostname string) *instancev1.Instance {
		t.Helper()
		resp, err := c.Instances.CreateInstance(ctx, connect.NewRequest(&instancev1.CreateInstanceRequest{
			Hostname: hostname, ImageId: imgs[0].GetId(), Target: &instancev1.CreateInstanceRequest_MachineId{MachineId: id},
		}))
		if err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
		return resp.Msg.GetInstance()
	}
	inst := create("tenant-1")
	running := inBackground(func(opt WaitOption) (*instancev1.Instance, error) {
		return c.WaitInstanceRunning(ctx, inst.GetId(), opt)
	})
	l.untilStep(id, "boot_agent")
	agent, in := l.bootAgent(mac, addr)
	if in.GetAction() != agentv1.Instruction_ACTION_INSTALL {
		t.Fatalf("the agent got %v, want an install", in)
	}
	if _, err := agent.Agent.ReportProgress(ctx, connect.NewRequest(&agentv1.ReportProgressRequest{
		MachineId: id, Step: "write_image", Done: 1 << 30, Total: 2 << 30, Message: "writing"})); err != nil {
		t.Fatalf("ReportProgress: %v", err)
	}
	running.sawNow(t, "write_image 1.0 GiB/2.0 GiB: writing")
	l.complete(agent, id, "write_image", "")
	if _, err := l.pxe.Boot.PhoneHome(ctx, connect.NewRequest(&bootv1.PhoneHomeRequest{Mac: mac, ClientAddress: addr, InstanceId: inst.GetId()})); err != nil {
		t.Fatalf("PhoneHome: %v", err)
	}
	got, err := running.result(t)
	if err != nil || got.GetState() != instancev1.InstanceState_INSTANCE_STATE_RUNNING {
		t.Fatalf("WaitInstanceRunning = %v, %v", got, err)
	}
	if !running.saw(": provisioning") {
		t.Errorf("the running wait reported %v, want provisioning first", running.seen())
	}

	// Its release: Releasing until the agent wiped the disks, then the
	// machine is Ready.
	if _, err := c.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: inst.GetId()})); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}
	released := inBackground(func(opt WaitOption) (struct{}, error) {
		return struct{}{}, c.WaitInstanceDeleted(ctx, inst.GetId(), WaitCleaned(), opt)
	})
	l.untilStep(id, "boot_agent")
	released.sawNow(t, ": releasing")
	agent, in = l.bootAgent(mac, addr)
	if in.GetAction() != agentv1.Instruction_ACTION_WIPE {
		t.Fatalf("the agent got %v, want a wipe", in)
	}
	l.complete(agent, id, "wipe", "")
	if _, err := released.result(t); err != nil {
		t.Fatalf("WaitInstanceDeleted: %v", err)
	}
	resp, err := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
	if err != nil || resp.Msg.GetMachine().GetState() != ready {
		t.Fatalf("after WaitInstanceDeleted(WaitCleaned) the machine is %v (%v), want READY", resp.Msg.GetMachine().GetState(), err)
	}
	// Waiting again for a released instance returns at once.
	if err := c.WaitInstanceDeleted(ctx, inst.GetId()); err != nil {
		t.Errorf("WaitInstanceDeleted of a released instance: %v", err)
	}

	// An instance whose image cannot be written fails the wait at once,
	// with the reason.
	bad := create("tenant-2")
	failing := inBackground(func(opt WaitOption) (*instancev1.Instance, error) {
		return c.WaitInstanceRunning(ctx, bad.GetId(), opt)
	})
	l.untilStep(id, "boot_agent")
	agent, _ = l.bootAgent(mac, addr)
	l.complete(agent, id, "write_image", "sha256 mismatch")
	_, err = failing.result(t)
	var se *StateError
	if !errors.As(err, &se) || se.State != "failed" || !strings.Contains(se.Reason, "sha256 mismatch") {
		t.Fatalf("WaitInstanceRunning of a failing instance: %v, want a *StateError failed with the reason", err)
	}

	// A BMC and an operation, so that every list has something.
	if _, err := c.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: "10.1.0.250"})); err != nil {
		t.Fatalf("SetBMC: %v", err)
	}
	for range 2 {
		if _, err := c.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_CYCLE})); err != nil {
			t.Fatalf("RequestOperation: %v", err)
		}
	}
	testIterators(ctx, t, c, id)
}

// testIterators walks each list one item per page, so each iterator
// follows page tokens.
func testIterators(ctx context.Context, t *testing.T, c *Client, machineID string) {
	count := func(name string, want int, n int, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if n < want {
			t.Errorf("%s yielded %d, want at least %d", name, n, want)
		}
	}
	walk := func(seq func(yield func(any, error) bool)) (int, error) {
		n := 0
		for _, err := range seq {
			if err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	}
	n, err := walk(erase(c.AllImages(ctx, &instancev1.ListImagesRequest{PageSize: 1})))
	count("AllImages", 2, n, err)
	n, err = walk(erase(c.AllInstances(ctx, &instancev1.ListInstancesRequest{PageSize: 1})))
	count("AllInstances", 2, n, err)
	// discovered, inventoried, ready, maintenance, ready, provisioning,
	// assigned, cleaning, ready, provisioning, ...
	n, err = walk(erase(c.AllMachineTransitions(ctx, &machinev1.ListMachineTransitionsRequest{MachineId: machineID, PageSize: 1})))
	count("AllMachineTransitions", 8, n, err)
	n, err = walk(erase(c.AllAuditRecords(ctx, &auditv1.ListAuditRecordsRequest{PageSize: 1})))
	count("AllAuditRecords", 10, n, err)
	n, err = walk(erase(c.AllBMCs(ctx, &bmcv1.ListBMCsRequest{PageSize: 1})))
	count("AllBMCs", 1, n, err)
	n, err = walk(erase(c.AllBMCOperations(ctx, &bmcv1.ListOperationsRequest{PageSize: 1})))
	count("AllBMCOperations", 2, n, err)
	n, err = walk(erase(c.AllIdentityConflicts(ctx, &machinev1.ListIdentityConflictsRequest{PageSize: 1})))
	count("AllIdentityConflicts", 0, n, err)
}

// erase turns an iterator of T into one of any.
func erase[T any](seq func(yield func(T, error) bool)) func(yield func(any, error) bool) {
	return func(yield func(any, error) bool) {
		for v, err := range seq {
			if !yield(v, err) {
				return
			}
		}
	}
}
