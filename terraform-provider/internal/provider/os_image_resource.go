package provider

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
	"github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
)

var (
	_ resource.ResourceWithConfigure   = (*osImageResource)(nil)
	_ resource.ResourceWithImportState = (*osImageResource)(nil)
)

// osImageResource is carbide_os_image: an operating system image machines
// can be given (ImageService). The API has no update of an image but its
// deprecation, so every other attribute replaces it (its generated schema
// says RequiresReplace). Schema and model are generated from
// carbide.instance.v1.Image.
type osImageResource struct {
	client *carbide.Client
}

func newOSImageResource() resource.Resource { return &osImageResource{} }

func (r *osImageResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_os_image"
}

func (r *osImageResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "An operating system image instances can run: a disk image the discovery agent writes, or a " +
			"kernel and initrd booted over the network, each file checked against its SHA-256. The API cannot " +
			"change an image, so any change but deprecated replaces it; deprecated images stay usable by the " +
			"instances that have them, new instances may not choose them. Import with the image's id or " +
			"name:version.",
		Attributes: generated.ImageResourceAttributes(),
	}
}

func (r *osImageResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *osImageResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan generated.ImageModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	img, diags := plan.ToProto(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	img.Id, img.Deprecated, img.CreateTime, img.UpdateTime = "", false, nil, nil
	out, err := r.client.Images.CreateImage(ctx, connect.NewRequest(&instancev1.CreateImageRequest{Image: img}))
	if err != nil {
		apiError(&resp.Diagnostics, "create the OS image", err)
		return
	}
	img = out.Msg.GetImage()
	if plan.Deprecated.ValueBool() {
		// Save the image first, so that a failure below leaves it in the
		// state (tainted) instead of orphaned.
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), img.GetId())...)
		dep, err := r.client.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: img.GetId(), Deprecated: true}))
		if err != nil {
			apiError(&resp.Diagnostics, "deprecate the OS image", err)
			return
		}
		img = dep.Msg.GetImage()
	}
	resp.Diagnostics.Append(plan.FromProto(ctx, img)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *osImageResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state generated.ImageModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: state.Id.ValueString()}))
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		apiError(&resp.Diagnostics, "read the OS image", err)
		return
	}
	resp.Diagnostics.Append(state.FromProto(ctx, out.Msg.GetImage())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes what the API can change in place: the deprecation.
func (r *osImageResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state generated.ImageModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.Id.ValueString()
	var img *instancev1.Image
	if !plan.Deprecated.IsUnknown() && plan.Deprecated.ValueBool() != state.Deprecated.ValueBool() {
		out, err := r.client.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: id, Deprecated: plan.Deprecated.ValueBool()}))
		if err != nil {
			apiError(&resp.Diagnostics, "change the deprecation of the OS image", err)
			return
		}
		img = out.Msg.GetImage()
	} else {
		out, err := r.client.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: id}))
		if err != nil {
			apiError(&resp.Diagnostics, "read the OS image", err)
			return
		}
		img = out.Msg.GetImage()
	}
	resp.Diagnostics.Append(plan.FromProto(ctx, img)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *osImageResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state generated.ImageModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	_, err := r.client.Images.DeleteImage(ctx, connect.NewRequest(&instancev1.DeleteImageRequest{Id: state.Id.ValueString()}))
	if err != nil && !isNotFound(err) {
		apiError(&resp.Diagnostics, "delete the OS image", err)
	}
}

// ImportState takes an image's id or its name:version.
func (r *osImageResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := req.ID
	if !tfvalidate.IsUUID(id) {
		name, version, ok := strings.Cut(id, ":")
		if !ok {
			resp.Diagnostics.AddError("Cannot import the OS image",
				fmt.Sprintf("%q is neither an image id nor name:version (such as debian:12).", id))
			return
		}
		img, err := imageByNameVersion(ctx, r.client, name, version)
		if err != nil {
			resp.Diagnostics.AddError("Cannot import the OS image", err.Error())
			return
		}
		id = img.GetId()
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// imageByNameVersion returns the image of that name and version, deprecated
// or not.
func imageByNameVersion(ctx context.Context, c *carbide.Client, name, version string) (*instancev1.Image, error) {
	var versions []string
	for img, err := range c.AllImages(ctx, &instancev1.ListImagesRequest{Name: name, IncludeDeprecated: true}) {
		if err != nil {
			return nil, fmt.Errorf("look up image %s:%s: %w", name, version, err)
		}
		if img.GetVersion() == version {
			return img, nil
		}
		versions = append(versions, img.GetVersion())
	}
	if len(versions) == 0 {
		return nil, fmt.Errorf("no image is named %q", name)
	}
	return nil, fmt.Errorf("image %q has no version %q; it has %s", name, version, strings.Join(versions, ", "))
}
