package dhcpd

import (
	"sync"
	"time"
)

// logThrottle lets one message per key through every interval, and counts
// the ones it holds back. Keys come from a small fixed set (Connect codes,
// drop reasons), so its map stays small.
type logThrottle struct {
	every time.Duration

	mu   sync.Mutex
	keys map[string]*throttled
}

type throttled struct {
	last       time.Time
	suppressed int
}

func newLogThrottle(every time.Duration) *logThrottle {
	return &logThrottle{every: every, keys: make(map[string]*throttled)}
}

// allow reports whether a message with key may be logged at now, and how
// many were held back since the last one that was.
func (t *logThrottle) allow(key string, now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.keys[key]
	if s == nil {
		t.keys[key] = &throttled{last: now}
		return true, 0
	}
	if now.Sub(s.last) < t.every {
		s.suppressed++
		return false, 0
	}
	suppressed = s.suppressed
	s.last, s.suppressed = now, 0
	return true, suppressed
}
