package provider

import (
	"context"
	"regexp"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
)

// The API's rules, checked at plan time too.
var (
	macPattern      = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)
	hostnamePattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$`)
)

// machineResourceModel is carbide_machine's configuration and state: the
// generated Machine model, plus the MACs it is registered by, adoption
// and its BMC.
type machineResourceModel struct {
	generated.MachineModel
	MACs  types.Set    `tfsdk:"macs"`
	Adopt types.Bool   `tfsdk:"adopt"`
	BMC   types.Object `tfsdk:"bmc"`
}

// bmcModel is carbide_machine's bmc block: the generated SetBMCRequest
// model (without machine_id), plus password_version.
type bmcModel struct {
	generated.SetBMCRequestModel
	PasswordVersion types.String `tfsdk:"password_version"`
}

func bmcAttrTypes() map[string]attr.Type {
	t := generated.SetBMCRequestAttrTypes()
	t["password_version"] = types.StringType
	return t
}

func (r *machineResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	// The machine's own attributes are generated from the API's Machine
	// message; the MACs, adoption and the BMC block are this resource's.
	attrs := generated.MachineResourceAttributes()
	attrs["macs"] = schema.SetAttribute{
		MarkdownDescription: "The set of MAC addresses of the machine's NICs (six colon-separated hex bytes, such as " +
			"`52:54:00:12:34:56`). Listing a MAC the machine does not have replaces it; leaving one out changes nothing " +
			"in Carbide (the machine keeps its interfaces).",
		ElementType: types.StringType,
		Required:    true,
		Validators: []validator.Set{
			setvalidator.SizeBetween(1, 64),
			setvalidator.ValueStringsAre(stringvalidator.RegexMatches(macPattern,
				"must be a MAC address of six colon-separated hex bytes, such as 52:54:00:12:34:56")),
		},
		PlanModifiers: []planmodifier.Set{setplanmodifier.RequiresReplaceIf(macsAdded,
			"Replaces the machine when a MAC address it does not have is listed.",
			"Replaces the machine when a MAC address it does not have is listed.")},
	}
	attrs["adopt"] = schema.BoolAttribute{
		MarkdownDescription: "When a machine with these MAC addresses exists already (DHCP or the discovery " +
			"agent enrolled it), manage that machine instead of failing. Destroying the resource deletes it all the same.",
		Optional: true,
		Computed: true,
		Default:  booldefault.StaticBool(false),
	}
	bmc := generated.SetBMCRequestResourceAttributes()
	password := bmc["password"].(schema.StringAttribute)
	password.Description = ""
	password.MarkdownDescription = "BMC password, write-only: sent to the API, which seals it, and never kept in the " +
		"Terraform state or plan. It is sent when the BMC is set up and whenever `password_version` changes. Needs `username`."
	password.Validators = append(password.Validators,
		stringvalidator.LengthAtLeast(1),
		stringvalidator.AlsoRequires(path.MatchRelative().AtParent().AtName("username")))
	bmc["password"] = password
	bmc["password_version"] = schema.StringAttribute{
		MarkdownDescription: "Any value; change it to send `password` again (a rotated password).",
		Optional:            true,
	}
	attrs["bmc"] = schema.SingleNestedAttribute{
		MarkdownDescription: "The machine's baseboard management controller, which Carbide powers the machine " +
			"through (BMCService.SetBMC). Removing the block forgets the BMC.",
		Optional:   true,
		Attributes: bmc,
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A bare-metal machine, registered by the MAC addresses of its NICs before it first boots, " +
			"or adopted when DHCP or the discovery agent enrolled it already (`adopt`). Its hostname, labels, " +
			"maintenance flag and BMC change in place; other MAC addresses replace it. Destroying it forgets the " +
			"machine, which the API refuses while an instance runs on it.",
		Attributes: attrs,
	}
}

// macsAdded replaces the machine when the configuration lists a MAC that
// the state does not hold (the state holds every MAC of an imported one).
func macsAdded(ctx context.Context, req planmodifier.SetRequest, resp *setplanmodifier.RequiresReplaceIfFuncResponse) {
	if req.StateValue.IsNull() || req.PlanValue.IsUnknown() {
		return
	}
	var have, want []string
	resp.Diagnostics.Append(req.StateValue.ElementsAs(ctx, &have, false)...)
	resp.Diagnostics.Append(req.PlanValue.ElementsAs(ctx, &want, false)...)
	for i := range have {
		have[i] = strings.ToLower(have[i])
	}
	for _, mac := range want {
		if !slices.Contains(have, strings.ToLower(mac)) {
			resp.RequiresReplace = true
			return
		}
	}
}

// fromProto sets the model from the machine m and its BMC (nil: none).
func (m *machineResourceModel) fromProto(ctx context.Context, pm *machinev1.Machine, bmc *bmcv1.BMC) diag.Diagnostics {
	diags := m.MachineModel.FromProto(ctx, pm)
	if m.MACs.IsNull() || m.MACs.IsUnknown() {
		// Imported: the machine's MACs.
		l, d := types.SetValueFrom(ctx, types.StringType, machineMACs(pm))
		diags.Append(d...)
		m.MACs = l
	}
	if m.Adopt.IsNull() || m.Adopt.IsUnknown() {
		m.Adopt = types.BoolValue(false)
	}
	var d diag.Diagnostics
	m.BMC, d = bmcFromProto(ctx, m.BMC, bmc)
	diags.Append(d...)
	return diags
}

// bmcFromProto is the bmc block for b (nil: none); prior is the block
// in the plan or state, whose password_version it keeps.
func bmcFromProto(ctx context.Context, prior types.Object, b *bmcv1.BMC) (types.Object, diag.Diagnostics) {
	if b == nil {
		return types.ObjectNull(bmcAttrTypes()), nil
	}
	var p bmcModel
	if !prior.IsNull() && !prior.IsUnknown() {
		if d := prior.As(ctx, &p, objectAsOptions); d.HasError() {
			return prior, d
		}
	}
	set := &bmcv1.SetBMCRequest{Address: b.GetAddress(), Port: b.GetPort(), Protocol: b.GetProtocol(), Username: b.GetUsername()}
	if set.Protocol == bmcv1.Protocol_PROTOCOL_AUTO && (p.Protocol.IsNull() || p.Protocol.IsUnknown()) {
		// Auto is what an unset protocol means.
		set.Protocol = bmcv1.Protocol_PROTOCOL_UNSPECIFIED
	}
	diags := p.SetBMCRequestModel.FromProto(ctx, set)
	if p.PasswordVersion.IsUnknown() {
		p.PasswordVersion = types.StringNull()
	}
	o, d := types.ObjectValueFrom(ctx, bmcAttrTypes(), p)
	diags.Append(d...)
	return o, diags
}

// getBMC returns the machine's BMC, nil when it has none.
func (r *machineResource) getBMC(ctx context.Context, machineID string) (*bmcv1.BMC, error) {
	got, err := r.client.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: machineID}))
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return got.Msg.GetBmc(), nil
}

// applyBMC makes the machine's BMC what the plan says, and returns it.
// The password, write-only, is read from the configuration; it is sent
// when the BMC is new or password_version changed.
func (r *machineResource) applyBMC(ctx context.Context, config tfsdk.Config, machineID string, plan, prior types.Object, creating bool) (*bmcv1.BMC, diag.Diagnostics) {
	var diags diag.Diagnostics
	if plan.IsNull() {
		if !prior.IsNull() {
			if _, err := r.client.BMC.DeleteBMC(ctx, connect.NewRequest(&bmcv1.DeleteBMCRequest{MachineId: machineID})); err != nil && !isNotFound(err) {
				apiError(&diags, "forget the machine's BMC", err)
			}
		}
		return nil, diags
	}
	var want, had bmcModel
	diags.Append(plan.As(ctx, &want, objectAsOptions)...)
	if !prior.IsNull() && !prior.IsUnknown() {
		diags.Append(prior.As(ctx, &had, objectAsOptions)...)
	}
	var password types.String
	diags.Append(config.GetAttribute(ctx, path.Root("bmc").AtName("password"), &password)...)
	if diags.HasError() {
		return nil, diags
	}
	sendPassword := creating || prior.IsNull() || !want.PasswordVersion.Equal(had.PasswordVersion)
	same := !prior.IsNull() && want.Address.Equal(had.Address) && want.Port.Equal(had.Port) &&
		want.Protocol.Equal(had.Protocol) && want.Username.Equal(had.Username)
	if same && !sendPassword {
		b, err := r.getBMC(ctx, machineID)
		if err != nil {
			apiError(&diags, "read the machine's BMC", err)
		}
		return b, diags
	}
	req, d := want.SetBMCRequestModel.ToProto(ctx)
	diags.Append(d...)
	if diags.HasError() {
		return nil, diags
	}
	req.MachineId = machineID
	req.Password = ""
	if sendPassword {
		req.Password = password.ValueString()
	}
	got, err := r.client.BMC.SetBMC(ctx, connect.NewRequest(req))
	if err != nil {
		apiError(&diags, "set the machine's BMC", err)
		return nil, diags
	}
	return got.Msg.GetBmc(), diags
}
