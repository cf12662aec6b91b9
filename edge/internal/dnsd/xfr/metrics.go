package xfr

import (
	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/prometheus/client_golang/prometheus"
)

// Results of a transfer request: the result label of
// carbide_dns_transfers_total.
const (
	resultFull        = "full"         // the whole zone (AXFR, or IXFR falling back)
	resultIncremental = "incremental"  // IXFR from the journal
	resultUpToDate    = "up_to_date"   // IXFR from a client at the current serial or newer: one SOA
	resultUDPSOA      = "udp_soa"      // IXFR over UDP from a client that is behind: one SOA, retry over TCP
	resultRefused     = "refused"      // client outside --allow-transfer
	resultTSIGMissing = "tsig_missing" // unsigned while keys are configured
	resultTSIGBad     = "tsig_bad"     // unknown key or algorithm, wrong MAC or time
	resultNotAuth     = "not_auth"     // not a zone this server serves
	resultMalformed   = "malformed"    // no or bad question, IXFR without SOA, AXFR over UDP
	resultFailed      = "failed"       // writing to the client failed part way
)

// Results of an outgoing NOTIFY: the result label of
// carbide_dns_notifies_total.
const (
	notifyAcked      = "acked"      // the target answered NOERROR
	notifyRejected   = "rejected"   // the target answered with an error rcode
	notifyUnanswered = "unanswered" // no answer after every try
)

// metrics are the package's Prometheus metrics.
type metrics struct {
	transfers *prometheus.CounterVec
	seconds   *prometheus.HistogramVec
	notifies  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dns_transfers_total",
			Help: "Zone transfer requests, by type (axfr, ixfr) and result (full, incremental, up_to_date, udp_soa, refused, tsig_missing, tsig_bad, not_auth, malformed, failed).",
		}, []string{"type", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carbide_dns_transfer_seconds",
			Help:    "Time to send a zone transfer that carried records, by type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dns_notifies_total",
			Help: "NOTIFYs sent to secondaries, by result (acked, rejected, unanswered after every try).",
		}, []string{"result"}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := daemon.Register(reg, m.transfers, m.seconds, m.notifies); err != nil {
		return nil, err
	}
	for _, typ := range []string{"axfr", "ixfr"} {
		for _, r := range []string{resultFull, resultRefused, resultTSIGMissing, resultTSIGBad} {
			m.transfers.WithLabelValues(typ, r)
		}
	}
	for _, r := range []string{notifyAcked, notifyRejected, notifyUnanswered} {
		m.notifies.WithLabelValues(r)
	}
	return m, nil
}
