package daemon

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Timeouts a daemon's HTTP server can hit: the timeout label of its
// timeouts counter.
const (
	TimeoutWrite = "write"
	TimeoutIdle  = "idle"
)

// HTTPTimeouts bound the connections of an HTTP server.
type HTTPTimeouts struct {
	// Write is how long writing a response may take (for a daemon that
	// extends it as a response makes progress, how long it may stall).
	Write time.Duration
	// Idle is how long a connection may stay open without a request.
	Idle time.Duration
}

// AddFlags defines --<prefix>write-timeout and --<prefix>idle-timeout on
// fs, with t's values as defaults; writeUsage describes the first.
func (t *HTTPTimeouts) AddFlags(fs *flag.FlagSet, prefix, writeUsage string) {
	fs.DurationVar(&t.Write, prefix+"write-timeout", t.Write, writeUsage)
	fs.DurationVar(&t.Idle, prefix+"idle-timeout", t.Idle, "how long a connection may stay open without a request")
}

// Check reports each timeout below one second, naming its flag.
func (t HTTPTimeouts) Check(prefix string) []error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"write-timeout", t.Write}, {"idle-timeout", t.Idle}} {
		if f.d < time.Second {
			errs = append(errs, fmt.Errorf("%s%s: %s; give at least 1s", prefix, f.name, f.d))
		}
	}
	return errs
}

// TimeoutHits counts what an HTTP server's timeouts cut off: connections
// closed for idling (through the server's ConnState hook) and responses
// that ran out of time to write (reported with Write).
type TimeoutHits struct {
	hits      *prometheus.CounterVec
	idle      time.Duration
	idleSince sync.Map // net.Conn -> time.Time
}

// NewTimeoutCounter returns the counter name, labelled by timeout (write,
// idle), with both series at zero.
func NewTimeoutCounter(name, help string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"timeout"})
	c.WithLabelValues(TimeoutWrite)
	c.WithLabelValues(TimeoutIdle)
	return c
}

// NewTimeoutHits counts into counter (see NewTimeoutCounter) for a server
// whose idle timeout is idle.
func NewTimeoutHits(counter *prometheus.CounterVec, idle time.Duration) *TimeoutHits {
	return &TimeoutHits{hits: counter, idle: idle}
}

// ConnState is the server's ConnState hook: it counts a connection closed
// after idling for the idle timeout.
func (h *TimeoutHits) ConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateIdle:
		h.idleSince.Store(c, time.Now())
	case http.StateActive:
		h.idleSince.Delete(c)
	case http.StateClosed, http.StateHijacked:
		if since, ok := h.idleSince.LoadAndDelete(c); ok && time.Since(since.(time.Time)) >= h.idle {
			h.hits.WithLabelValues(TimeoutIdle).Inc()
		}
	}
}

// Write counts a response cut off by the write timeout.
func (h *TimeoutHits) Write() { h.hits.WithLabelValues(TimeoutWrite).Inc() }
