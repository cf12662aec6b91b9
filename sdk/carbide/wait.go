package carbide

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
)

// Progress is what a waiter saw of the resource it waits for, each time
// that changed: its state and, while a machine is Provisioning or
// Cleaning, the lifecycle controller's current step. It also reports each
// time the waiter lost the API for a moment and is about to try again:
// then Err is set, and the other fields are as last seen.
type Progress struct {
	// Kind is "machine" or "instance"; ID is the resource's id.
	Kind, ID string
	// State is the state in lower case without its prefix, e.g.
	// "provisioning" or "ready".
	State string
	// Step is the controller's step (power_on, boot_agent, write_image,
	// boot_os, wipe), empty when there is none; Done of Total says how far
	// it is when it counts (bytes), and Message says what it does now.
	Step        string
	Done, Total int64
	Message     string
	// Machine or Instance is the resource as seen; the other is nil.
	Machine  *machinev1.Machine
	Instance *instancev1.Instance

	// Err, when set, is the transient error (the API unavailable, a
	// refused or reset connection) of a read or watch that the waiter
	// makes again after RetryIn; Retry counts the tries since the last
	// success, from 1. State is empty when nothing was seen yet.
	Err     error
	Retry   int
	RetryIn time.Duration
}

// String returns a one-line description, e.g.
// "instance f9db…: provisioning, write_image 1.0 GiB/2.0 GiB: writing".
//
// A retry reads e.g. "machine 3c1e…: discovered; get machine: unavailable:
// dial tcp 127.0.0.1:1079: connect: connection refused (retry 2 in 430ms)".
func (p Progress) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", p.Kind, p.ID)
	if p.State != "" {
		b.WriteString(": " + p.State)
	}
	if p.Step != "" {
		b.WriteString(", " + p.Step)
		if p.Total > 0 {
			fmt.Fprintf(&b, " %s/%s", bytesString(p.Done), bytesString(p.Total))
		}
	}
	if p.Message != "" {
		b.WriteString(": " + p.Message)
	}
	if p.Err != nil {
		sep := "; "
		if p.State == "" {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%v (retry %d in %s)", sep, p.Err, p.Retry, p.RetryIn.Round(time.Millisecond))
	}
	return b.String()
}

// bytesString formats n bytes in binary units.
func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// WaitOption configures a wait.
type WaitOption func(*waitOptions)

type waitOptions struct {
	progress func(Progress)
	cleaned  bool
	backoff  time.Duration // first delay before a retry
}

// maxBackoff caps the delay between two retries of a wait.
const maxBackoff = 5 * time.Second

// WithProgress calls f each time the state or step of the resource waited
// for changes, including once at the start, and before each retry after a
// transient error (see Progress.Err). f runs on the waiting goroutine and
// should return quickly.
func WithProgress(f func(Progress)) WaitOption {
	return func(o *waitOptions) { o.progress = f }
}

// WaitCleaned makes WaitInstanceDeleted also wait until the instance's
// machine is cleaned: Ready again, or given to another instance.
func WaitCleaned() WaitOption {
	return func(o *waitOptions) { o.cleaned = true }
}

// StateError says that a resource reached a state from which the state
// waited for cannot come: an instance or machine that failed, an instance
// released while waiting for it to run, a machine that was deleted.
type StateError struct {
	// Kind is "machine" or "instance"; ID is the resource's id.
	Kind, ID string
	// State is the state reached, as in Progress.State ("failed",
	// "releasing", "deleted", ...).
	State string
	// Reason is the server's reason, when there is one: an instance's
	// failure_reason, the reason of a machine's last transition.
	Reason string
}

func (e *StateError) Error() string {
	msg := fmt.Sprintf("%s %s is %s", e.Kind, e.ID, e.State)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// WaitMachineState waits until the machine is in one of the states want,
// and returns it as it then was. It fails with a *StateError when the
// machine fails (MACHINE_STATE_FAILED, unless want has it) or is deleted,
// and with the context's error, naming the last state seen, when ctx ends
// first.
//
// It reads the machine once, and then follows WatchService.Watch,
// resuming the stream where it broke off, so no change is missed. A read
// or watch that fails with a transient error (the API unavailable, or a
// connection refused or reset while it restarts) is made again after a
// delay that starts at 250 ms and doubles, with jitter, up to 5 s, until
// ctx ends; any other error (NotFound, PermissionDenied, ...) ends the
// wait at once.
func (c *Client) WaitMachineState(ctx context.Context, machineID string, want []machinev1.MachineState, opts ...WaitOption) (*machinev1.Machine, error) {
	if len(want) == 0 {
		return nil, errors.New("wait for machine: no state to wait for")
	}
	o := newWaitOptions(opts)
	check := func(m *machinev1.Machine) (bool, error) {
		st := m.GetState()
		switch {
		case slices.Contains(want, st):
			return true, nil
		case st == machinev1.MachineState_MACHINE_STATE_FAILED:
			return false, &StateError{Kind: "machine", ID: machineID, State: stateName(st), Reason: c.lastTransitionReason(ctx, machineID)}
		}
		return false, nil
	}
	m, err := c.waitMachine(ctx, machineID, o, check)
	if err != nil {
		return nil, fmt.Errorf("wait for machine %s to be %s: %w", machineID, stateNames(want), err)
	}
	return m, nil
}

// WaitInstanceRunning waits until the instance is Running, and returns
// it. It fails at once with a *StateError, carrying the failure reason,
// when the instance fails, and also when it is released or being
// released, as it will then never run. It follows the instance, and
// retries transient errors, as WaitMachineState does.
func (c *Client) WaitInstanceRunning(ctx context.Context, instanceID string, opts ...WaitOption) (*instancev1.Instance, error) {
	o := newWaitOptions(opts)
	check := func(inst *instancev1.Instance) (bool, error) {
		switch st := inst.GetState(); st {
		case instancev1.InstanceState_INSTANCE_STATE_RUNNING:
			return true, nil
		case instancev1.InstanceState_INSTANCE_STATE_FAILED,
			instancev1.InstanceState_INSTANCE_STATE_RELEASING,
			instancev1.InstanceState_INSTANCE_STATE_RELEASED:
			return false, &StateError{Kind: "instance", ID: instanceID, State: stateName(st), Reason: inst.GetFailureReason()}
		}
		return false, nil
	}
	inst, err := c.waitInstance(ctx, instanceID, o, false, check)
	if err != nil {
		return nil, fmt.Errorf("wait for instance %s to run: %w", instanceID, err)
	}
	return inst, nil
}

// WaitInstanceDeleted waits until a deleted instance is Released (its
// machine cleaned and no longer its own) or gone. With WaitCleaned it also
// waits until that machine is Ready again (or given to another instance).
// An instance whose release fails gives a *StateError with the reason,
// and so does an instance that is Provisioning or Running and so was not
// deleted. It follows the instance, and retries transient errors, as
// WaitMachineState does.
func (c *Client) WaitInstanceDeleted(ctx context.Context, instanceID string, opts ...WaitOption) error {
	o := newWaitOptions(opts)
	var machineID string
	check := func(inst *instancev1.Instance) (bool, error) {
		if id := inst.GetMachineId(); id != "" {
			machineID = id
		}
		switch st := inst.GetState(); st {
		case instancev1.InstanceState_INSTANCE_STATE_RELEASED:
			return true, nil
		case instancev1.InstanceState_INSTANCE_STATE_FAILED,
			instancev1.InstanceState_INSTANCE_STATE_PROVISIONING,
			instancev1.InstanceState_INSTANCE_STATE_RUNNING:
			reason := inst.GetFailureReason()
			if st != instancev1.InstanceState_INSTANCE_STATE_FAILED {
				reason = "it was not deleted: call DeleteInstance first"
			}
			return false, &StateError{Kind: "instance", ID: instanceID, State: stateName(st), Reason: reason}
		}
		return false, nil
	}
	if _, err := c.waitInstance(ctx, instanceID, o, true, check); err != nil {
		return fmt.Errorf("wait for instance %s to be released: %w", instanceID, err)
	}
	if !o.cleaned || machineID == "" {
		return nil
	}
	cleaned := func(m *machinev1.Machine) (bool, error) {
		switch st := m.GetState(); st {
		case machinev1.MachineState_MACHINE_STATE_READY:
			return true, nil
		case machinev1.MachineState_MACHINE_STATE_PROVISIONING, machinev1.MachineState_MACHINE_STATE_ASSIGNED:
			// Allocated again, so cleaned; unless the task is still
			// this instance's, which it cannot be once Released.
			return m.GetTask().GetInstanceId() != instanceID, nil
		case machinev1.MachineState_MACHINE_STATE_FAILED:
			return false, &StateError{Kind: "machine", ID: m.GetId(), State: stateName(st), Reason: c.lastTransitionReason(ctx, m.GetId())}
		}
		return false, nil
	}
	if _, err := c.waitMachine(ctx, machineID, o, cleaned); err != nil {
		return fmt.Errorf("wait for machine %s of instance %s to be cleaned: %w", machineID, instanceID, err)
	}
	return nil
}

func newWaitOptions(opts []WaitOption) *waitOptions {
	o := &waitOptions{backoff: 250 * time.Millisecond}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// waitMachine follows machine id until check says done or fails.
func (c *Client) waitMachine(ctx context.Context, id string, o *waitOptions, check func(*machinev1.Machine) (bool, error)) (*machinev1.Machine, error) {
	var last *machinev1.Machine
	w := &waiter{
		c: c, kind: watchv1.ResourceKind_RESOURCE_KIND_MACHINE, name: "machine", id: id, opts: o,
		get: func(ctx context.Context) (bool, error) {
			resp, err := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
			if err != nil {
				return false, err
			}
			last = resp.Msg.GetMachine()
			return true, nil
		},
		seen: func(ev *watchv1.WatchResponse) bool {
			if ev.GetType() == watchv1.EventType_EVENT_TYPE_DELETED {
				return false
			}
			last = ev.GetMachine()
			return true
		},
		check: func() (bool, error) { return check(last) },
		progress: func() Progress {
			t := last.GetTask()
			return Progress{Kind: "machine", ID: id, State: stateName(last.GetState()),
				Step: t.GetStep(), Done: t.GetDone(), Total: t.GetTotal(), Message: t.GetMessage(), Machine: last}
		},
		gone: func() (bool, error) {
			return false, &StateError{Kind: "machine", ID: id, State: "deleted"}
		},
	}
	if err := w.run(ctx); err != nil {
		return nil, err
	}
	return last, nil
}

// waitInstance follows instance id until check says done or fails. An
// instance that is gone counts as done when goneOK.
func (c *Client) waitInstance(ctx context.Context, id string, o *waitOptions, goneOK bool, check func(*instancev1.Instance) (bool, error)) (*instancev1.Instance, error) {
	var last *instancev1.Instance
	w := &waiter{
		c: c, kind: watchv1.ResourceKind_RESOURCE_KIND_INSTANCE, name: "instance", id: id, opts: o,
		get: func(ctx context.Context) (bool, error) {
			resp, err := c.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: id}))
			if goneOK && IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			last = resp.Msg.GetInstance()
			return true, nil
		},
		seen: func(ev *watchv1.WatchResponse) bool {
			if ev.GetType() == watchv1.EventType_EVENT_TYPE_DELETED {
				return false
			}
			last = ev.GetInstance()
			return true
		},
		check: func() (bool, error) { return check(last) },
		progress: func() Progress {
			t := last.GetTask()
			return Progress{Kind: "instance", ID: id, State: stateName(last.GetState()),
				Step: t.GetStep(), Done: t.GetDone(), Total: t.GetTotal(), Message: t.GetMessage(), Instance: last}
		},
		gone: func() (bool, error) {
			if goneOK {
				return true, nil
			}
			return false, &StateError{Kind: "instance", ID: id, State: "deleted"}
		},
	}
	if err := w.run(ctx); err != nil {
		return nil, err
	}
	return last, nil
}

// waiter follows one resource: a Get first, then the Watch stream of its
// kind, resumed where it broke off.
type waiter struct {
	c    *Client
	kind watchv1.ResourceKind
	name string // "machine" or "instance"
	id   string
	opts *waitOptions

	// get reads the resource; false without an error means it is gone.
	get func(context.Context) (bool, error)
	// seen records the resource of an event about it; false means the
	// event says it is gone.
	seen func(*watchv1.WatchResponse) bool
	// check says whether the resource as last recorded is done, or
	// cannot get there.
	check func() (bool, error)
	// progress describes the resource as last recorded.
	progress func() Progress
	// gone says what the resource's absence means.
	gone func() (bool, error)

	lastProgress *Progress
}

// resumeError marks a broken stream that the waiter resumes; err is why
// it broke.
type resumeError struct{ err error }

func (e *resumeError) Error() string { return e.err.Error() }

func (w *waiter) run(ctx context.Context) error {
	// The Get answers at once when the resource is there already, and
	// fails fast for an unknown id or a caller without access.
	found, err := w.getRetrying(ctx)
	if err != nil {
		return err
	}
	if done, err := w.observe(found); done || err != nil {
		return err
	}
	var rev int64
	b := w.newBackoff()
	for {
		next, err := w.follow(ctx, rev)
		if err == nil {
			return nil
		}
		var re *resumeError
		if !errors.As(err, &re) {
			return err
		}
		if next > rev {
			// Progress was made: start the backoff again.
			b.reset()
		}
		rev = next
		if err := w.pause(ctx, b, re.err); err != nil {
			return err
		}
	}
}

// getRetrying reads the resource, trying again after transient errors
// until ctx ends.
func (w *waiter) getRetrying(ctx context.Context) (bool, error) {
	b := w.newBackoff()
	var last error
	for {
		found, err := w.get(ctx)
		switch {
		case err == nil:
			return found, nil
		case ctx.Err() != nil:
			return false, w.ctxErr(ctx, last)
		case !transient(err):
			return false, err
		}
		last = fmt.Errorf("get %s: %w", w.name, err)
		if err := w.pause(ctx, b, last); err != nil {
			return false, err
		}
	}
}

// transient reports whether err may go away by itself: the API was
// unavailable (which is also what a refused connection gives), or the
// connection broke while the API restarted.
func transient(err error) bool {
	return IsRetryable(err) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// backoff is the capped exponential delay between retries, with jitter.
type backoff struct {
	first, next time.Duration
	tries       int
}

func (w *waiter) newBackoff() *backoff {
	return &backoff{first: w.opts.backoff, next: w.opts.backoff}
}

// reset starts over from the first delay, after a success.
func (b *backoff) reset() { b.next, b.tries = b.first, 0 }

// delay returns the next delay: between half and all of the current one,
// which doubles up to maxBackoff.
func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, maxBackoff)
	b.tries++
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// pause reports the retry that err calls for and sleeps before it. It
// returns the context's error, naming err, when ctx ends first.
func (w *waiter) pause(ctx context.Context, b *backoff, err error) error {
	d := b.delay()
	if f := w.opts.progress; f != nil {
		p := Progress{Kind: w.name, ID: w.id}
		if w.lastProgress != nil {
			p = *w.lastProgress
		}
		p.Err, p.Retry, p.RetryIn = err, b.tries, d
		f(p)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return w.ctxErr(ctx, err)
	case <-t.C:
		return nil
	}
}

// observe reports the resource as last recorded (or gone) and checks it.
func (w *waiter) observe(present bool) (bool, error) {
	if !present {
		return w.gone()
	}
	p := w.progress()
	if l := w.lastProgress; l == nil || l.State != p.State || l.Step != p.Step || l.Done != p.Done ||
		l.Total != p.Total || l.Message != p.Message {
		w.lastProgress = &p
		if f := w.opts.progress; f != nil {
			f(p)
		}
	}
	return w.check()
}

// follow reads one Watch stream from rev (0: from a snapshot). It returns
// nil when done, a *resumeError with the revision to resume from when the
// stream broke, or the error that ends the wait.
func (w *waiter) follow(ctx context.Context, rev int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.open(ctx, rev)
	if err != nil {
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			rev = 0
		}
		return rev, w.streamErr(ctx, err)
	}
	defer stream.Close()
	synced := rev > 0
	var inSnapshot bool
	for stream.Receive() {
		ev := stream.Msg()
		switch ev.GetType() {
		case watchv1.EventType_EVENT_TYPE_SYNCED:
			synced, rev = true, ev.GetRevision()
			if !inSnapshot {
				// The snapshot does not have it (a released instance is
				// left out): ask for it.
				found, err := w.get(ctx)
				if err != nil {
					if ctx.Err() == nil && !transient(err) {
						return rev, err
					}
					return rev, w.streamErr(ctx, fmt.Errorf("get %s: %w", w.name, err))
				}
				if done, err := w.observe(found); done || err != nil {
					return rev, err
				}
			}
			continue
		case watchv1.EventType_EVENT_TYPE_EXISTING:
			if ev.GetId() == w.id && ev.GetKind() == w.kind {
				inSnapshot = true
			}
		}
		// Revisions of a snapshot only count once it is complete.
		if synced {
			rev = max(rev, ev.GetRevision())
		}
		if ev.GetId() != w.id || ev.GetKind() != w.kind {
			continue
		}
		if done, err := w.observe(w.seen(ev)); done || err != nil {
			return rev, err
		}
	}
	err = stream.Err()
	if !synced || connect.CodeOf(err) == connect.CodeOutOfRange {
		// A snapshot cut short, or changes no longer kept since rev:
		// start over with a fresh snapshot.
		rev = 0
	}
	return rev, w.streamErr(ctx, err)
}

// watchStream is what follow reads of a Watch call.
type watchStream interface {
	Receive() bool
	Msg() *watchv1.WatchResponse
	Err() error
	Close() error
}

// open opens the Watch stream of the waiter's kind from rev.
func (w *waiter) open(ctx context.Context, rev int64) (watchStream, error) {
	stream, err := w.c.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{
		Kinds: []watchv1.ResourceKind{w.kind}, SinceRevision: rev,
	}))
	if err != nil {
		return nil, err
	}
	return stream, nil
}

// streamErr classifies the end of a stream: the context's end and
// permanent errors end the wait, the rest is resumed.
func (w *waiter) streamErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return w.ctxErr(ctx, nil)
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeNotFound, connect.CodeUnimplemented, connect.CodeFailedPrecondition:
		return err
	}
	if err == nil {
		// A watch never ends by itself: a nil error is a cut connection too.
		return &resumeError{err: errors.New("watch: the stream ended")}
	}
	return &resumeError{err: fmt.Errorf("watch: %w", err)}
}

// ctxErr is the context's error, with the last state seen and, when the
// waiter was about to retry, the error it retries (which it also wraps).
func (w *waiter) ctxErr(ctx context.Context, last error) error {
	err := context.Cause(ctx)
	var seen string
	if w.lastProgress != nil {
		seen = "last seen: " + w.lastProgress.State + stepSuffix(w.lastProgress.Step)
	}
	switch {
	case last != nil && seen != "":
		return fmt.Errorf("%w (%s; last error: %w)", err, seen, last)
	case last != nil:
		return fmt.Errorf("%w (last error: %w)", err, last)
	case seen != "":
		return fmt.Errorf("%w (%s)", err, seen)
	}
	return err
}

func stepSuffix(step string) string {
	if step == "" {
		return ""
	}
	return ", step " + step
}

// stateName is a state enum's value in lower case without its type
// prefix: MACHINE_STATE_READY is "ready".
func stateName[E interface{ String() string }](st E) string {
	s := st.String()
	for _, p := range []string{"MACHINE_STATE_", "INSTANCE_STATE_"} {
		s = strings.TrimPrefix(s, p)
	}
	return strings.ToLower(s)
}

func stateNames(sts []machinev1.MachineState) string {
	names := make([]string, len(sts))
	for i, st := range sts {
		names[i] = stateName(st)
	}
	return strings.Join(names, " or ")
}

// lastTransitionReason returns the reason of the machine's last state
// transition, or "" if it cannot be read.
func (c *Client) lastTransitionReason(ctx context.Context, id string) string {
	var reason string
	for tr, err := range c.AllMachineTransitions(ctx, &machinev1.ListMachineTransitionsRequest{MachineId: id, PageSize: 1000}) {
		if err != nil {
			return reason
		}
		reason = tr.GetReason()
	}
	return reason
}
