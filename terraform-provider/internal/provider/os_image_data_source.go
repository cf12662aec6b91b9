package provider

import (
	"context"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
	"github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
)

var (
	_ datasource.DataSourceWithConfigure        = (*osImageDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*osImageDataSource)(nil)
)

// osImageDataSource is data.carbide_os_image: one OS image, by id or by
// name and version.
type osImageDataSource struct {
	client *carbide.Client
}

func newOSImageDataSource() datasource.DataSource { return &osImageDataSource{} }

func (d *osImageDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_os_image"
}

func (d *osImageDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs := generated.ImageDataSourceAttributes()
	attrs["id"] = schema.StringAttribute{
		Description: "The image's id. Give id, or name and version.",
		Optional:    true,
		Computed:    true,
		Validators:  []validator.String{tfvalidate.UUID()},
	}
	attrs["name"] = schema.StringAttribute{
		Description: "The image's name, such as debian. Give id, or name and version.",
		Optional:    true,
		Computed:    true,
	}
	attrs["version"] = schema.StringAttribute{
		Description: "The image's version, such as 12. Give id, or name and version.",
		Optional:    true,
		Computed:    true,
	}
	resp.Schema = schema.Schema{
		Description: "An OS image, found by its id or by its name and version (deprecated images too).",
		Attributes:  attrs,
	}
}

func (d *osImageDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("name")),
		datasourcevalidator.RequiredTogether(path.MatchRoot("name"), path.MatchRoot("version")),
		datasourcevalidator.Conflicting(path.MatchRoot("id"), path.MatchRoot("version")),
	}
}

func (d *osImageDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *osImageDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m generated.ImageModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var img *instancev1.Image
	if id := m.Id.ValueString(); id != "" {
		out, err := d.client.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: id}))
		if err != nil {
			apiError(&resp.Diagnostics, "read OS image "+id, err)
			return
		}
		img = out.Msg.GetImage()
	} else {
		var err error
		if img, err = imageByNameVersion(ctx, d.client, m.Name.ValueString(), m.Version.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("name"), "Cannot find the OS image", err.Error())
			return
		}
	}
	resp.Diagnostics.Append(m.FromProto(ctx, img)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
