package pxed

import (
	"errors"
	"fmt"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/prometheus/client_golang/prometheus"
)

// Routes: the route label of the HTTP metrics.
const (
	routeIPXE      = "ipxe"
	routeAgent     = "agent"
	routeArtifacts = "artifacts"
	routeCloudInit = "cloud_init"
	routePhoneHome = "phone_home"
	routeOther     = "other" // no route matched
)

// Results of a TFTP request: the result label of
// carbide_pxe_tftp_transfers_total.
const (
	tftpOK           = "ok"
	tftpNotFound     = "not_found"     // no such regular file
	tftpInvalid      = "invalid"       // not a plain relative path
	tftpDenied       = "denied"        // out of the root, or unreadable
	tftpFailed       = "failed"        // the transfer broke off (timeout, client error)
	tftpSizeProbe    = "size_probe"    // the client asked for the size only and ended the transfer
	tftpWriteRefused = "write_refused" // a write request
	tftpBusy         = "busy"          // refused: --tftp-max-transfers in progress
)

// Boot scripts served: the action label of carbide_pxe_scripts_total.
const (
	scriptDiscovery = "discovery"
	scriptLocalDisk = "local_disk"
	scriptNetboot   = "netboot"
	scriptUnknown   = "unknown_machine"
)

// codeInvalidResponse is the code label of an API answer the daemon will
// not use, such as a host name that is not one.
const codeInvalidResponse = "invalid_response"

// Metrics are the daemon's Prometheus metrics.
type Metrics struct {
	httpRequests  *prometheus.CounterVec
	httpSeconds   *prometheus.HistogramVec
	httpBytes     *prometheus.CounterVec
	scripts       *prometheus.CounterVec
	apiErrors     *prometheus.CounterVec
	tftpTransfers *prometheus.CounterVec
	tftpBytes     prometheus.Counter
	tftpSeconds   prometheus.Histogram
	httpTimeouts  *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pxe_http_requests_total",
			Help: "HTTP requests answered, by route (ipxe, agent, artifacts, cloud_init, phone_home, other) and status code.",
		}, []string{"route", "code"}),
		httpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carbide_pxe_http_request_seconds",
			Help:    "Time to answer an HTTP request, including the API call and the body, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"route"}),
		httpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pxe_http_response_bytes_total",
			Help: "Bytes of HTTP response bodies sent, by route.",
		}, []string{"route"}),
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pxe_scripts_total",
			Help: "iPXE scripts served, by what they boot (discovery, local_disk, netboot, unknown_machine).",
		}, []string{"action"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pxe_api_errors_total",
			Help: "Failed Carbide API calls, by Connect code (not_found: no machine has the MAC), or invalid_response for an answer the daemon will not use.",
		}, []string{"code"}),
		tftpTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pxe_tftp_transfers_total",
			Help: "TFTP requests, by result (ok, not_found, invalid, denied, failed, size_probe, write_refused, busy: refused while --tftp-max-transfers were in progress).",
		}, []string{"result"}),
		tftpBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_pxe_tftp_bytes_total",
			Help: "Bytes of file data sent over TFTP.",
		}),
		httpTimeouts: daemon.NewTimeoutCounter("carbide_pxe_http_timeouts_total",
			"HTTP connections closed for idling longer than --http-idle-timeout (idle), and responses cut off after --http-write-timeout without progress (write)."),
		tftpSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carbide_pxe_tftp_transfer_seconds",
			Help:    "Duration of successful TFTP transfers.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.httpRequests, m.httpSeconds, m.httpBytes, m.scripts,
		m.apiErrors, m.tftpTransfers, m.tftpBytes, m.tftpSeconds, m.httpTimeouts} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	// Start the usual series at zero, so that rates work from the first
	// scrape.
	for _, a := range []string{scriptDiscovery, scriptLocalDisk, scriptNetboot, scriptUnknown} {
		m.scripts.WithLabelValues(a)
	}
	for _, r := range []string{tftpOK, tftpNotFound, tftpFailed, tftpSizeProbe, tftpWriteRefused, tftpBusy} {
		m.tftpTransfers.WithLabelValues(r)
	}
	return m, nil
}
