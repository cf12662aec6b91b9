package provider

import (
	"context"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
	"github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
)

var (
	_ datasource.DataSourceWithConfigure        = (*segmentDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*segmentDataSource)(nil)
)

// segmentDataSource is data.carbide_segment: one segment, by id or name.
type segmentDataSource struct {
	client *carbide.Client
}

func newSegmentDataSource() datasource.DataSource { return &segmentDataSource{} }

func (d *segmentDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_segment"
}

func (d *segmentDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs := generated.SegmentDataSourceAttributes()
	attrs["id"] = schema.StringAttribute{
		Description: "The segment's id. Give id or name.",
		Optional:    true,
		Computed:    true,
		Validators:  []validator.String{tfvalidate.UUID()},
	}
	attrs["name"] = schema.StringAttribute{
		Description: "The segment's name. Give id or name.",
		Optional:    true,
		Computed:    true,
	}
	resp.Schema = schema.Schema{
		Description: "A network segment, found by its id or its name.",
		Attributes:  attrs,
	}
}

func (d *segmentDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("name")),
	}
}

func (d *segmentDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *segmentDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m generated.SegmentModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var seg *networkv1.Segment
	if id := m.Id.ValueString(); id != "" {
		out, err := d.client.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: id}))
		if err != nil {
			apiError(&resp.Diagnostics, "read segment "+id, err)
			return
		}
		seg = out.Msg.GetSegment()
	} else {
		var err error
		if seg, err = segmentByName(ctx, d.client, m.Name.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("name"), "Cannot find the segment", err.Error())
			return
		}
	}
	resp.Diagnostics.Append(m.FromProto(ctx, seg)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
