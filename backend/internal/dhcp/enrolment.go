package dhcp

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// EnrolLimit bounds how fast DHCP enrols MACs it has never seen, per
// segment and relay (the daemon's own link counts as one relay), so that a
// flood of made-up MACs cannot fill the machine tables. Each API process
// keeps its own counts.
type EnrolLimit struct {
	// Rate is how many new machines per second one relay of a segment may
	// enrol once its burst is spent; 0 means no limit.
	Rate float64
	// Burst is how many it may enrol at once, e.g. a rack powered on
	// together.
	Burst int
}

// enrolLimiter is a token bucket per segment and relay.
type enrolLimiter struct {
	limit   EnrolLimit
	refused *prometheus.CounterVec

	mu      sync.Mutex
	buckets map[enrolKey]*bucket
}

type enrolKey struct {
	segment uuid.UUID
	relay   string
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets is how many buckets the limiter keeps before it forgets the
// full ones (a full bucket is the same as none).
const maxBuckets = 4096

func newEnrolLimiter(limit EnrolLimit, reg prometheus.Registerer) (*enrolLimiter, error) {
	l := &enrolLimiter{
		limit: limit,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_enrolments_refused_total",
			Help: "MACs the DHCP service did not enrol as new machines because their segment and relay had enrolled --enrol-burst at once and --enrol-rate per second since, by segment name.",
		}, []string{"segment"}),
		buckets: make(map[enrolKey]*bucket),
	}
	if err := reg.Register(l.refused); err != nil {
		return nil, fmt.Errorf("register enrolment metrics: %w", err)
	}
	return l, nil
}

// take admits up to n enrolments from origin o on seg and returns how many
// it admitted; it counts the others as refused.
func (l *enrolLimiter) take(seg *ipam.Segment, o *dhcpv1.Origin, n int) int {
	return l.takeAt(time.Now(), seg, o, n)
}

// takeAt is take at the given time.
func (l *enrolLimiter) takeAt(now time.Time, seg *ipam.Segment, o *dhcpv1.Origin, n int) int {
	if l.limit.Rate <= 0 || n == 0 {
		return n
	}
	key := enrolKey{segment: seg.ID, relay: o.GetRelayAddress()}
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.forgetFull(now)
		}
		b = &bucket{tokens: float64(l.limit.Burst), at: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(l.limit.Burst), b.tokens+now.Sub(b.at).Seconds()*l.limit.Rate)
	b.at = now
	admitted := min(n, int(b.tokens))
	b.tokens -= float64(admitted)
	l.mu.Unlock()
	if refused := n - admitted; refused > 0 {
		l.refused.WithLabelValues(seg.Name).Add(float64(refused))
	}
	return admitted
}

// allows reports whether origin o on seg may enrol a MAC now, without
// taking the enrolment (an offer to a new MAC: its REQUEST takes it); it
// counts a refusal when not.
func (l *enrolLimiter) allows(seg *ipam.Segment, o *dhcpv1.Origin) bool {
	return l.allowsAt(time.Now(), seg, o)
}

// allowsAt is allows at the given time.
func (l *enrolLimiter) allowsAt(now time.Time, seg *ipam.Segment, o *dhcpv1.Origin) bool {
	if l.limit.Rate <= 0 {
		return true
	}
	key := enrolKey{segment: seg.ID, relay: o.GetRelayAddress()}
	l.mu.Lock()
	ok := true
	if b := l.buckets[key]; b != nil {
		ok = b.tokens+now.Sub(b.at).Seconds()*l.limit.Rate >= 1
	} else {
		ok = l.limit.Burst >= 1
	}
	l.mu.Unlock()
	if !ok {
		l.refused.WithLabelValues(seg.Name).Inc()
	}
	return ok
}

// forgetFull drops the buckets that have refilled; l.mu is held.
func (l *enrolLimiter) forgetFull(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.limit.Rate >= float64(l.limit.Burst) {
			delete(l.buckets, k)
		}
	}
}

// errEnrolRefused marks the error of a request whose MAC was not enrolled.
var errEnrolRefused = errors.New("not enrolled")

// refusedError is the error of a request whose MAC was not enrolled.
func (l *enrolLimiter) refusedError(seg *ipam.Segment, o *dhcpv1.Origin, mac string) error {
	from := "the daemon's own link"
	if r := o.GetRelayAddress(); r != "" {
		from = "relay " + r
	}
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"mac %s %w: segment %s has enrolled %d new machines from %s at once and %g per second since, its limit; "+
			"the client's next request may be enrolled, or raise --enrol-burst and --enrol-rate of carbide-api if this many new machines are expected",
		mac, errEnrolRefused, seg.Name, l.limit.Burst, from, l.limit.Rate))
}
