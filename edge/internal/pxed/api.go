package pxed

import (
	"context"

	"connectrpc.com/connect"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
)

// BootAPI is what the daemon needs of the Carbide API:
// carbide.boot.v1.BootService's GetBootConfig and PhoneHome. Errors are
// Connect errors (see connect.CodeOf); NotFound means no machine has the
// MAC.
type BootAPI interface {
	GetBootConfig(context.Context, *bootv1.GetBootConfigRequest) (*bootv1.GetBootConfigResponse, error)
	PhoneHome(context.Context, *bootv1.PhoneHomeRequest) (*bootv1.PhoneHomeResponse, error)
}

// SDKAPI is the BootAPI of a generated BootService client, such as the
// Boot field of the SDK's carbide.Client.
type SDKAPI struct {
	client bootv1connect.BootServiceClient
}

var _ BootAPI = (*SDKAPI)(nil)

// NewSDKAPI returns the BootAPI of c.
func NewSDKAPI(c bootv1connect.BootServiceClient) *SDKAPI {
	return &SDKAPI{client: c}
}

// GetBootConfig calls BootService.GetBootConfig.
func (a *SDKAPI) GetBootConfig(ctx context.Context, req *bootv1.GetBootConfigRequest) (*bootv1.GetBootConfigResponse, error) {
	resp, err := a.client.GetBootConfig(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// PhoneHome calls BootService.PhoneHome.
func (a *SDKAPI) PhoneHome(ctx context.Context, req *bootv1.PhoneHomeRequest) (*bootv1.PhoneHomeResponse, error) {
	resp, err := a.client.PhoneHome(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}
