package dhcp

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxLeaseCalls is how many Lease and LeaseBatch calls one API
// process lets decide at once unless told otherwise: the default of
// --database-max-conns. A call runs its statements one after another, so
// more calls at once than connections would only wait inside the
// connection pool, where a call whose caller has given up still takes its
// turn.
const DefaultMaxLeaseCalls = 8

// Reasons of carbide_dhcp_lease_calls_refused_total.
const (
	// refusedDeadline: on arrival, the expected wait for a slot and the
	// expected time to decide would take the call past its deadline.
	refusedDeadline = "deadline"
	// refusedGaveUp: the call's deadline passed, or its caller cancelled
	// it, while it waited for a slot.
	refusedGaveUp = "gave_up"
)

// smoothing is the weight of the newest call in the moving average of
// call durations, as in TCP's smoothed round-trip time (RFC 6298): recent
// enough to follow a slower database within a few dozen calls, smooth
// enough that one slow call does not refuse the next ones.
const smoothing = 1.0 / 8

// admission bounds the lease calls of one API process that decide at once
// to slots; the others wait for a slot in the order they came. Under
// overload it refuses at once a call that would not finish before its
// deadline, rather than run a transaction whose answer nobody awaits: the
// DHCP client sends its request again, and the calls that are admitted
// still finish in time, so the answers per second stay near what the
// database sustains.
//
// The expected time of a call is avg, the moving average of how long
// recent calls held their slot. A call that finds every slot taken and k
// calls waiting expects to wait for k+1 calls to finish, slots at a time,
// and then to take avg itself: (k+1)/slots×avg + avg. A call that finds a
// slot free is always admitted, so that the average keeps learning
// whatever it says.
type admission struct {
	slots int
	now   func() time.Time

	mu      sync.Mutex
	running int       // calls holding a slot, or handed one
	queue   []*waiter // in arrival order
	avg     time.Duration

	inFlight prometheus.Gauge
	queued   prometheus.Gauge
	refused  *prometheus.CounterVec
	wait     prometheus.Histogram
}

// waiter is a call waiting for a slot.
type waiter struct {
	ready chan struct{} // closed when a finishing call hands it its slot
}

// newAdmission returns an admission of slots calls at once (0 means
// DefaultMaxLeaseCalls) that registers its metrics with reg.
func newAdmission(slots int, reg prometheus.Registerer) (*admission, error) {
	if slots <= 0 {
		slots = DefaultMaxLeaseCalls
	}
	a := &admission{
		slots: slots,
		now:   time.Now,
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carbide_dhcp_lease_calls_in_flight",
			Help: "Lease and LeaseBatch calls deciding now; at most --max-lease-calls.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carbide_dhcp_lease_calls_queued",
			Help: "Lease and LeaseBatch calls waiting for one of the --max-lease-calls slots.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dhcp_lease_calls_refused_total",
			Help: "Lease and LeaseBatch calls refused (resource_exhausted) because the API was overloaded, by reason: " +
				"deadline (refused on arrival: waiting for a slot and deciding would take it past its deadline), " +
				"gave_up (its deadline passed, or its caller cancelled, while it waited for a slot).",
		}, []string{"reason"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carbide_dhcp_lease_call_wait_seconds",
			Help:    "How long admitted Lease and LeaseBatch calls waited for a slot (--max-lease-calls).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, reason := range []string{refusedDeadline, refusedGaveUp} {
		a.refused.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{a.inFlight, a.queued, a.refused, a.wait} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register lease admission metrics: %w", err)
		}
	}
	return a, nil
}

// admit returns when the call of ctx holds a slot, with the function that
// gives the slot back once the call is done; or at once with an error
// when the call is refused. A call without a deadline waits as long as it
// takes.
func (a *admission) admit(ctx context.Context) (done func(), err error) {
	arrived := a.now()
	a.mu.Lock()
	if a.running < a.slots {
		a.running++
		a.gauges()
		a.mu.Unlock()
		a.wait.Observe(0)
		return a.release(arrived), nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		if need := a.expected(len(a.queue)); arrived.Add(need).After(deadline) {
			running, waiting := a.running, len(a.queue)
			a.mu.Unlock()
			return nil, a.refuse(ctx, refusedDeadline, fmt.Errorf(
				"the API is overloaded: %d lease calls are deciding and %d waiting, so this one would finish in about %s, "+
					"after its deadline (in %s); the DHCP client will ask again. "+
					"If the database has capacity to spare, raise --max-lease-calls of carbide-api with --database-max-conns",
				running, waiting, need.Round(time.Millisecond), deadline.Sub(arrived).Round(time.Millisecond)))
		}
	}
	w := &waiter{ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	a.gauges()
	a.mu.Unlock()

	select {
	case <-w.ready:
	case <-ctx.Done():
	}
	a.mu.Lock()
	if i := slices.Index(a.queue, w); i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
		a.gauges()
		a.mu.Unlock()
		return nil, a.refuse(ctx, refusedGaveUp, a.gaveUp(ctx, arrived))
	}
	if ctx.Err() != nil {
		// Handed a slot as it gave up: the slot goes to the next call.
		a.next()
		a.mu.Unlock()
		return nil, a.refuse(ctx, refusedGaveUp, a.gaveUp(ctx, arrived))
	}
	a.mu.Unlock()
	start := a.now()
	a.wait.Observe(start.Sub(arrived).Seconds())
	return a.release(start), nil
}

// expected is how long a call that finds every slot taken and ahead calls
// waiting expects to wait and decide; 0 before any call has finished.
// a.mu is held.
func (a *admission) expected(ahead int) time.Duration {
	return time.Duration(ahead+1)*a.avg/time.Duration(a.slots) + a.avg
}

// release returns the function that ends a call that has held its slot
// since start: it adds the call's duration to the average and hands the
// slot on.
func (a *admission) release(start time.Time) func() {
	return func() {
		d := a.now().Sub(start)
		a.mu.Lock()
		if a.avg == 0 {
			a.avg = d
		} else {
			a.avg += time.Duration(smoothing * float64(d-a.avg))
		}
		a.next()
		a.mu.Unlock()
	}
}

// next hands a finishing call's slot to the call that has waited longest,
// or frees it. a.mu is held.
func (a *admission) next() {
	if len(a.queue) > 0 {
		close(a.queue[0].ready)
		a.queue = a.queue[1:]
	} else {
		a.running--
	}
	a.gauges()
}

// gauges brings the gauges up to date. a.mu is held.
func (a *admission) gauges() {
	a.inFlight.Set(float64(a.running))
	a.queued.Set(float64(len(a.queue)))
}

// gaveUp is the error of a call whose caller gave up while it waited.
func (a *admission) gaveUp(ctx context.Context, arrived time.Time) error {
	return fmt.Errorf("the API is overloaded: the call waited %s for one of the %d lease call slots and its caller gave up (%w); "+
		"if the database has capacity to spare, raise --max-lease-calls of carbide-api with --database-max-conns",
		a.now().Sub(arrived).Round(time.Millisecond), a.slots, context.Cause(ctx))
}

// refuse counts a refused call and returns its error. A refused call did
// nothing, so it leaves no audit record: shedding load costs the database
// no write.
func (a *admission) refuse(ctx context.Context, reason string, err error) error {
	a.refused.WithLabelValues(reason).Inc()
	audit.Shed(ctx)
	return connect.NewError(connect.CodeResourceExhausted, err)
}
