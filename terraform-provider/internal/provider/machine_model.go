package provider

import (
	"context"
	"regexp"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
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
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

// The API's rules, checked at plan time too.
var (
	macPattern      = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)
	hostnamePattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$`)
	uuidPattern     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	labelKeyPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
)

// machineResourceModel is carbide_machine's configuration and state.
type machineResourceModel struct {
	ID          types.String `tfsdk:"id"`
	MACs        types.Set    `tfsdk:"macs"`
	Adopt       types.Bool   `tfsdk:"adopt"`
	Hostname    types.String `tfsdk:"hostname"`
	Labels      types.Map    `tfsdk:"labels"`
	Maintenance types.Bool   `tfsdk:"maintenance"`
	State       types.String `tfsdk:"state"`
	HardwareID  types.String `tfsdk:"hardware_id"`
	Interfaces  types.List   `tfsdk:"interfaces"`
	BMC         types.Object `tfsdk:"bmc"`
}

// bmcModel is carbide_machine's bmc block.
type bmcModel struct {
	Address         types.String `tfsdk:"address"`
	Port            types.Int64  `tfsdk:"port"`
	Protocol        types.String `tfsdk:"protocol"`
	Username        types.String `tfsdk:"username"`
	Password        types.String `tfsdk:"password"`
	PasswordVersion types.String `tfsdk:"password_version"`
}

func bmcAttrTypes() map[string]attr.Type {
	return map[string]attr.Type{
		"address":          types.StringType,
		"port":             types.Int64Type,
		"protocol":         types.StringType,
		"username":         types.StringType,
		"password":         types.StringType,
		"password_version": types.StringType,
	}
}

func interfaceAttrTypes() map[string]attr.Type {
	return map[string]attr.Type{
		"mac":        types.StringType,
		"segment_id": types.StringType,
		"address":    types.StringType,
	}
}

func (r *machineResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A bare-metal machine, registered by the MAC addresses of its NICs before it first boots, " +
			"or adopted when DHCP or the discovery agent enrolled it already (`adopt`). Its hostname, labels, " +
			"maintenance flag and BMC change in place; other MAC addresses replace it. Destroying it forgets the " +
			"machine, which the API refuses while an instance runs on it.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The machine's ID (a UUID).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"macs": schema.SetAttribute{
				MarkdownDescription: "The set of MAC addresses of the machine's NICs (six colon-separated hex bytes, such as " +
					"`52:54:00:12:34:56`). Listing a MAC the machine does not have replaces it.",
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
			},
			"adopt": schema.BoolAttribute{
				MarkdownDescription: "When a machine with these MAC addresses exists already (DHCP or the discovery " +
					"agent enrolled it), manage that machine instead of failing. Destroying the resource deletes it all the same.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"hostname": schema.StringAttribute{
				MarkdownDescription: "Host name (lower-case letters, digits and hyphens, at most 63). " +
					"Unset keeps the one the machine has.",
				Optional: true,
				Computed: true,
				Validators: []validator.String{
					stringvalidator.LengthAtMost(63),
					stringvalidator.RegexMatches(hostnamePattern, "must be lower-case letters, digits and inner hyphens"),
				},
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"labels": schema.MapAttribute{
				MarkdownDescription: "Labels (at most 64) that instances select machines by.",
				ElementType:         types.StringType,
				Optional:            true,
				Validators: []validator.Map{
					mapvalidator.SizeAtMost(64),
					mapvalidator.KeysAre(stringvalidator.RegexMatches(labelKeyPattern,
						"must be 1 to 63 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit")),
					mapvalidator.ValueStringsAre(stringvalidator.LengthAtMost(255)),
				},
			},
			"maintenance": schema.BoolAttribute{
				MarkdownDescription: "In maintenance, the machine takes no instance; clearing it returns the machine to " +
					"the state it was in.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"state": schema.StringAttribute{
				MarkdownDescription: "Lifecycle state: " + backtickList(machineStateNames()) + ".",
				Computed:            true,
			},
			"hardware_id": schema.StringAttribute{
				MarkdownDescription: "Hardware identity the discovery agent reported (empty until it did).",
				Computed:            true,
			},
			"interfaces": schema.ListNestedAttribute{
				MarkdownDescription: "The machine's network interfaces as the API knows them.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"mac":        schema.StringAttribute{Computed: true, MarkdownDescription: "MAC address."},
					"segment_id": schema.StringAttribute{Computed: true, MarkdownDescription: "Segment the interface's lease is in."},
					"address":    schema.StringAttribute{Computed: true, MarkdownDescription: "IP address leased to the interface."},
				}},
			},
			"bmc": schema.SingleNestedAttribute{
				MarkdownDescription: "The machine's baseboard management controller, which Carbide powers the machine " +
					"through. Removing the block forgets the BMC.",
				Optional: true,
				Attributes: map[string]schema.Attribute{
					"address": schema.StringAttribute{
						MarkdownDescription: "Host name or IP address of the BMC.",
						Required:            true,
						Validators:          []validator.String{stringvalidator.LengthBetween(1, 253)},
					},
					"port": schema.Int64Attribute{
						MarkdownDescription: "Port; unset is the protocol's default (623 for IPMI, 443 for Redfish).",
						Optional:            true,
						Validators:          []validator.Int64{int64validator.Between(1, 65535)},
					},
					"protocol": schema.StringAttribute{
						MarkdownDescription: "`auto` (Redfish, then IPMI), `ipmi` or `redfish`.",
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString("auto"),
						Validators:          []validator.String{stringvalidator.OneOf("auto", "ipmi", "redfish")},
					},
					"username": schema.StringAttribute{
						MarkdownDescription: "BMC user. Unset: the BMC uses the default credentials of the segment that holds its address.",
						Optional:            true,
						Validators:          []validator.String{stringvalidator.LengthBetween(1, 64)},
					},
					"password": schema.StringAttribute{
						MarkdownDescription: "BMC password, write-only: sent to the API, which seals it, and never kept in the " +
							"Terraform state or plan. It is sent when the BMC is set up and whenever `password_version` changes. Needs `username`.",
						Optional:  true,
						Sensitive: true,
						WriteOnly: true,
						Validators: []validator.String{
							stringvalidator.LengthBetween(1, 128),
							stringvalidator.AlsoRequires(path.MatchRelative().AtParent().AtName("username")),
						},
					},
					"password_version": schema.StringAttribute{
						MarkdownDescription: "Any value; change it to send `password` again (a rotated password).",
						Optional:            true,
					},
				},
			},
		},
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
	var diags diag.Diagnostics
	m.ID = types.StringValue(pm.GetId())
	if m.MACs.IsNull() || m.MACs.IsUnknown() {
		// Imported: the machine's MACs.
		l, d := types.SetValueFrom(ctx, types.StringType, machineMACs(pm))
		diags.Append(d...)
		m.MACs = l
	}
	if m.Adopt.IsNull() || m.Adopt.IsUnknown() {
		m.Adopt = types.BoolValue(false)
	}
	m.Hostname = types.StringValue(pm.GetHostname())
	if len(pm.GetLabels()) == 0 && (m.Labels.IsNull() || m.Labels.IsUnknown()) {
		m.Labels = types.MapNull(types.StringType)
	} else {
		l, d := types.MapValueFrom(ctx, types.StringType, pm.GetLabels())
		diags.Append(d...)
		m.Labels = l
	}
	m.Maintenance = types.BoolValue(pm.GetMaintenance())
	m.State = types.StringValue(machineStateName(pm.GetState()))
	m.HardwareID = types.StringValue(pm.GetHardwareId())
	l, d := interfacesValue(pm)
	diags.Append(d...)
	m.Interfaces = l
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
	out := bmcModel{
		Address:         types.StringValue(b.GetAddress()),
		Port:            types.Int64Null(),
		Protocol:        types.StringValue(strings.ToLower(strings.TrimPrefix(b.GetProtocol().String(), "PROTOCOL_"))),
		Username:        types.StringNull(),
		Password:        types.StringNull(), // write-only: never in the state
		PasswordVersion: p.PasswordVersion,
	}
	if out.PasswordVersion.IsUnknown() {
		out.PasswordVersion = types.StringNull()
	}
	if b.GetPort() != 0 {
		out.Port = types.Int64Value(int64(b.GetPort()))
	}
	if b.GetUsername() != "" {
		out.Username = types.StringValue(b.GetUsername())
	}
	return types.ObjectValueFrom(ctx, bmcAttrTypes(), out)
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
	req := &bmcv1.SetBMCRequest{
		MachineId: machineID,
		Address:   want.Address.ValueString(),
		Port:      uint32(want.Port.ValueInt64()),
		Protocol:  bmcv1.Protocol(bmcv1.Protocol_value["PROTOCOL_"+strings.ToUpper(want.Protocol.ValueString())]),
		Username:  want.Username.ValueString(),
	}
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
