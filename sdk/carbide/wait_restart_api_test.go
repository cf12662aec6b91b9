package carbide

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// restartableAPI is a carbide-api --dev that the test stops and starts
// again on the same address and data directory, as a restarting replica.
type restartableAPI struct {
	bin, dataDir string
	api          *testAPI
	stop         func()
	cmd          *exec.Cmd
}

// start runs carbide-api on listen (the first time 127.0.0.1:0, then the
// address it had) and waits until it listens.
func (r *restartableAPI) start(t *testing.T, listen string) {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(r.bin, "--dev", "--listen", listen, "--data-dir", r.dataDir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start carbide-api: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	r.stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("output of carbide-api on %s:\n%s", listen, out.String())
		}
	}
	deadline := time.After(60 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(out.String()); m != nil {
			r.api = &testAPI{addr: m[1], pki: filepath.Join(r.dataDir, "pki"), out: out}
			return
		}
		select {
		case <-done:
			t.Fatalf("carbide-api on %s exited before listening:\n%s", listen, out.String())
		case <-deadline:
			r.stop()
			t.Fatalf("carbide-api on %s did not listen within 60s:\n%s", listen, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestWaitAcrossAPIRestart waits for a machine while the real carbide-api
// is down, then up, then restarted again: the wait retries the refused
// Get, follows the watch once the API is back, resumes it across the
// restart, and returns when the machine reaches the state.
func TestWaitAcrossAPIRestart(t *testing.T) {
	bin, err := buildAPI()
	if err != nil {
		t.Fatal(err)
	}
	r := &restartableAPI{bin: bin, dataDir: t.TempDir()}
	r.start(t, "127.0.0.1:0")
	t.Cleanup(func() { r.stop() })
	testsecret.RegisterFiles(t, filepath.Join(r.api.pki, "*.key"))
	if os.Getenv(testsecret.EnvFile) != "" {
		t.Cleanup(func() { t.Logf("output of carbide-api:\n%s", r.api.out.String()) })
	}
	admin, dhcp := r.api.client(t, "admin"), r.api.client(t, "dhcp")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	if _, err := admin.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "local", Prefix: "10.1.0.0/24", Gateway: "10.1.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.1.0.100", End: "10.1.0.120"}},
	}})); err != nil {
		t.Fatalf("CreateSegment: %v", err)
	}
	lease, err := dhcp.DHCP.Lease(ctx, connect.NewRequest(&dhcpv1.LeaseRequest{
		Mac: "52:54:00:5d:00:31", Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"},
	}))
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	id := lease.Msg.GetMachineId()

	// Down: the wait's first Get finds nobody listening.
	addr := r.api.addr
	r.stop()
	maint := inBackground(func(opt WaitOption) (*machinev1.Machine, error) {
		return admin.WaitMachineState(ctx, id, []machinev1.MachineState{machinev1.MachineState_MACHINE_STATE_MAINTENANCE}, opt)
	})
	maint.sawNow(t, fmt.Sprintf("machine %s: get machine: unavailable", id))
	select {
	case <-maint.done:
		t.Fatalf("the wait ended while the API was down: %v", maint.err)
	default:
	}

	// Up again: the wait reads the machine and follows the watch.
	r.start(t, addr)
	maint.sawNow(t, fmt.Sprintf("machine %s: discovered", id))

	// Restarted while watching: the wait resumes the watch.
	r.stop()
	maint.sawNow(t, fmt.Sprintf("machine %s: discovered; watch: ", id))
	r.start(t, addr)
	if _, err := admin.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine:    &machinev1.Machine{Id: id, Maintenance: true},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"maintenance"}},
	})); err != nil {
		t.Fatalf("UpdateMachine maintenance: %v", err)
	}
	m, err := maint.result(t)
	if err != nil || m.GetState() != machinev1.MachineState_MACHINE_STATE_MAINTENANCE {
		t.Fatalf("WaitMachineState(MAINTENANCE) across restarts = %v, %v; progress: %v", m, err, maint.seen())
	}
	t.Logf("progress: %q", maint.seen())
}
