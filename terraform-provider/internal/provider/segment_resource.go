package provider

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
	"github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
)

var (
	_ resource.ResourceWithConfigure   = (*segmentResource)(nil)
	_ resource.ResourceWithImportState = (*segmentResource)(nil)
)

// segmentUpdatable are the fields UpdateSegment changes in place; a change
// of prefix replaces the segment (its schema says RequiresReplace).
var segmentUpdatable = []string{
	"name", "gateway", "dns_servers", "domain", "mtu", "ranges", "reservations",
	"relay_addresses", "ntp_servers", "lease_duration", "dns_records",
}

// segmentResource is carbide_segment: a network segment with its address
// pools, reservations, DHCP options and static DNS records. Its schema and
// model are generated from carbide.network.v1.Segment.
type segmentResource struct {
	client *carbide.Client
}

func newSegmentResource() resource.Resource { return &segmentResource{} }

func (r *segmentResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_segment"
}

func (r *segmentResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A network segment: an IPv4 network machines are attached to, with the address pools Carbide " +
			"leases from, fixed reservations, the DHCP options it hands out and static DNS records. " +
			"Every attribute but prefix changes in place; a new prefix replaces the segment. " +
			"Import with the segment's id or name.",
		Attributes: generated.SegmentResourceAttributes(),
	}
}

func (r *segmentResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *segmentResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan generated.SegmentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	seg, diags := plan.ToProto(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Output-only fields are the server's.
	seg.Id, seg.CreateTime, seg.UpdateTime = "", nil, nil
	out, err := r.client.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: seg}))
	if err != nil {
		apiError(&resp.Diagnostics, "create the segment", err)
		return
	}
	resp.Diagnostics.Append(plan.FromProto(ctx, out.Msg.GetSegment())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *segmentResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state generated.SegmentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: state.Id.ValueString()}))
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		apiError(&resp.Diagnostics, "read the segment", err)
		return
	}
	resp.Diagnostics.Append(state.FromProto(ctx, out.Msg.GetSegment())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *segmentResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state generated.SegmentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	want, diags := plan.ToProto(ctx)
	resp.Diagnostics.Append(diags...)
	have, diags := state.ToProto(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	want.Id, want.CreateTime, want.UpdateTime = state.Id.ValueString(), nil, nil
	var seg *networkv1.Segment
	if mask := changedFields(have, want, segmentUpdatable); len(mask) > 0 {
		out, err := r.client.Segments.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
			Segment:    want,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
		}))
		if err != nil {
			apiError(&resp.Diagnostics, "update the segment", err)
			return
		}
		seg = out.Msg.GetSegment()
	} else {
		out, err := r.client.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: state.Id.ValueString()}))
		if err != nil {
			apiError(&resp.Diagnostics, "read the segment", err)
			return
		}
		seg = out.Msg.GetSegment()
	}
	resp.Diagnostics.Append(plan.FromProto(ctx, seg)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *segmentResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state generated.SegmentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	_, err := r.client.Segments.DeleteSegment(ctx, connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: state.Id.ValueString()}))
	if err != nil && !isNotFound(err) {
		apiError(&resp.Diagnostics, "delete the segment", err)
	}
}

// ImportState takes a segment's id or its name.
func (r *segmentResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := req.ID
	if !tfvalidate.IsUUID(id) {
		seg, err := segmentByName(ctx, r.client, id)
		if err != nil {
			resp.Diagnostics.AddError("Cannot import the segment", err.Error()+"\n\nImport a segment with its id or its name.")
			return
		}
		id = seg.GetId()
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// segmentByName returns the segment named name.
func segmentByName(ctx context.Context, c *carbide.Client, name string) (*networkv1.Segment, error) {
	out, err := c.Segments.ListSegments(ctx, connect.NewRequest(&networkv1.ListSegmentsRequest{Name: name, PageSize: 1}))
	if err != nil {
		return nil, fmt.Errorf("look up segment %q: %w", name, err)
	}
	if len(out.Msg.GetSegments()) == 0 {
		return nil, fmt.Errorf("no segment is named %q", name)
	}
	return out.Msg.GetSegments()[0], nil
}
