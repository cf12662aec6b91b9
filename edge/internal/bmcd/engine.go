package bmcd

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
)

// API is what the daemon asks of the Carbide API's BMCService.
type API interface {
	Claim(context.Context, *connect.Request[bmcv1.ClaimRequest]) (*connect.Response[bmcv1.ClaimResponse], error)
	Renew(context.Context, *connect.Request[bmcv1.RenewRequest]) (*connect.Response[bmcv1.RenewResponse], error)
	Report(context.Context, *connect.Request[bmcv1.ReportRequest]) (*connect.Response[bmcv1.ReportResponse], error)
	Release(context.Context, *connect.Request[bmcv1.ReleaseRequest]) (*connect.Response[bmcv1.ReleaseResponse], error)
}

// Conn is an open connection to one machine's BMC.
type Conn interface {
	PowerOn(ctx context.Context) error
	PowerOff(ctx context.Context) error
	SoftOff(ctx context.Context) error
	Cycle(ctx context.Context) error
	Reset(ctx context.Context) error
	SetBootDevice(ctx context.Context, device BootDevice, persistent, efi bool) error
	PowerState(ctx context.Context) (PowerState, error)
	BootOverride(ctx context.Context) (BootOverride, error)
	Close(ctx context.Context) error
}

// Dialer opens a connection to a BMC.
type Dialer func(ctx context.Context, t Target) (Conn, error)

// passwordInfo is the HPKE info the API seals a machine's password with.
func passwordInfo(machineID string) []byte {
	return []byte("carbide bmc password " + machineID)
}

// engine claims machines from the API and works on each under its lease:
// it runs the operation, reads the power state and reports.
type engine struct {
	cfg     *Config
	api     API
	dial    Dialer
	logger  *slog.Logger
	metrics *Metrics

	public []byte           // X25519, sent with each claim
	key    hpke.PrivateKey  // opens the passwords sealed to public
	slots  chan struct{}    // one per machine in progress
	wg     sync.WaitGroup   // the work in progress
	mu     sync.Mutex       // guards held
	held   map[string]*held // by machine id
	// leaseTime is how long the API's leases last, from its last answer.
	leaseTime time.Duration
}

// held is a lease the daemon holds, and the work under it.
type held struct {
	ref    *bmcv1.LeaseRef
	expire time.Time
	cancel context.CancelFunc // stops the work
	lost   bool               // the lease is lost (guarded by engine.mu)
}

func newEngine(cfg *Config, api API, dial Dialer, m *Metrics, logger *slog.Logger) (*engine, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make the key credentials are sealed to: %w", err)
	}
	key, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("make the key credentials are sealed to: %w", err)
	}
	return &engine{
		cfg: cfg, api: api, dial: dial, logger: logger, metrics: m,
		public: priv.PublicKey().Bytes(), key: key,
		slots: make(chan struct{}, cfg.MaxConcurrent), held: map[string]*held{},
		leaseTime: 30 * time.Second,
	}, nil
}

// run claims and works until ctx is done; it then lets the work in
// progress finish for up to ShutdownTimeout, stops the rest, and releases
// every lease it still holds.
func (e *engine) run(ctx context.Context) error {
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		e.renewLoop(work)
	}()
	e.claimLoop(ctx, work)

	finished := make(chan struct{})
	go func() { e.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(e.cfg.ShutdownTimeout):
		e.logger.Warn("stopping work still in progress", "after", e.cfg.ShutdownTimeout)
		stopWork()
		<-finished
	}
	stopWork()
	<-renewDone
	e.release()
	return nil
}

// claimLoop asks for as many machines as there are free slots, and starts
// the work on each, until ctx is done.
func (e *engine) claimLoop(ctx, work context.Context) {
	for ctx.Err() == nil {
		free := cap(e.slots) - len(e.slots)
		got := 0
		if free > 0 {
			got = e.claim(ctx, work, free)
		}
		if got > 0 && got == free {
			// Busy: ask again as soon as a slot frees.
			select {
			case <-ctx.Done():
			case e.slots <- struct{}{}:
				<-e.slots
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.ClaimInterval):
		}
	}
}

// claim asks the API for up to n machines and starts the work on each; it
// returns how many it got.
func (e *engine) claim(ctx, work context.Context, n int) int {
	cctx, cancel := context.WithTimeout(ctx, e.cfg.APITimeout)
	defer cancel()
	resp, err := e.api.Claim(cctx, connect.NewRequest(&bmcv1.ClaimRequest{
		Worker: e.cfg.Worker, PublicKey: e.public, MaxMachines: int32(n),
		PollIntervalSeconds: uint32(e.cfg.PollInterval / time.Second),
	}))
	if err != nil {
		if ctx.Err() == nil {
			e.metrics.apiErrors.WithLabelValues("Claim", connect.CodeOf(err).String()).Inc()
			e.logger.Warn("claim failed", "error", err)
		}
		return 0
	}
	if s := resp.Msg.GetLeaseSeconds(); s > 0 {
		e.mu.Lock()
		e.leaseTime = time.Duration(s) * time.Second
		e.mu.Unlock()
	}
	for _, w := range resp.Msg.GetWork() {
		e.slots <- struct{}{}
		wctx, cancel := context.WithCancel(work)
		h := &held{ref: &bmcv1.LeaseRef{MachineId: w.GetMachineId(), Lease: w.GetLease()},
			expire: w.GetLeaseExpireTime().AsTime(), cancel: cancel}
		e.mu.Lock()
		e.held[w.GetMachineId()] = h
		e.mu.Unlock()
		e.metrics.leasesHeld.Inc()
		if op := w.GetOperation(); op != nil && op.GetAttempts() > 1 {
			e.metrics.takeovers.Inc()
			e.logger.Info("taking over an operation another daemon started", "machine", w.GetMachineId(),
				"operation", op.GetId(), "type", op.GetType().String(), "attempt", op.GetAttempts(), "previous_worker", op.GetWorker())
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer func() { <-e.slots }()
			defer cancel()
			e.do(wctx, w, h)
		}()
	}
	return len(resp.Msg.GetWork())
}

// renewLoop renews the held leases every third of the lease time, and
// stops the work under a lease that is lost, or about to expire unrenewed.
func (e *engine) renewLoop(ctx context.Context) {
	for {
		e.mu.Lock()
		every := e.leaseTime / 3
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		e.renew(ctx)
	}
}

func (e *engine) renew(ctx context.Context) {
	e.mu.Lock()
	var refs []*bmcv1.LeaseRef
	for _, h := range e.held {
		refs = append(refs, h.ref)
	}
	margin := e.leaseTime / 3
	e.mu.Unlock()
	if len(refs) > 0 {
		rctx, cancel := context.WithTimeout(ctx, e.cfg.APITimeout)
		resp, err := e.api.Renew(rctx, connect.NewRequest(&bmcv1.RenewRequest{Worker: e.cfg.Worker, Leases: refs}))
		cancel()
		if err != nil {
			e.metrics.apiErrors.WithLabelValues("Renew", connect.CodeOf(err).String()).Inc()
			e.logger.Warn("renewing leases failed", "leases", len(refs), "error", err)
		} else {
			lost := map[string]bool{}
			for _, l := range resp.Msg.GetLost() {
				lost[l.GetMachineId()] = true
			}
			expire := resp.Msg.GetLeaseExpireTime().AsTime()
			e.mu.Lock()
			for _, r := range refs {
				h := e.held[r.GetMachineId()]
				if h == nil || h.ref != r {
					continue // reported meanwhile
				}
				if lost[r.GetMachineId()] {
					e.logger.Warn("lease lost; stopping the work on the machine", "machine", r.GetMachineId())
					e.metrics.leasesLost.Inc()
					h.lost = true
					h.cancel()
					continue
				}
				h.expire = expire
			}
			e.mu.Unlock()
		}
	}
	// Work whose lease could not be renewed stops before the lease
	// expires, so that it never overlaps with the next holder's.
	now := time.Now()
	e.mu.Lock()
	for id, h := range e.held {
		if now.After(h.expire.Add(-margin)) {
			e.logger.Warn("lease about to expire unrenewed; stopping the work on the machine", "machine", id)
			e.metrics.leasesLost.Inc()
			h.lost = true
			h.cancel()
		}
	}
	e.mu.Unlock()
}

// do works on one machine under its lease, and reports.
func (e *engine) do(ctx context.Context, w *bmcv1.Work, h *held) {
	machine := w.GetMachineId()
	log := e.logger.With("machine", machine)
	rep := &bmcv1.ReportRequest{Worker: e.cfg.Worker, Lease: h.ref, PowerState: bmcv1.PowerState_POWER_STATE_UNKNOWN}
	op := w.GetOperation()
	var conn Conn
	_, err := e.retry(ctx, log, "open", func(ctx context.Context) (err error) {
		conn, err = e.connect(ctx, w)
		return err
	})
	switch {
	case err != nil && op != nil:
		rep.Result, rep.Error = bmcv1.ReportRequest_RESULT_FAILED, err.Error()
	case err != nil:
		rep.Error = err.Error()
	default:
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.CallTimeout)
			defer cancel()
			conn.Close(cctx)
		}()
		if op != nil {
			attempts, err := e.operate(ctx, conn, op, log)
			rep.Attempts = int32(attempts)
			if err != nil {
				rep.Result, rep.Error = bmcv1.ReportRequest_RESULT_FAILED, err.Error()
			} else {
				rep.Result = bmcv1.ReportRequest_RESULT_SUCCEEDED
			}
		}
		if ctx.Err() == nil {
			state, err := call(e, ctx, "power_state", func(ctx context.Context) (PowerState, error) { return conn.PowerState(ctx) })
			if err != nil && op == nil {
				rep.Error = err.Error()
			}
			rep.PowerState = protoPower(state)
			e.metrics.polls.WithLabelValues(resultLabel(err)).Inc()
		}
	}
	if op != nil {
		rep.OperationId = op.GetId()
		e.metrics.operations.WithLabelValues(op.GetType().String(), rep.GetResult().String()).Inc()
	}
	if ctx.Err() != nil {
		// The lease was lost (a report would be refused), or the daemon
		// is stopping: the next holder does the work again.
		log.Warn("work stopped before it was reported", "operation", op.GetId())
		e.mu.Lock()
		lost := h.lost
		e.mu.Unlock()
		if !lost {
			e.releaseLeases([]*bmcv1.LeaseRef{h.ref})
		}
		e.drop(machine, h)
		return
	}
	if rep.Error != "" {
		log.Warn("BMC work failed", "operation", op.GetId(), "error", rep.Error)
	} else if op != nil {
		log.Info("BMC operation done", "operation", op.GetId(), "type", op.GetType().String(), "power", rep.PowerState.String())
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.APITimeout)
	_, err = e.api.Report(rctx, connect.NewRequest(rep))
	cancel()
	if err != nil {
		e.metrics.apiErrors.WithLabelValues("Report", connect.CodeOf(err).String()).Inc()
		log.Warn("report failed; the machine's lease expires and its work is done again", "operation", op.GetId(), "error", err)
	}
	e.drop(machine, h)
}

// drop forgets the lease h.
func (e *engine) drop(machine string, h *held) {
	e.mu.Lock()
	if e.held[machine] == h {
		delete(e.held, machine)
		e.metrics.leasesHeld.Dec()
	}
	e.mu.Unlock()
}

// connect opens the machine's BMC with the password sealed to the daemon.
func (e *engine) connect(ctx context.Context, w *bmcv1.Work) (Conn, error) {
	t := w.GetTarget()
	target := Target{Host: t.GetAddress(), Port: int(t.GetPort()), Username: t.GetUsername(), Protocol: protocolOf(t.GetProtocol())}
	if sealed := t.GetSealedPassword(); len(sealed) > 0 {
		pw, err := hpke.Open(e.key, hpke.HKDFSHA256(), hpke.AES256GCM(), passwordInfo(w.GetMachineId()), sealed)
		if err != nil {
			return nil, errors.New("the API's sealed BMC password does not open with this daemon's key")
		}
		target.Password = string(pw)
		clear(pw)
	}
	return call(e, ctx, "open", func(ctx context.Context) (Conn, error) { return e.dial(ctx, target) })
}

// retry calls f, again after failures that may pass (IsTransient), up to
// Attempts times with a doubling backoff; it returns how many tries it
// took, and the last error, prefixed with their number when there were
// several.
func (e *engine) retry(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) (int, error) {
	backoff := e.cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil || attempt >= e.cfg.Attempts || !IsTransient(err) || ctx.Err() != nil {
			if err != nil && attempt > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return attempt, err
		}
		log.Info("BMC call failed; trying again", "call", what, "attempt", attempt, "in", backoff, "error", err)
		select {
		case <-ctx.Done():
			return attempt, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// operate runs op, again after failures that may pass, up to Attempts
// times; it returns how many tries it took. An operation taken over from
// a daemon that was lost may have been done already (done returns 0
// tries then).
func (e *engine) operate(ctx context.Context, conn Conn, op *bmcv1.Operation, log *slog.Logger) (int, error) {
	if op.GetAttempts() > 1 && e.done(ctx, conn, op, log) {
		return 0, nil
	}
	return e.retry(ctx, log.With("operation", op.GetId()), op.GetType().String(), func(ctx context.Context) error {
		_, err := call(e, ctx, op.GetType().String(), func(ctx context.Context) (struct{}, error) {
			return struct{}{}, e.act(ctx, conn, op)
		})
		return err
	})
}

// done says whether op, taken over from a daemon that was lost, was done
// already, so that it is not done twice: a power on (off) of a machine
// that is on (off), or a boot device the BMC's override holds already
// (device, persistence and mode, in effect). When the BMC cannot tell,
// the operation runs.
func (e *engine) done(ctx context.Context, conn Conn, op *bmcv1.Operation, log *slog.Logger) bool {
	switch typ := op.GetType(); typ {
	case bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE:
		b := op.GetBoot()
		dev, ok := bootDevices[b.GetDevice()]
		if !ok {
			return false
		}
		o, err := call(e, ctx, "boot_override", func(ctx context.Context) (BootOverride, error) { return conn.BootOverride(ctx) })
		if err != nil {
			log.Info("could not read the boot override of an operation taken over; setting it", "operation", op.GetId(), "error", err)
			return false
		}
		if o.Matches(dev, b.GetPersistent(), b.GetEfi()) {
			log.Info("operation taken over was done already", "operation", op.GetId(), "boot_device", o.Device,
				"persistent", o.Persistent, "efi", o.EFI)
			return true
		}
	case bmcv1.OperationType_OPERATION_TYPE_POWER_ON, bmcv1.OperationType_OPERATION_TYPE_POWER_OFF,
		bmcv1.OperationType_OPERATION_TYPE_SOFT_OFF:
		state, err := call(e, ctx, "power_state", func(ctx context.Context) (PowerState, error) { return conn.PowerState(ctx) })
		if err != nil {
			return false
		}
		if typ == bmcv1.OperationType_OPERATION_TYPE_POWER_ON && state == PowerOn || typ != bmcv1.OperationType_OPERATION_TYPE_POWER_ON && state == PowerOff {
			log.Info("operation taken over was done already", "operation", op.GetId(), "power", state)
			return true
		}
	}
	return false
}

// act does op once.
func (e *engine) act(ctx context.Context, conn Conn, op *bmcv1.Operation) error {
	switch op.GetType() {
	case bmcv1.OperationType_OPERATION_TYPE_POWER_ON:
		return conn.PowerOn(ctx)
	case bmcv1.OperationType_OPERATION_TYPE_POWER_OFF:
		return conn.PowerOff(ctx)
	case bmcv1.OperationType_OPERATION_TYPE_SOFT_OFF:
		return conn.SoftOff(ctx)
	case bmcv1.OperationType_OPERATION_TYPE_POWER_CYCLE:
		return conn.Cycle(ctx)
	case bmcv1.OperationType_OPERATION_TYPE_RESET:
		return conn.Reset(ctx)
	case bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE:
		b := op.GetBoot()
		dev, ok := bootDevices[b.GetDevice()]
		if !ok {
			return fmt.Errorf("boot device %s is not one this daemon knows", b.GetDevice())
		}
		return conn.SetBootDevice(ctx, dev, b.GetPersistent(), b.GetEfi())
	}
	return fmt.Errorf("operation type %s is not one this daemon knows; upgrade carbide-bmc", op.GetType())
}

var bootDevices = map[bmcv1.BootDevice]BootDevice{
	bmcv1.BootDevice_BOOT_DEVICE_PXE:        BootPXE,
	bmcv1.BootDevice_BOOT_DEVICE_DISK:       BootDisk,
	bmcv1.BootDevice_BOOT_DEVICE_BIOS_SETUP: BootBIOS,
}

// call makes one call to a BMC with the call timeout, and times it.
func call[T any](e *engine, ctx context.Context, name string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CallTimeout)
	defer cancel()
	start := time.Now()
	v, err := f(ctx)
	e.metrics.callSeconds.WithLabelValues(name, resultLabel(err)).Observe(time.Since(start).Seconds())
	return v, err
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func protoPower(s PowerState) bmcv1.PowerState {
	switch s {
	case PowerOn:
		return bmcv1.PowerState_POWER_STATE_ON
	case PowerOff:
		return bmcv1.PowerState_POWER_STATE_OFF
	}
	return bmcv1.PowerState_POWER_STATE_UNKNOWN
}

// release gives the API back every lease still held.
func (e *engine) release() {
	e.mu.Lock()
	var refs []*bmcv1.LeaseRef
	for _, h := range e.held {
		refs = append(refs, h.ref)
	}
	e.mu.Unlock()
	e.releaseLeases(refs)
}

// releaseLeases gives the API back refs.
func (e *engine) releaseLeases(refs []*bmcv1.LeaseRef) {
	if len(refs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.APITimeout)
	defer cancel()
	if _, err := e.api.Release(ctx, connect.NewRequest(&bmcv1.ReleaseRequest{Worker: e.cfg.Worker, Leases: refs})); err != nil {
		e.logger.Warn("releasing leases failed; they expire on their own", "leases", len(refs), "error", err)
		return
	}
	e.logger.Info("released leases", "leases", len(refs))
}
