package dhcpd

import (
	"context"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
)

// LeaseAPI is what the handler needs of the Carbide API: the four calls of
// carbide.dhcp.v1.DHCPService. Errors are Connect errors (see
// connect.CodeOf); NotFound means no segment matches the origin and
// ResourceExhausted that the segment's pool is full.
type LeaseAPI interface {
	Lease(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error)
	Release(context.Context, *dhcpv1.ReleaseRequest) error
	Decline(context.Context, *dhcpv1.DeclineRequest) error
	Inform(context.Context, *dhcpv1.InformRequest) (*dhcpv1.InformResponse, error)
}

// SDKAPI is the LeaseAPI of a generated DHCPService client, such as the
// DHCP field of the SDK's carbide.Client.
type SDKAPI struct {
	client dhcpv1connect.DHCPServiceClient
}

var _ LeaseAPI = (*SDKAPI)(nil)

// NewSDKAPI returns the LeaseAPI of c.
func NewSDKAPI(c dhcpv1connect.DHCPServiceClient) *SDKAPI {
	return &SDKAPI{client: c}
}

// Lease calls DHCPService.Lease.
func (a *SDKAPI) Lease(ctx context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
	resp, err := a.client.Lease(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// Release calls DHCPService.Release.
func (a *SDKAPI) Release(ctx context.Context, req *dhcpv1.ReleaseRequest) error {
	_, err := a.client.Release(ctx, connect.NewRequest(req))
	return err
}

// Decline calls DHCPService.Decline.
func (a *SDKAPI) Decline(ctx context.Context, req *dhcpv1.DeclineRequest) error {
	_, err := a.client.Decline(ctx, connect.NewRequest(req))
	return err
}

// Inform calls DHCPService.Inform.
func (a *SDKAPI) Inform(ctx context.Context, req *dhcpv1.InformRequest) (*dhcpv1.InformResponse, error) {
	resp, err := a.client.Inform(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}
