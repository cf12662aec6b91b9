package dhcpd

import (
	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a packet is dropped: the reason label of
// carbide_dhcp_drops_total.
const (
	reasonMalformed      = "malformed"               // does not parse as DHCPv4
	reasonNotRequest     = "not_bootrequest"         // op is not BOOTREQUEST
	reasonNoMessageType  = "no_message_type"         // no option 53 (BOOTP)
	reasonUnexpectedType = "unexpected_message_type" // OFFER, ACK, NAK or unknown
	reasonBadHWAddr      = "bad_hardware_address"    // not 6-byte Ethernet
	reasonOtherServer    = "other_server"            // option 54 names another server
	reasonNoAddress      = "missing_address"         // REQUEST, RELEASE or DECLINE without the address it needs
	reasonNoLocalAddress = "no_local_address"        // no address on the interface and no --server-id
	reasonAPIError       = "api_error"               // the API call failed; see api_errors_total
	reasonBusy           = "busy"                    // max-in-flight packets were already being handled
	reasonSendError      = "send_error"              // writing the reply failed
)

// codeInvalidResponse is the code label of an API answer the daemon cannot
// use, such as a lease without an IPv4 address.
const codeInvalidResponse = "invalid_response"

// Metrics are the daemon's Prometheus metrics.
type Metrics struct {
	requests      *prometheus.CounterVec
	replies       *prometheus.CounterVec
	drops         *prometheus.CounterVec
	apiErrors     *prometheus.CounterVec
	handleSeconds *prometheus.HistogramVec
	offerAcks     prometheus.Counter
	offerLeases   prometheus.Counter
	leaseBatch    prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dhcp_requests_total",
			Help: "Well-formed DHCP requests received, by message type.",
		}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dhcp_replies_total",
			Help: "DHCP replies sent, by message type.",
		}, []string{"type"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dhcp_drops_total",
			Help: "Packets discarded or left without the reply they asked for, by reason.",
		}, []string{"reason"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_dhcp_api_errors_total",
			Help: "Failed Carbide API calls, by Connect code (not_found: no segment for the origin; resource_exhausted: pool full, a new machine the API did not enrol because its relay enrolled too many at once, or an overloaded API that refused the call).",
		}, []string{"code"}),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carbide_dhcp_handle_seconds",
			Help:    "Time to handle a DHCP request, including the API call, by message type.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"type"}),
		offerAcks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_dhcp_offer_acks_total",
			Help: "DHCPREQUESTs accepting an offer this daemon made in the last 10 s of a lease the client held already, acknowledged without an API call.",
		}),
		offerLeases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_dhcp_offer_leases_total",
			Help: "DHCPREQUESTs accepting a tentative offer this daemon made in the last 10 s (an address the API offered without writing it), leased through an API call; a NAK when the address was taken meanwhile.",
		}),
		leaseBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carbide_dhcp_lease_batch_size",
			Help:    "Lease decisions per API call: 1 for a Lease call, more for a LeaseBatch of the requests that waited while calls were in flight.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
	if err := daemon.Register(reg, m.requests, m.replies, m.drops, m.apiErrors, m.handleSeconds, m.offerAcks, m.offerLeases, m.leaseBatch); err != nil {
		return nil, err
	}
	// Start the usual series at zero, so that rates work from the first
	// scrape.
	for _, t := range []string{"discover", "request", "decline", "release", "inform"} {
		m.requests.WithLabelValues(t)
	}
	for _, t := range []string{"offer", "ack", "nak"} {
		m.replies.WithLabelValues(t)
	}
	for _, r := range []string{reasonMalformed, reasonOtherServer, reasonAPIError, reasonBusy, reasonSendError} {
		m.drops.WithLabelValues(r)
	}
	return m, nil
}
