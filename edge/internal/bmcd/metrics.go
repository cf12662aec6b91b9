package bmcd

import (
	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the daemon's Prometheus metrics.
type Metrics struct {
	operations  *prometheus.CounterVec
	polls       *prometheus.CounterVec
	callSeconds *prometheus.HistogramVec
	apiErrors   *prometheus.CounterVec
	leasesHeld  prometheus.Gauge
	leasesLost  prometheus.Counter
	takeovers   prometheus.Counter
}

// NewMetrics registers the daemon's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_bmc_operations_total",
			Help: "Operations the daemon ran, by type and result (RESULT_SUCCEEDED, RESULT_FAILED).",
		}, []string{"type", "result"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_bmc_power_reads_total",
			Help: "Reads of a machine's power state (polls, and the read after each operation), by result (ok, error).",
		}, []string{"result"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carbide_bmc_call_seconds",
			Help:    "Time of each call to a BMC (open, an operation, power_state), by call and result (ok, error).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"call", "result"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_bmc_api_errors_total",
			Help: "Failed calls to the Carbide API, by RPC and Connect code.",
		}, []string{"rpc", "code"}),
		leasesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carbide_bmc_leases_held",
			Help: "Machines the daemon holds a lease on now.",
		}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_bmc_leases_lost_total",
			Help: "Leases the daemon lost while working (not renewed in time, or taken over): the work on the machine stopped.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_bmc_takeovers_total",
			Help: "Operations the daemon took over from a daemon whose lease expired.",
		}),
	}
	if err := daemon.Register(reg, m.operations, m.polls, m.callSeconds, m.apiErrors, m.leasesHeld, m.leasesLost, m.takeovers); err != nil {
		return nil, err
	}
	return m, nil
}
