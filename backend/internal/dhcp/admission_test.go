package dhcp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is a fake clock for the admission's estimates. It starts at the
// real time, so that the real deadlines of the tests' contexts, set in
// minutes from it, do not pass while a test runs.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestAdmission(t *testing.T, slots int) (*admission, *clock) {
	t.Helper()
	a, err := newAdmission(slots, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Now()}
	a.now = clk.Now
	return a, clk
}

// learn runs one call that holds its slot for d, a slot being free.
func learn(t *testing.T, a *admission, clk *clock, d time.Duration) {
	t.Helper()
	done, err := a.admit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(d)
	done()
}

// fill takes n slots, which must be free, and returns the functions that
// give them back.
func fill(t *testing.T, a *admission, n int) []func() {
	t.Helper()
	var dones []func()
	for range n {
		done, err := a.admit(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	return dones
}

// waitQueued waits until n calls wait for a slot.
func waitQueued(t *testing.T, a *admission, n int) {
	t.Helper()
	for {
		a.mu.Lock()
		q := len(a.queue)
		a.mu.Unlock()
		if q == n {
			return
		}
		if t.Context().Err() != nil {
			t.Fatalf("%d calls waiting, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// admitted is what a call that waits in a goroutine gets.
type admitted struct {
	done func()
	err  error
}

// admitAsync admits a call of ctx in a goroutine; the result comes on the
// channel.
func admitAsync(ctx context.Context, a *admission) <-chan admitted {
	ch := make(chan admitted, 1)
	go func() {
		done, err := a.admit(ctx)
		ch <- admitted{done, err}
	}()
	return ch
}

// state is the admission's slots taken and calls waiting.
func state(a *admission) (running, queued int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running, len(a.queue)
}

// TestAdmissionDeadline checks which calls are refused on arrival: those
// that find every slot taken and would finish after their deadline, by
// the estimate (waiting+1)/slots×avg + avg. Two slots, calls of 10 min.
func TestAdmissionDeadline(t *testing.T) {
	t.Parallel()
	const avg = 10 * time.Minute
	tests := map[string]struct {
		busy     int           // slots taken
		ahead    int           // calls waiting already
		deadline time.Duration // from arrival; 0 for none
		refused  bool
	}{
		"a free slot, however short the deadline":  {busy: 1, deadline: time.Minute},
		"every slot taken, none waiting: 15 min":   {busy: 2, deadline: 16 * time.Minute},
		"every slot taken, deadline before 15 min": {busy: 2, deadline: 14 * time.Minute, refused: true},
		"two waiting: 25 min":                      {busy: 2, ahead: 2, deadline: 26 * time.Minute},
		"two waiting, deadline before 25 min":      {busy: 2, ahead: 2, deadline: 24 * time.Minute, refused: true},
		"two waiting, no deadline":                 {busy: 2, ahead: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, clk := newTestAdmission(t, 2)
			learn(t, a, clk, avg)
			dones := fill(t, a, tc.busy)
			var before []<-chan admitted
			for i := range tc.ahead {
				before = append(before, admitAsync(t.Context(), a))
				waitQueued(t, a, i+1)
			}
			ctx := t.Context()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, clk.Now().Add(tc.deadline))
				defer cancel()
			}
			call := admitAsync(ctx, a)
			if tc.refused {
				got := <-call
				if connect.CodeOf(got.err) != connect.CodeResourceExhausted || !strings.Contains(got.err.Error(), "--max-lease-calls") {
					t.Fatalf("admit: %v; want resource_exhausted naming --max-lease-calls", got.err)
				}
				if n := testutil.ToFloat64(a.refused.WithLabelValues(refusedDeadline)); n != 1 {
					t.Errorf("refused (deadline) = %v, want 1", n)
				}
			} else {
				if tc.busy == a.slots {
					waitQueued(t, a, tc.ahead+1)
					if n := testutil.ToFloat64(a.queued); n != float64(tc.ahead+1) {
						t.Errorf("queued gauge = %v, want %d", n, tc.ahead+1)
					}
				}
				for _, done := range dones {
					done()
				}
				dones = nil
				for _, ch := range before {
					got := <-ch
					if got.err != nil {
						t.Fatalf("a call waiting before: %v", got.err)
					}
					got.done()
				}
				before = nil
				got := <-call
				if got.err != nil {
					t.Fatalf("admit: %v, want a slot", got.err)
				}
				got.done()
			}
			for _, done := range dones {
				done()
			}
			for _, ch := range before {
				if got := <-ch; got.err == nil {
					got.done()
				}
			}
			if running, queued := state(a); running != 0 || queued != 0 {
				t.Errorf("at the end %d slots taken and %d calls waiting, want none", running, queued)
			}
		})
	}
}

// TestAdmissionOrder checks that calls get slots in the order they came.
func TestAdmissionOrder(t *testing.T) {
	t.Parallel()
	a, _ := newTestAdmission(t, 1)
	hold := fill(t, a, 1)
	const n = 5
	order := make(chan int, n)
	for i := range n {
		go func() {
			done, err := a.admit(t.Context())
			if err != nil {
				order <- -1
				return
			}
			order <- i
			done()
		}()
		waitQueued(t, a, i+1)
	}
	if g := testutil.ToFloat64(a.inFlight); g != 1 {
		t.Errorf("in-flight gauge = %v, want 1", g)
	}
	hold[0]()
	for want := range n {
		if got := <-order; got != want {
			t.Fatalf("call %d got a slot, want call %d", got, want)
		}
	}
	waitQueued(t, a, 0)
	if running, _ := state(a); running != 0 {
		t.Errorf("%d slots taken at the end, want 0", running)
	}
}

// TestAdmissionAverage checks the moving average of call durations.
func TestAdmissionAverage(t *testing.T) {
	t.Parallel()
	a, clk := newTestAdmission(t, 1)
	for _, step := range []struct{ d, want time.Duration }{
		{80 * time.Second, 80 * time.Second}, // the first call sets it
		{0, 70 * time.Second},                // then each moves it an eighth of the way
		{150 * time.Second, 80 * time.Second},
	} {
		learn(t, a, clk, step.d)
		if a.avg != step.want {
			t.Fatalf("after a call of %s the average is %s, want %s", step.d, a.avg, step.want)
		}
	}
}

// TestAdmissionReleasesOnFailure checks that a call that fails or panics
// gives its slot to the next call.
func TestAdmissionReleasesOnFailure(t *testing.T) {
	t.Parallel()
	errFailed := errors.New("failed")
	tests := map[string]func() error{
		"error": func() error { return errFailed },
		"panic": func() error { panic("handler bug") },
	}
	for name, fail := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, _ := newTestAdmission(t, 1)
			go1 := make(chan struct{})
			first := make(chan error, 1)
			go func() {
				defer func() {
					if p := recover(); p != nil {
						first <- errors.New("panicked")
					}
				}()
				first <- func() error {
					done, err := a.admit(t.Context())
					if err != nil {
						return err
					}
					defer done()
					<-go1
					return fail()
				}()
			}()
			for running, _ := state(a); running != 1; running, _ = state(a) {
				time.Sleep(time.Millisecond) // until the first call holds the slot
			}
			next := admitAsync(t.Context(), a)
			waitQueued(t, a, 1)
			close(go1)
			if err := <-first; err == nil {
				t.Fatal("the first call did not fail")
			}
			got := <-next
			if got.err != nil {
				t.Fatalf("the next call: %v, want the slot", got.err)
			}
			got.done()
			if running, queued := state(a); running != 0 || queued != 0 {
				t.Errorf("at the end %d slots taken and %d calls waiting, want none", running, queued)
			}
		})
	}
}

// TestAdmissionGaveUp checks that a call whose caller cancels it, or whose
// deadline passes, while it waits is refused, counted, and leaves no slot
// taken.
func TestAdmissionGaveUp(t *testing.T) {
	t.Parallel()
	tests := map[string]func(context.Context) (context.Context, func()){
		"cancelled": func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancel(ctx)
			return ctx, cancel
		},
		"deadline passed": func(ctx context.Context) (context.Context, func()) {
			// No call has finished yet, so nothing predicts a miss:
			// the call waits until its deadline passes.
			ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			return ctx, func() { <-ctx.Done(); cancel() }
		},
	}
	for name, giveUp := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, _ := newTestAdmission(t, 1)
			hold := fill(t, a, 1)
			ctx, stop := giveUp(t.Context())
			call := admitAsync(ctx, a)
			waitQueued(t, a, 1)
			stop()
			got := <-call
			if connect.CodeOf(got.err) != connect.CodeResourceExhausted || !strings.Contains(got.err.Error(), "--max-lease-calls") {
				t.Fatalf("admit: %v; want resource_exhausted naming --max-lease-calls", got.err)
			}
			if n := testutil.ToFloat64(a.refused.WithLabelValues(refusedGaveUp)); n != 1 {
				t.Errorf("refused (gave_up) = %v, want 1", n)
			}
			if n := testutil.ToFloat64(a.queued); n != 0 {
				t.Errorf("queued gauge = %v, want 0", n)
			}
			hold[0]()
			if running, queued := state(a); running != 0 || queued != 0 {
				t.Errorf("at the end %d slots taken and %d calls waiting, want none", running, queued)
			}
		})
	}
}

// TestAdmissionCancelRacesRelease cancels waiting calls just as the slot
// they wait for is handed to them: whichever wins, no slot stays taken.
func TestAdmissionCancelRacesRelease(t *testing.T) {
	t.Parallel()
	a, _ := newTestAdmission(t, 1)
	for range 300 {
		hold := fill(t, a, 1)
		ctx, cancel := context.WithCancel(t.Context())
		call := admitAsync(ctx, a)
		waitQueued(t, a, 1)
		released := make(chan struct{})
		go func() {
			hold[0]()
			close(released)
		}()
		cancel()
		if got := <-call; got.err == nil {
			got.done()
		}
		<-released
		if running, queued := state(a); running != 0 || queued != 0 {
			t.Fatalf("%d slots taken and %d calls waiting, want none", running, queued)
		}
	}
}
