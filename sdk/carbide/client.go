// Package carbide is the Go SDK for the Carbide API: one Client with a
// typed client per service, speaking Connect, gRPC or gRPC-Web, plus
// iterators that walk paginated lists. It depends only on the generated
// API code, connect-go and a YAML parser.
//
// The API serves TLS and wants every caller authenticated, and the daemons
// and the CLI all do it the same way: with a client certificate from
// Carbide's CA (mutual TLS; the certificate's SPIFFE ID names the role),
//
//	c, err := carbide.New("https://carbide.example:1079",
//		carbide.WithClientCertificate("/etc/carbide/dhcp.crt", "/etc/carbide/dhcp.key", "/etc/carbide/ca.crt"))
//	if err != nil {
//		return err // names the file that could not be loaded
//	}
//	resp, err := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
//
// or with a JWT from the identity provider, fetched again for each call so
// that a refreshed token is picked up:
//
//	c, err := carbide.New("https://carbide.example:1079",
//		carbide.WithTokenSource(func(ctx context.Context) (string, error) {
//			return idp.Token(ctx) // your cache-and-refresh logic
//		}))
//
// WithBearerToken sends one fixed token, and WithTLS sets any other TLS
// configuration, such as a private CA for the server's certificate. The SDK
// never logs a token or puts one in an error.
//
// Programs that should connect the way the CLI does load a Config: the
// current context of the CLI's config file, with CARBIDE_* environment
// variables on top,
//
//	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
//	...
//	c, err := cfg.NewClient()
//
// AsError turns an error the API returned into an *Error with its code
// and, for a rejected request, the fields to fix. WaitMachineState,
// WaitInstanceRunning and WaitInstanceDeleted follow WatchService.Watch
// until a resource reaches a state, and the All... iterators walk the
// paginated lists.
package carbide

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/bmc/v1/bmcv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"google.golang.org/protobuf/proto"
)

// Protocol is a wire protocol the API serves.
type Protocol int

// The protocols the API serves, all on one port.
const (
	Connect Protocol = iota
	GRPC
	GRPCWeb
)

// Client calls the Carbide API.
type Client struct {
	Machines  machinev1connect.MachineServiceClient
	Segments  networkv1connect.SegmentServiceClient
	Addresses networkv1connect.AddressServiceClient
	Watch     watchv1connect.WatchServiceClient
	DHCP      dhcpv1connect.DHCPServiceClient
	Agent     agentv1connect.AgentServiceClient
	Audit     auditv1connect.AuditServiceClient
	Boot      bootv1connect.BootServiceClient
	BMC       bmcv1connect.BMCServiceClient
	Images    instancev1connect.ImageServiceClient
	Instances instancev1connect.InstanceServiceClient
}

type options struct {
	httpClient connect.HTTPClient
	protocol   Protocol
	connect    []connect.ClientOption

	// tls and cert configure the default HTTP client's TLS.
	tls  *tls.Config
	cert *certFiles
	// tlsSet records that WithTLS was used, even with a nil config, so
	// that New can report the nil config.
	tlsSet bool

	// bearer holds the token options, in the order given; New accepts
	// at most one.
	bearer []bearerOption
}

// Option configures a Client. Options that can fail, such as loading a
// certificate, report their errors from New.
type Option func(*options)

// WithHTTPClient makes the Client send requests through c. It cannot be
// combined with WithTLS or WithClientCertificate, which configure the
// default HTTP client: configure c's TLS yourself.
func WithHTTPClient(c connect.HTTPClient) Option {
	return func(o *options) { o.httpClient = c }
}

// WithProtocol selects the wire protocol; the default is Connect.
func WithProtocol(p Protocol) Option {
	return func(o *options) { o.protocol = p }
}

// WithClientOptions passes extra connect-go options, such as interceptors.
// Interceptors given here wrap the one that adds the bearer token: they
// run before it sets the header, and each retry they make fetches the
// token again.
func WithClientOptions(opts ...connect.ClientOption) Option {
	return func(o *options) { o.connect = append(o.connect, opts...) }
}

// New returns a Client for the API at baseURL, e.g.
// https://carbide.example:1079. The default HTTP client speaks HTTP/2: over
// TLS (ALPN h2) for https://, and without TLS for http://, as gRPC
// requires.
//
// New fails if an option is invalid or cannot be loaded; the error lists
// every such problem and names the files involved.
func New(baseURL string, opts ...Option) (*Client, error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	var errs []error
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("parse the base URL: %w", err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("base URL %q: want an http:// or https:// URL", baseURL))
	case u.Scheme == "http" && (o.tlsSet || o.cert != nil):
		errs = append(errs, fmt.Errorf("base URL %q: TLS options need an https:// URL", baseURL))
	}
	httpClient, err := o.buildHTTPClient()
	if err != nil {
		errs = append(errs, err)
	}
	copts := append([]connect.ClientOption(nil), o.connect...)
	switch o.protocol {
	case GRPC:
		copts = append(copts, connect.WithGRPC())
	case GRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	}
	switch len(o.bearer) {
	case 0:
	case 1:
		// Last, so it is the innermost interceptor: the caller's
		// interceptors never see the token, and each retry they make gets
		// a fresh one.
		bi, err := o.bearer[0]()
		if err != nil {
			errs = append(errs, err)
		} else {
			copts = append(copts, connect.WithInterceptors(bi))
		}
	default:
		errs = append(errs, errors.New("use only one of WithBearerToken and WithTokenSource, once"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new carbide client: %w", err)
	}
	return &Client{
		Machines:  machinev1connect.NewMachineServiceClient(httpClient, baseURL, copts...),
		Segments:  networkv1connect.NewSegmentServiceClient(httpClient, baseURL, copts...),
		Addresses: networkv1connect.NewAddressServiceClient(httpClient, baseURL, copts...),
		Watch:     watchv1connect.NewWatchServiceClient(httpClient, baseURL, copts...),
		DHCP:      dhcpv1connect.NewDHCPServiceClient(httpClient, baseURL, copts...),
		Agent:     agentv1connect.NewAgentServiceClient(httpClient, baseURL, copts...),
		Audit:     auditv1connect.NewAuditServiceClient(httpClient, baseURL, copts...),
		Boot:      bootv1connect.NewBootServiceClient(httpClient, baseURL, copts...),
		BMC:       bmcv1connect.NewBMCServiceClient(httpClient, baseURL, copts...),
		Images:    instancev1connect.NewImageServiceClient(httpClient, baseURL, copts...),
		Instances: instancev1connect.NewInstanceServiceClient(httpClient, baseURL, copts...),
	}, nil
}

// buildHTTPClient returns the HTTP client the Client sends through: the
// one given with WithHTTPClient, or a new one with the TLS options applied.
func (o *options) buildHTTPClient() (connect.HTTPClient, error) {
	if o.httpClient != nil {
		if o.tlsSet || o.cert != nil {
			return nil, errors.New("WithTLS and WithClientCertificate configure the default HTTP client; with WithHTTPClient, configure that client's TLS instead")
		}
		return o.httpClient, nil
	}
	tlsConfig, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       protocols,
		TLSClientConfig: tlsConfig,
		// A Watch stream can stay quiet for long: ping a connection that
		// received nothing for a while, and drop it when the ping goes
		// unanswered, so a dead connection ends the stream (and a waiter
		// resumes) instead of hanging it.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}}, nil
}

// AllMachines yields every machine that matches req's filters, fetching
// page after page. It stops at the first error, which it yields.
func (c *Client) AllMachines(ctx context.Context, req *machinev1.ListMachinesRequest) iter.Seq2[*machinev1.Machine, error] {
	return paginate(ctx, req, c.Machines.ListMachines,
		func(r *machinev1.ListMachinesRequest, token string) { r.PageToken = token },
		func(r *machinev1.ListMachinesResponse) ([]*machinev1.Machine, string) {
			return r.GetMachines(), r.GetNextPageToken()
		})
}

// AllSegments yields every segment that matches req's filters.
func (c *Client) AllSegments(ctx context.Context, req *networkv1.ListSegmentsRequest) iter.Seq2[*networkv1.Segment, error] {
	return paginate(ctx, req, c.Segments.ListSegments,
		func(r *networkv1.ListSegmentsRequest, token string) { r.PageToken = token },
		func(r *networkv1.ListSegmentsResponse) ([]*networkv1.Segment, string) {
			return r.GetSegments(), r.GetNextPageToken()
		})
}

// AllLeases yields every lease of req's segment.
func (c *Client) AllLeases(ctx context.Context, req *networkv1.ListLeasesRequest) iter.Seq2[*networkv1.Lease, error] {
	return paginate(ctx, req, c.Addresses.ListLeases,
		func(r *networkv1.ListLeasesRequest, token string) { r.PageToken = token },
		func(r *networkv1.ListLeasesResponse) ([]*networkv1.Lease, string) {
			return r.GetLeases(), r.GetNextPageToken()
		})
}

// paginate walks a list RPC. Req and Resp are the generated message
// structs; PReq constrains *Req to a protobuf message so it can be cloned.
func paginate[Req, Resp, Item any, PReq interface {
	*Req
	proto.Message
}](
	ctx context.Context,
	req PReq,
	call func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error),
	setToken func(PReq, string),
	items func(*Resp) ([]Item, string),
) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		r := proto.Clone(req).(PReq)
		for {
			resp, err := call(ctx, connect.NewRequest((*Req)(r)))
			if err != nil {
				var zero Item
				yield(zero, err)
				return
			}
			page, next := items(resp.Msg)
			for _, it := range page {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			setToken(r, next)
		}
	}
}
