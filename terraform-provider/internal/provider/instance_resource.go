package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/resourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
)

// How long create waits for Running, and destroy for the cleaning, unless
// the configuration's timeouts say otherwise.
const (
	defaultCreateTimeout = 30 * time.Minute
	defaultDeleteTimeout = 30 * time.Minute
)

var (
	_ resource.ResourceWithConfigure        = (*instanceResource)(nil)
	_ resource.ResourceWithImportState      = (*instanceResource)(nil)
	_ resource.ResourceWithConfigValidators = (*instanceResource)(nil)
	_ resource.ResourceWithModifyPlan       = (*instanceResource)(nil)
)

// instanceResource is carbide_instance: a machine allocated to a tenant,
// installed with an image and booted. Create waits until it runs;
// destroy releases it, and optionally waits until its machine is cleaned.
type instanceResource struct {
	client *carbide.Client
}

func newInstanceResource() resource.Resource { return &instanceResource{} }

// instanceModel is carbide_instance's configuration and state: the
// generated Instance model, plus what only the provider holds.
type instanceModel struct {
	generated.InstanceModel
	WaitForCleaning types.Bool     `tfsdk:"wait_for_cleaning"`
	Timeouts        timeouts.Value `tfsdk:"timeouts"`
}

func (r *instanceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (r *instanceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	// The instance's attributes are generated from the API's Instance
	// message (RequiresReplace on every one the API cannot change, which
	// is all of them); wait_for_cleaning and timeouts are the provider's.
	attrs := generated.InstanceResourceAttributes()
	attrs["wait_for_cleaning"] = schema.BoolAttribute{
		MarkdownDescription: "Destroy waits until the released machine is cleaned and Ready again (within `timeouts.delete`). Changes in place.",
		Optional:            true,
		Computed:            true,
		Default:             booldefault.StaticBool(false),
	}
	attrs["timeouts"] = timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true})
	resp.Schema = schema.Schema{
		MarkdownDescription: "An instance: a Ready machine — the one named by `machine_id`, or any one `selector` matches — " +
			"installed with an image and booted. Creating it waits until the instance runs (`timeouts.create`, 30 minutes " +
			"by default) and fails with the API's reason when it does not come up. The API cannot change an instance: " +
			"any change of what it runs replaces it, and so does a failure. Destroying it releases the machine, whose disks " +
			"are then wiped; with `wait_for_cleaning` destroy waits until the machine is Ready again.",
		Attributes: attrs,
	}
}

func (r *instanceResource) ConfigValidators(context.Context) []resource.ConfigValidator {
	return []resource.ConfigValidator{
		resourcevalidator.ExactlyOneOf(path.MatchRoot("machine_id"), path.MatchRoot("selector")),
	}
}

// ModifyPlan replaces an instance that failed: it holds no machine and
// will never run.
func (r *instanceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var state types.String
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("state"), &state)...)
	if resp.Diagnostics.HasError() || state.ValueString() != "failed" {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("state"), types.StringUnknown())...)
	resp.RequiresReplace = append(resp.RequiresReplace, path.Root("state"))
}

func (r *instanceResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *instanceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	create, diags := plan.createRequest(ctx)
	resp.Diagnostics.Append(diags...)
	timeout, diags := plan.Timeouts.Create(ctx, defaultCreateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	created, err := r.client.Instances.CreateInstance(ctx, connect.NewRequest(create))
	if err != nil {
		detail := ""
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			detail = "No Ready machine matches the selector: loosen it, or wait for machines to be Ready."
		case connect.CodeFailedPrecondition:
			detail = "The machine must be Ready to take an instance."
		}
		apiError(&resp.Diagnostics, "create the instance", err)
		if detail != "" {
			resp.Diagnostics.AddError("No machine for the instance", detail)
		}
		return
	}
	inst := created.Msg.GetInstance()
	// Keep the instance in the state from here on: if it does not come
	// up, Terraform marks it tainted and replaces it on the next apply.
	resp.Diagnostics.Append(plan.fromProto(ctx, inst)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	running, err := r.client.WaitInstanceRunning(waitCtx, inst.GetId(), carbide.WithProgress(func(p carbide.Progress) {
		tflog.Info(ctx, "instance progress", map[string]any{"instance": inst.GetId(), "progress": p.String()})
	}))
	if err != nil {
		// Show the instance as it now is.
		if got, gerr := r.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: inst.GetId()})); gerr == nil {
			resp.Diagnostics.Append(plan.fromProto(ctx, got.Msg.GetInstance())...)
			resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		}
		var se *carbide.StateError
		switch {
		case errors.As(err, &se):
			resp.Diagnostics.AddError("The instance did not come up",
				fmt.Sprintf("Instance %s is %s: %s\n\nIt stays in the state as tainted; the next apply replaces it.",
					inst.GetId(), se.State, orNone(se.Reason)))
		case waitCtx.Err() != nil && ctx.Err() == nil:
			resp.Diagnostics.AddError("Timed out waiting for the instance to run",
				fmt.Sprintf("Instance %s did not run within %s (timeouts.create): %s\n\n"+
					"It stays in the state as tainted; the next apply replaces it. Raise timeouts.create if the machine needs longer to install and boot.",
					inst.GetId(), timeout, err))
		default:
			resp.Diagnostics.AddError("Cannot wait for the instance to run", err.Error())
		}
		return
	}
	resp.Diagnostics.Append(plan.fromProto(ctx, running)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *instanceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	got, err := r.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: state.Id.ValueString()}))
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		apiError(&resp.Diagnostics, "read the instance", err)
		return
	}
	inst := got.Msg.GetInstance()
	switch inst.GetState() {
	case instancev1.InstanceState_INSTANCE_STATE_RELEASING, instancev1.InstanceState_INSTANCE_STATE_RELEASED:
		// Released outside Terraform: gone, so the next plan creates it.
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(state.fromProto(ctx, inst)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes only what the API does not hold: wait_for_cleaning and
// the timeouts. Everything else replaces the instance.
func (r *instanceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.WaitForCleaning = plan.WaitForCleaning
	state.Timeouts = plan.Timeouts
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *instanceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	timeout, diags := state.Timeouts.Delete(ctx, defaultDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.Id.ValueString()
	if _, err := r.client.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: id})); err != nil {
		if isNotFound(err) {
			return
		}
		apiError(&resp.Diagnostics, "release the instance", err)
		return
	}
	if !state.WaitForCleaning.ValueBool() {
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := r.client.WaitInstanceDeleted(waitCtx, id, carbide.WaitCleaned(), carbide.WithProgress(func(p carbide.Progress) {
		tflog.Info(ctx, "instance release progress", map[string]any{"instance": id, "progress": p.String()})
	}))
	var se *carbide.StateError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.Kind == "machine":
		// The instance is released; its machine failed and waits for an
		// operator. Destroying the instance is done all the same.
		resp.Diagnostics.AddWarning("The released machine did not become Ready",
			fmt.Sprintf("Instance %s was released, but machine %s is %s: %s\n\n"+
				"An operator must look at the machine and retry it (RetryMachine) before it takes another instance.",
				id, se.ID, se.State, orNone(se.Reason)))
	case waitCtx.Err() != nil && ctx.Err() == nil:
		resp.Diagnostics.AddError("Timed out waiting for the machine's cleaning",
			fmt.Sprintf("Instance %s was released, but its machine was not cleaned and Ready within %s (timeouts.delete): %s", id, timeout, err))
	default:
		resp.Diagnostics.AddError("The machine's cleaning did not finish",
			fmt.Sprintf("Instance %s was released, but: %s", id, err))
	}
}

func (r *instanceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("wait_for_cleaning"), types.BoolValue(false))...)
}

// createRequest is the CreateInstanceRequest the plan stands for.
func (m *instanceModel) createRequest(ctx context.Context) (*instancev1.CreateInstanceRequest, diag.Diagnostics) {
	inst, diags := m.InstanceModel.ToProto(ctx)
	req := &instancev1.CreateInstanceRequest{
		RequestId:         inst.GetRequestId(),
		Hostname:          inst.GetHostname(),
		ImageId:           inst.GetImageId(),
		UserData:          inst.GetUserData(),
		SshAuthorizedKeys: inst.GetSshAuthorizedKeys(),
		Labels:            inst.GetLabels(),
		WipeMode:          inst.GetWipeMode(),
	}
	if sel := inst.GetSelector(); sel != nil {
		req.Target = &instancev1.CreateInstanceRequest_Selector{Selector: sel}
	} else {
		req.Target = &instancev1.CreateInstanceRequest_MachineId{MachineId: inst.GetMachineId()}
	}
	return req, diags
}

// fromProto sets the model from the instance: what the API holds, so that
// a change made outside Terraform shows as drift.
func (m *instanceModel) fromProto(ctx context.Context, inst *instancev1.Instance) diag.Diagnostics {
	diags := m.InstanceModel.FromProto(ctx, inst)
	if m.WaitForCleaning.IsNull() || m.WaitForCleaning.IsUnknown() {
		m.WaitForCleaning = types.BoolValue(false)
	}
	if m.Timeouts.IsUnknown() {
		m.Timeouts.Object = types.ObjectNull(m.Timeouts.AttributeTypes(ctx))
	}
	return diags
}

// orNone is s, or "(no reason given)" when empty.
func orNone(s string) string {
	if s == "" {
		return "(no reason given)"
	}
	return s
}
