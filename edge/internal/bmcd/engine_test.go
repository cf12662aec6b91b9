package bmcd

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeAPI hands out work once and records what the daemon says.
type fakeAPI struct {
	mu       sync.Mutex
	work     []*bmcv1.Work
	lost     map[string]bool // machines whose lease Renew reports lost
	reports  []*bmcv1.ReportRequest
	released []*bmcv1.LeaseRef
	renewals int
}

func (f *fakeAPI) Claim(_ context.Context, req *connect.Request[bmcv1.ClaimRequest]) (*connect.Response[bmcv1.ClaimResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := min(int(req.Msg.GetMaxMachines()), len(f.work))
	w := f.work[:n]
	f.work = f.work[n:]
	return connect.NewResponse(&bmcv1.ClaimResponse{Work: w, LeaseSeconds: 3}), nil
}

func (f *fakeAPI) Renew(_ context.Context, req *connect.Request[bmcv1.RenewRequest]) (*connect.Response[bmcv1.RenewResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals++
	resp := &bmcv1.RenewResponse{LeaseExpireTime: timestamppb.New(time.Now().Add(3 * time.Second))}
	for _, l := range req.Msg.GetLeases() {
		if f.lost[l.GetMachineId()] {
			resp.Lost = append(resp.Lost, l)
		}
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeAPI) Report(_ context.Context, req *connect.Request[bmcv1.ReportRequest]) (*connect.Response[bmcv1.ReportResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, req.Msg)
	return connect.NewResponse(&bmcv1.ReportResponse{}), nil
}

func (f *fakeAPI) Release(_ context.Context, req *connect.Request[bmcv1.ReleaseRequest]) (*connect.Response[bmcv1.ReleaseResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, req.Msg.GetLeases()...)
	return connect.NewResponse(&bmcv1.ReleaseResponse{}), nil
}

// fakeConn is a BMC whose calls fail with errs in turn, then succeed.
type fakeConn struct {
	mu    sync.Mutex
	power PowerState
	boot  BootOverride
	errs  []error
	calls []string
	block bool // PowerOn waits for its context
}

func (c *fakeConn) do(ctx context.Context, name string, then func()) error {
	c.mu.Lock()
	c.calls = append(c.calls, name)
	block := c.block && name == "on"
	var err error
	if len(c.errs) > 0 {
		err, c.errs = c.errs[0], c.errs[1:]
	}
	c.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if err == nil && then != nil {
		c.mu.Lock()
		then()
		c.mu.Unlock()
	}
	return err
}

func (c *fakeConn) PowerOn(ctx context.Context) error {
	return c.do(ctx, "on", func() { c.power = PowerOn })
}
func (c *fakeConn) PowerOff(ctx context.Context) error {
	return c.do(ctx, "off", func() { c.power = PowerOff })
}
func (c *fakeConn) SoftOff(ctx context.Context) error { return c.do(ctx, "soft", nil) }
func (c *fakeConn) Cycle(ctx context.Context) error   { return c.do(ctx, "cycle", nil) }
func (c *fakeConn) Reset(ctx context.Context) error   { return c.do(ctx, "reset", nil) }
func (c *fakeConn) SetBootDevice(ctx context.Context, d BootDevice, persistent, efi bool) error {
	return c.do(ctx, "boot "+string(d), func() { c.boot = BootOverride{Enabled: true, Device: d, Persistent: persistent, EFI: efi} })
}
func (c *fakeConn) BootOverride(context.Context) (BootOverride, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot, nil
}
func (c *fakeConn) PowerState(context.Context) (PowerState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.power, nil
}
func (c *fakeConn) Close(context.Context) error { return nil }

func (c *fakeConn) actions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func work(machine string, typ bmcv1.OperationType, attempts int32) *bmcv1.Work {
	return &bmcv1.Work{MachineId: machine, Lease: 1, LeaseExpireTime: timestamppb.New(time.Now().Add(3 * time.Second)),
		Target:    &bmcv1.Target{Address: "10.0.0.1", Username: "admin", Protocol: bmcv1.Protocol_PROTOCOL_IPMI},
		Operation: &bmcv1.Operation{Id: "op-" + machine, MachineId: machine, Type: typ, Attempts: attempts}}
}

// runEngine runs an engine over api and conn until cond holds (or 10 s),
// then stops it.
func runEngine(t *testing.T, api *fakeAPI, conn *fakeConn, cond func() bool) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ClaimInterval = 10 * time.Millisecond
	cfg.RetryBackoff = time.Millisecond
	cfg.ShutdownTimeout = 100 * time.Millisecond
	cfg.PollInterval = 0
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(&cfg, api, func(context.Context, Target) (Conn, error) { return conn, nil }, m,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if !cond() {
		t.Fatal("the engine did not get there within 10 s")
	}
}

func (f *fakeAPI) nReports() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports)
}

func TestEngineRetriesTransientErrors(t *testing.T) {
	api := &fakeAPI{work: []*bmcv1.Work{work("m1", bmcv1.OperationType_OPERATION_TYPE_POWER_ON, 1)}}
	conn := &fakeConn{power: PowerOff, errs: []error{&Error{Transient: true, msg: "timeout"}}}
	runEngine(t, api, conn, func() bool { return api.nReports() == 1 })
	r := api.reports[0]
	if r.GetResult() != bmcv1.ReportRequest_RESULT_SUCCEEDED || r.GetAttempts() != 2 || r.GetPowerState() != bmcv1.PowerState_POWER_STATE_ON {
		t.Errorf("report %v, want succeeded after 2 attempts, power on", r)
	}
}

func TestEngineDoesNotRetryPermanentErrors(t *testing.T) {
	api := &fakeAPI{work: []*bmcv1.Work{work("m1", bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, 1)}}
	conn := &fakeConn{power: PowerOn, errs: []error{&Error{msg: "BMC refused the credentials"}}}
	runEngine(t, api, conn, func() bool { return api.nReports() == 1 })
	r := api.reports[0]
	if r.GetResult() != bmcv1.ReportRequest_RESULT_FAILED || r.GetError() != "BMC refused the credentials" || len(conn.actions()) != 1 {
		t.Errorf("report %v after %v, want one failed try", r, conn.actions())
	}
}

func TestEngineTakeoverDoesNotRepeatADonePowerOn(t *testing.T) {
	api := &fakeAPI{work: []*bmcv1.Work{work("m1", bmcv1.OperationType_OPERATION_TYPE_POWER_ON, 2)}}
	conn := &fakeConn{power: PowerOn}
	runEngine(t, api, conn, func() bool { return api.nReports() == 1 })
	if a := conn.actions(); len(a) != 0 {
		t.Errorf("BMC calls %v: the machine was on already", a)
	}
	if r := api.reports[0]; r.GetResult() != bmcv1.ReportRequest_RESULT_SUCCEEDED {
		t.Errorf("report %v, want succeeded", r)
	}
}

// bootWork is a SET_BOOT_DEVICE operation to PXE with UEFI, for the next
// boot only, in its attempt-th try.
func bootWork(machine string, attempts int32) *bmcv1.Work {
	w := work(machine, bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, attempts)
	w.Operation.Boot = &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE, Efi: true}
	return w
}

// A boot device operation taken over from a lost daemon is not sent again
// when the BMC's override holds it already; it is when the override
// differs in device, persistence, mode or is no longer in effect, and a
// first attempt always sends it.
func TestEngineTakeoverSetsABootDeviceOnce(t *testing.T) {
	pxeEFI := BootOverride{Enabled: true, Device: BootPXE, EFI: true}
	for name, c := range map[string]struct {
		attempts int32
		boot     BootOverride
		want     []string
	}{
		"taken over, set already":     {2, pxeEFI, nil},
		"taken over, other device":    {2, BootOverride{Enabled: true, Device: BootDisk, EFI: true}, []string{"boot pxe"}},
		"taken over, legacy":          {3, BootOverride{Enabled: true, Device: BootPXE}, []string{"boot pxe"}},
		"taken over, persistent":      {2, BootOverride{Enabled: true, Device: BootPXE, EFI: true, Persistent: true}, []string{"boot pxe"}},
		"taken over, used up":         {2, BootOverride{Device: BootPXE, EFI: true}, []string{"boot pxe"}},
		"first attempt, set already":  {1, pxeEFI, []string{"boot pxe"}},
		"taken over, no override yet": {2, BootOverride{}, []string{"boot pxe"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{work: []*bmcv1.Work{bootWork("m1", c.attempts)}}
			conn := &fakeConn{power: PowerOff, boot: c.boot}
			runEngine(t, api, conn, func() bool { return api.nReports() == 1 })
			if diff := cmp.Diff(c.want, conn.actions()); diff != "" {
				t.Errorf("BMC calls (-want +got):\n%s", diff)
			}
			if r := api.reports[0]; r.GetResult() != bmcv1.ReportRequest_RESULT_SUCCEEDED {
				t.Errorf("report %v, want succeeded", r)
			}
			if got := conn.boot; got != pxeEFI {
				t.Errorf("boot override after the operation %+v, want %+v", got, pxeEFI)
			}
		})
	}
}

// A lease Renew says is lost stops the work, which is not reported.
func TestEngineStopsWorkWhoseLeaseIsLost(t *testing.T) {
	api := &fakeAPI{work: []*bmcv1.Work{work("m1", bmcv1.OperationType_OPERATION_TYPE_POWER_ON, 1)}, lost: map[string]bool{"m1": true}}
	conn := &fakeConn{power: PowerOff, block: true}
	stopped := func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		return api.renewals > 0 && len(conn.actions()) == 1
	}
	runEngine(t, api, conn, stopped)
	time.Sleep(50 * time.Millisecond)
	if n := api.nReports(); n != 0 {
		t.Errorf("%d reports of work whose lease was lost", n)
	}
}

// On shutdown, work that does not finish in time stops and its lease is
// released.
func TestEngineReleasesLeasesOnShutdown(t *testing.T) {
	api := &fakeAPI{work: []*bmcv1.Work{work("m1", bmcv1.OperationType_OPERATION_TYPE_POWER_ON, 1)}}
	conn := &fakeConn{power: PowerOff, block: true}
	runEngine(t, api, conn, func() bool { return len(conn.actions()) == 1 })
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.released) != 1 || api.released[0].GetMachineId() != "m1" || len(api.reports) != 0 {
		t.Errorf("released %v, reports %v: want m1's lease released, nothing reported", api.released, api.reports)
	}
}
