package dnsd

import (
	"strconv"
	"sync"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a query gets no answer: the reason label of
// carbide_dns_drops_total.
const (
	reasonMalformed   = "malformed"    // does not parse as a DNS message
	reasonResponse    = "response"     // a response (QR set), not a query
	reasonRateLimited = "rate_limited" // over --rrl-rate for its network
	reasonPanic       = "panic"        // answering it failed; a bug, logged
	reasonSendError   = "send_error"   // writing the answer failed
)

// Metrics are the daemon's Prometheus metrics. Zone transfers count
// theirs (carbide_dns_transfers_total, carbide_dns_notifies_total) in
// package xfr.
type Metrics struct {
	queries      *prometheus.CounterVec
	querySeconds prometheus.Histogram
	drops        *prometheus.CounterVec
	zoneRecords  *prometheus.GaugeVec
	zones        prometheus.Gauge
	revision     prometheus.Gauge
	streamBreaks prometheus.Counter

	mu       sync.Mutex
	counters map[[2]uint16]prometheus.Counter
	zoneSet  map[string]bool
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dns_queries_total",
			Help: "Queries answered, by query type and response code.",
		}, []string{"qtype", "rcode"}),
		querySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carbide_dns_query_seconds",
			Help:    "Time from a query read to its answer written.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .01, .1},
		}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dns_drops_total",
			Help: "Packets left without an answer, by reason (malformed, response, rate_limited, panic, send_error).",
		}, []string{"reason"}),
		zoneRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carbide_dns_zone_records",
			Help: "Records of each zone, the SOA included.",
		}, []string{"zone"}),
		zones: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carbide_dns_zones",
			Help: "Zones served.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carbide_dns_revision",
			Help: "API revision of the last change applied.",
		}),
		streamBreaks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_dns_stream_breaks_total",
			Help: "Times the Watch stream broke (or could not be opened) after the daemon had synced.",
		}),
		counters: make(map[[2]uint16]prometheus.Counter),
		zoneSet:  make(map[string]bool),
	}
	for _, r := range []string{reasonMalformed, reasonResponse, reasonRateLimited, reasonPanic, reasonSendError} {
		m.drops.WithLabelValues(r)
	}
	if err := daemon.Register(reg, m.queries, m.querySeconds, m.drops, m.zoneRecords, m.zones,
		m.revision, m.streamBreaks); err != nil {
		return nil, err
	}
	return m, nil
}

// query returns the counter of answers to qtype with rcode.
func (m *Metrics) query(qtype uint16, rcode int) prometheus.Counter {
	key := [2]uint16{qtype, uint16(rcode)}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.counters[key]
	if c == nil {
		t, ok := dns.TypeToString[qtype]
		if !ok {
			t = "TYPE" + strconv.Itoa(int(qtype))
		}
		r, ok := dns.RcodeToString[rcode]
		if !ok {
			r = strconv.Itoa(rcode)
		}
		c = m.queries.WithLabelValues(t, r)
		m.counters[key] = c
	}
	return c
}

// newLagGauge is carbide_dns_stream_lag_seconds, read from lag.
func newLagGauge(lag func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "carbide_dns_stream_lag_seconds",
		Help: "Seconds since the Watch stream was last known current: 0 while connected and synced, growing while it is down or before the first sync.",
	}, lag)
}

func (m *Metrics) drop(reason string) { m.drops.WithLabelValues(reason).Inc() }

func (m *Metrics) observe(start time.Time) { m.querySeconds.Observe(time.Since(start).Seconds()) }

// storeChanged updates the zone gauges; the store calls it under its lock.
func (m *Metrics) storeChanged(s *Store) {
	m.zones.Set(float64(len(s.zones)))
	m.revision.Set(float64(s.revision))
	for origin := range m.zoneSet {
		if s.zones[origin] == nil {
			m.zoneRecords.DeleteLabelValues(origin)
			delete(m.zoneSet, origin)
		}
	}
	for origin, z := range s.zones {
		m.zoneSet[origin] = true
		m.zoneRecords.WithLabelValues(origin).Set(float64(z.records + 1))
	}
}
