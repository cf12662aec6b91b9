package dnsd

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is response rate limiting per client network (an IPv4 /24
// or an IPv6 /56): a token bucket of rate responses a second and burst
// tokens each. It keeps at most maxClients buckets; when full, it forgets
// the buckets that have refilled (they hold nothing a new bucket would
// not), and if none has, starts over, so memory stays bounded under a
// flood of spoofed sources.
type rateLimiter struct {
	rate, burst float64
	maxClients  int
	now         func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate, burst, maxClients int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = rate
	}
	return &rateLimiter{
		rate: float64(rate), burst: float64(burst), maxClients: maxClients,
		now: time.Now, buckets: make(map[netip.Prefix]*bucket),
	}
}

// clientNet is the network a client's responses are counted against.
func clientNet(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 56
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// allow takes a token for a response to a; a nil limiter allows all.
func (l *rateLimiter) allow(a netip.Addr) bool {
	if l == nil {
		return true
	}
	key := clientNet(a)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxClients {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *rateLimiter) prune(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxClients {
		clear(l.buckets)
	}
}
