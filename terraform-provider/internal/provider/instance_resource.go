package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/resourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// How long create waits for Running, and destroy for the cleaning, unless
// the configuration's timeouts say otherwise.
const (
	defaultCreateTimeout = 30 * time.Minute
	defaultDeleteTimeout = 30 * time.Minute
)

// The API's rules for instances, checked at plan time too.
var (
	instanceHostnamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	sshKeyPattern           = regexp.MustCompile(`^(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\r\n]*)?$`)
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

// instanceModel is carbide_instance's configuration and state.
type instanceModel struct {
	ID                types.String   `tfsdk:"id"`
	Hostname          types.String   `tfsdk:"hostname"`
	ImageID           types.String   `tfsdk:"image_id"`
	UserData          types.String   `tfsdk:"user_data"`
	SSHAuthorizedKeys types.List     `tfsdk:"ssh_authorized_keys"`
	Labels            types.Map      `tfsdk:"labels"`
	MachineID         types.String   `tfsdk:"machine_id"`
	Selector          types.Object   `tfsdk:"selector"`
	WipeMode          types.String   `tfsdk:"wipe_mode"`
	WaitForCleaning   types.Bool     `tfsdk:"wait_for_cleaning"`
	State             types.String   `tfsdk:"state"`
	FailureReason     types.String   `tfsdk:"failure_reason"`
	Address           types.String   `tfsdk:"address"`
	Timeouts          timeouts.Value `tfsdk:"timeouts"`
}

// selectorModel is carbide_instance's selector.
type selectorModel struct {
	Labels         types.Map    `tfsdk:"labels"`
	MinCPUs        types.Int64  `tfsdk:"min_cpus"`
	MinMemoryBytes types.Int64  `tfsdk:"min_memory_bytes"`
	MinDiskBytes   types.Int64  `tfsdk:"min_disk_bytes"`
	SegmentID      types.String `tfsdk:"segment_id"`
}

func selectorAttrTypes() map[string]attr.Type {
	return map[string]attr.Type{
		"labels":           types.MapType{ElemType: types.StringType},
		"min_cpus":         types.Int64Type,
		"min_memory_bytes": types.Int64Type,
		"min_disk_bytes":   types.Int64Type,
		"segment_id":       types.StringType,
	}
}

func (r *instanceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (r *instanceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	labelsValidators := []validator.Map{
		mapvalidator.SizeAtMost(64),
		mapvalidator.KeysAre(stringvalidator.RegexMatches(labelKeyPattern,
			"must be 1 to 63 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit")),
		mapvalidator.ValueStringsAre(stringvalidator.LengthAtMost(255)),
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "An instance: a Ready machine — the one named by `machine_id`, or any one `selector` matches — " +
			"installed with an image and booted. Creating it waits until the instance runs (`timeouts.create`, 30 minutes " +
			"by default) and fails with the API's reason when it does not come up. The API cannot change an instance: " +
			"any change of what it runs replaces it. Destroying it releases the machine, whose disks are then wiped; with " +
			"`wait_for_cleaning` destroy waits until the machine is Ready again.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The instance's ID (a UUID).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"hostname": schema.StringAttribute{
				MarkdownDescription: "Host name the operating system gets: a DNS name of lower-case letters, digits and dashes, with dots between labels.",
				Required:            true,
				Validators: []validator.String{
					stringvalidator.LengthBetween(1, 253),
					stringvalidator.RegexMatches(instanceHostnamePattern, "must be a DNS name of lower-case letters, digits and dashes, with dots between labels"),
				},
				PlanModifiers: replace,
			},
			"image_id": schema.StringAttribute{
				MarkdownDescription: "ID of the OS image to install (`carbide_os_image`).",
				Required:            true,
				Validators:          []validator.String{stringvalidator.RegexMatches(uuidPattern, "must be a UUID")},
				PlanModifiers:       replace,
			},
			"user_data": schema.StringAttribute{
				MarkdownDescription: "cloud-init user data (a `#cloud-config` document, a script, or any format cloud-init reads), at most 64 KiB. Sensitive.",
				Optional:            true,
				Sensitive:           true,
				Validators:          []validator.String{stringvalidator.LengthBetween(1, 65536)},
				PlanModifiers:       replace,
			},
			"ssh_authorized_keys": schema.ListAttribute{
				MarkdownDescription: "SSH public keys, in authorized_keys format, for the image's default user (at most 32).",
				ElementType:         types.StringType,
				Optional:            true,
				Validators: []validator.List{
					listvalidator.SizeBetween(1, 32),
					listvalidator.ValueStringsAre(
						stringvalidator.LengthBetween(1, 16384),
						stringvalidator.RegexMatches(sshKeyPattern, "must be an SSH public key in authorized_keys format, such as \"ssh-ed25519 AAAA... user@host\"")),
				},
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
			},
			"labels": schema.MapAttribute{
				MarkdownDescription: "The instance's labels (at most 64).",
				ElementType:         types.StringType,
				Optional:            true,
				Validators:          labelsValidators,
				PlanModifiers:       []planmodifier.Map{mapplanmodifier.RequiresReplace()},
			},
			"machine_id": schema.StringAttribute{
				MarkdownDescription: "The machine to run on, which must be Ready. Give it or `selector`; with `selector`, the machine the API chose.",
				Optional:            true,
				Computed:            true,
				Validators:          []validator.String{stringvalidator.RegexMatches(uuidPattern, "must be a UUID")},
				PlanModifiers: []planmodifier.String{
					stringplanmodifier.RequiresReplaceIfConfigured(),
					stringplanmodifier.UseStateForUnknown(),
				},
			},
			"selector": schema.SingleNestedAttribute{
				MarkdownDescription: "Run on any Ready machine that matches all of these. Give it or `machine_id`.",
				Optional:            true,
				PlanModifiers:       []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"labels": schema.MapAttribute{
						MarkdownDescription: "The machine carries all of these labels with these values.",
						ElementType:         types.StringType,
						Optional:            true,
						Validators:          labelsValidators,
					},
					"min_cpus": schema.Int64Attribute{
						MarkdownDescription: "At least this many logical CPUs.",
						Optional:            true,
						Validators:          []validator.Int64{int64validator.Between(1, 1<<32-1)},
					},
					"min_memory_bytes": schema.Int64Attribute{
						MarkdownDescription: "At least this much memory, in bytes.",
						Optional:            true,
						Validators:          []validator.Int64{int64validator.AtLeast(1)},
					},
					"min_disk_bytes": schema.Int64Attribute{
						MarkdownDescription: "A disk at least this big, in bytes (the one the image is written to).",
						Optional:            true,
						Validators:          []validator.Int64{int64validator.AtLeast(1)},
					},
					"segment_id": schema.StringAttribute{
						MarkdownDescription: "An interface on this network segment (`carbide_segment`).",
						Optional:            true,
						Validators:          []validator.String{stringvalidator.RegexMatches(uuidPattern, "must be a UUID")},
					},
				},
			},
			"wipe_mode": schema.StringAttribute{
				MarkdownDescription: "How the machine's disks are wiped on release: `quick` (signatures and the first and last MiB " +
					"of each disk) or `full` (every block). Unset: the API's `--wipe-mode`.",
				Optional: true,
				Computed: true,
				Validators: []validator.String{
					stringvalidator.OneOf("quick", "full"),
				},
				PlanModifiers: []planmodifier.String{
					stringplanmodifier.RequiresReplaceIfConfigured(),
					stringplanmodifier.UseStateForUnknown(),
				},
			},
			"wait_for_cleaning": schema.BoolAttribute{
				MarkdownDescription: "Destroy waits until the released machine is cleaned and Ready again (within `timeouts.delete`). Changes in place.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"state": schema.StringAttribute{
				MarkdownDescription: "`provisioning`, `running`, `releasing`, `released` or `failed`.",
				Computed:            true,
			},
			"failure_reason": schema.StringAttribute{
				MarkdownDescription: "Why the instance failed; empty otherwise.",
				Computed:            true,
			},
			"address": schema.StringAttribute{
				MarkdownDescription: "The IPv4 address of the machine's interface.",
				Computed:            true,
			},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
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
	got, err := r.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: state.ID.ValueString()}))
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
	id := state.ID.ValueString()
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
	var diags diag.Diagnostics
	req := &instancev1.CreateInstanceRequest{
		Hostname: m.Hostname.ValueString(),
		ImageId:  m.ImageID.ValueString(),
		UserData: []byte(m.UserData.ValueString()),
		WipeMode: instancev1.WipeMode(instancev1.WipeMode_value["WIPE_MODE_"+strings.ToUpper(m.WipeMode.ValueString())]),
	}
	if len(req.UserData) == 0 {
		req.UserData = nil
	}
	diags.Append(m.SSHAuthorizedKeys.ElementsAs(ctx, &req.SshAuthorizedKeys, false)...)
	diags.Append(m.Labels.ElementsAs(ctx, &req.Labels, false)...)
	if !m.Selector.IsNull() && !m.Selector.IsUnknown() {
		var s selectorModel
		diags.Append(m.Selector.As(ctx, &s, objectAsOptions)...)
		sel := &instancev1.Selector{
			MinCpus:        uint32(s.MinCPUs.ValueInt64()),
			MinMemoryBytes: uint64(s.MinMemoryBytes.ValueInt64()),
			MinDiskBytes:   uint64(s.MinDiskBytes.ValueInt64()),
			SegmentId:      s.SegmentID.ValueString(),
		}
		diags.Append(s.Labels.ElementsAs(ctx, &sel.Labels, false)...)
		req.Target = &instancev1.CreateInstanceRequest_Selector{Selector: sel}
	} else {
		req.Target = &instancev1.CreateInstanceRequest_MachineId{MachineId: m.MachineID.ValueString()}
	}
	return req, diags
}

// fromProto sets the model from the instance: what the API holds, so that
// a change made outside Terraform shows as drift.
func (m *instanceModel) fromProto(ctx context.Context, inst *instancev1.Instance) diag.Diagnostics {
	var diags diag.Diagnostics
	m.ID = types.StringValue(inst.GetId())
	m.Hostname = types.StringValue(inst.GetHostname())
	m.ImageID = types.StringValue(inst.GetImageId())
	if len(inst.GetUserData()) > 0 {
		m.UserData = types.StringValue(string(inst.GetUserData()))
	} else {
		m.UserData = types.StringNull()
	}
	if len(inst.GetSshAuthorizedKeys()) > 0 {
		l, d := types.ListValueFrom(ctx, types.StringType, inst.GetSshAuthorizedKeys())
		diags.Append(d...)
		m.SSHAuthorizedKeys = l
	} else {
		m.SSHAuthorizedKeys = types.ListNull(types.StringType)
	}
	if len(inst.GetLabels()) > 0 {
		l, d := types.MapValueFrom(ctx, types.StringType, inst.GetLabels())
		diags.Append(d...)
		m.Labels = l
	} else {
		m.Labels = types.MapNull(types.StringType)
	}
	if id := inst.GetMachineId(); id != "" {
		m.MachineID = types.StringValue(id)
	} else if m.MachineID.IsUnknown() {
		m.MachineID = types.StringNull()
	}
	if sel := inst.GetSelector(); sel != nil {
		s := selectorModel{
			Labels:         types.MapNull(types.StringType),
			MinCPUs:        int64OrNull(int64(sel.GetMinCpus())),
			MinMemoryBytes: int64OrNull(int64(sel.GetMinMemoryBytes())),
			MinDiskBytes:   int64OrNull(int64(sel.GetMinDiskBytes())),
			SegmentID:      types.StringNull(),
		}
		if len(sel.GetLabels()) > 0 {
			l, d := types.MapValueFrom(ctx, types.StringType, sel.GetLabels())
			diags.Append(d...)
			s.Labels = l
		}
		if sel.GetSegmentId() != "" {
			s.SegmentID = types.StringValue(sel.GetSegmentId())
		}
		o, d := types.ObjectValueFrom(ctx, selectorAttrTypes(), s)
		diags.Append(d...)
		m.Selector = o
	} else {
		m.Selector = types.ObjectNull(selectorAttrTypes())
	}
	m.WipeMode = types.StringNull()
	if wm := inst.GetWipeMode(); wm != instancev1.WipeMode_WIPE_MODE_UNSPECIFIED {
		m.WipeMode = types.StringValue(strings.ToLower(strings.TrimPrefix(wm.String(), "WIPE_MODE_")))
	}
	if m.WaitForCleaning.IsNull() || m.WaitForCleaning.IsUnknown() {
		m.WaitForCleaning = types.BoolValue(false)
	}
	m.State = types.StringValue(strings.ToLower(strings.TrimPrefix(inst.GetState().String(), "INSTANCE_STATE_")))
	m.FailureReason = types.StringValue(inst.GetFailureReason())
	m.Address = types.StringValue(inst.GetAddress())
	if m.Timeouts.IsUnknown() {
		m.Timeouts.Object = types.ObjectNull(m.Timeouts.AttributeTypes(ctx))
	}
	return diags
}

// int64OrNull is n, or null for 0 (unset in the API).
func int64OrNull(n int64) types.Int64 {
	if n == 0 {
		return types.Int64Null()
	}
	return types.Int64Value(n)
}

// orNone is s, or "(no reason given)" when empty.
func orNone(s string) string {
	if s == "" {
		return "(no reason given)"
	}
	return s
}
