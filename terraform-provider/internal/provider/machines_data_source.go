package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
)

var _ datasource.DataSourceWithConfigure = (*machinesDataSource)(nil)

// machinesDataSource is carbide_machines: the machines that match filters.
type machinesDataSource struct {
	client *carbide.Client
}

func newMachinesDataSource() datasource.DataSource { return &machinesDataSource{} }

// machinesModel is carbide_machines' configuration and result.
type machinesModel struct {
	States   types.List `tfsdk:"states"`
	Labels   types.Map  `tfsdk:"labels"`
	IDs      types.List `tfsdk:"ids"`
	Machines types.List `tfsdk:"machines"`
}

func (d *machinesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machines"
}

func (d *machinesDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The machines that match every filter given: in any of `states`, and carrying all of `labels`.",
		Attributes: map[string]schema.Attribute{
			"states": schema.ListAttribute{
				MarkdownDescription: "Only machines in one of these states: " + backtickList(machineStateNames()) + ".",
				ElementType:         types.StringType,
				Optional:            true,
				Validators: []validator.List{
					listvalidator.ValueStringsAre(stringvalidator.OneOf(machineStateNames()...)),
					listvalidator.UniqueValues(),
				},
			},
			"labels": schema.MapAttribute{
				MarkdownDescription: "Only machines that carry all of these labels (key and value).",
				ElementType:         types.StringType,
				Optional:            true,
			},
			"ids": schema.ListAttribute{
				MarkdownDescription: "The IDs of the matching machines, in the API's order.",
				ElementType:         types.StringType,
				Computed:            true,
			},
			"machines": schema.ListNestedAttribute{
				MarkdownDescription: "The matching machines, in the API's order.",
				Computed:            true,
				NestedObject:        schema.NestedAttributeObject{Attributes: generated.MachineDataSourceAttributes()},
			},
		},
	}
}

func (d *machinesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *machinesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m machinesModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	list := &machinev1.ListMachinesRequest{}
	var states []string
	resp.Diagnostics.Append(m.States.ElementsAs(ctx, &states, false)...)
	resp.Diagnostics.Append(m.Labels.ElementsAs(ctx, &list.Labels, false)...)
	if resp.Diagnostics.HasError() {
		return
	}
	for _, s := range states {
		list.States = append(list.States, machineStateFromName(s))
	}
	ids := []string{}
	objs := []attr.Value{}
	machineType := types.ObjectType{AttrTypes: generated.MachineAttrTypes()}
	for mach, err := range d.client.AllMachines(ctx, list) {
		if err != nil {
			apiError(&resp.Diagnostics, "list machines", err)
			return
		}
		ids = append(ids, mach.GetId())
		var gm generated.MachineModel
		resp.Diagnostics.Append(gm.FromProto(ctx, mach)...)
		o, diags := types.ObjectValueFrom(ctx, machineType.AttrTypes, gm)
		resp.Diagnostics.Append(diags...)
		objs = append(objs, o)
	}
	l, diags := types.ListValueFrom(ctx, types.StringType, ids)
	resp.Diagnostics.Append(diags...)
	m.IDs = l
	ml, diags := types.ListValue(machineType, objs)
	resp.Diagnostics.Append(diags...)
	m.Machines = ml
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// machineStateNames are the names of the machine states in configurations:
// the enum's names without the prefix, in lower case ("ready").
func machineStateNames() []string {
	var names []string
	vals := machinev1.MachineState(0).Descriptor().Values()
	for i := range vals.Len() {
		if n := vals.Get(i).Number(); n != 0 {
			names = append(names, machineStateName(machinev1.MachineState(n)))
		}
	}
	return names
}

// machineStateName is the configuration name of s.
func machineStateName(s machinev1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}

// machineStateFromName is the state named n (one of machineStateNames).
func machineStateFromName(n string) machinev1.MachineState {
	return machinev1.MachineState(machinev1.MachineState_value["MACHINE_STATE_"+strings.ToUpper(n)])
}

// backtickList is names as `a`, `b` or `c`.
func backtickList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("`%s`", n)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
