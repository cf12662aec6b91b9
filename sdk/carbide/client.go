// Package carbide is the Go SDK for the Carbide API: one Client with a
// typed client per service, speaking Connect, gRPC or gRPC-Web, plus
// iterators that walk paginated lists. It depends only on the generated
// API code and connect-go.
package carbide

import (
	"context"
	"iter"
	"net/http"

	"connectrpc.com/connect"
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
}

type options struct {
	httpClient connect.HTTPClient
	protocol   Protocol
	connect    []connect.ClientOption
}

// Option configures a Client.
type Option func(*options)

// WithHTTPClient makes the Client send requests through c.
func WithHTTPClient(c connect.HTTPClient) Option {
	return func(o *options) { o.httpClient = c }
}

// WithProtocol selects the wire protocol; the default is Connect.
func WithProtocol(p Protocol) Option {
	return func(o *options) { o.protocol = p }
}

// WithClientOptions passes extra connect-go options, such as interceptors.
func WithClientOptions(opts ...connect.ClientOption) Option {
	return func(o *options) { o.connect = append(o.connect, opts...) }
}

// New returns a Client for the API at baseURL, e.g. http://127.0.0.1:1079.
// Over plain http:// the default HTTP client speaks HTTP/2 without TLS, as
// gRPC requires.
func New(baseURL string, opts ...Option) *Client {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.httpClient == nil {
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
		o.httpClient = &http.Client{Transport: &http.Transport{Protocols: protocols}}
	}
	copts := append([]connect.ClientOption(nil), o.connect...)
	switch o.protocol {
	case GRPC:
		copts = append(copts, connect.WithGRPC())
	case GRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	}
	return &Client{
		Machines:  machinev1connect.NewMachineServiceClient(o.httpClient, baseURL, copts...),
		Segments:  networkv1connect.NewSegmentServiceClient(o.httpClient, baseURL, copts...),
		Addresses: networkv1connect.NewAddressServiceClient(o.httpClient, baseURL, copts...),
		Watch:     watchv1connect.NewWatchServiceClient(o.httpClient, baseURL, copts...),
	}
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
