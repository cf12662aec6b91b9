package provider

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/terraform-provider/internal/generated"
	"github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
)

var (
	_ datasource.DataSourceWithConfigure        = (*machineDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*machineDataSource)(nil)
)

// machineDataSource is carbide_machine: one machine, found by ID, host
// name or MAC address.
type machineDataSource struct {
	client *carbide.Client
}

func newMachineDataSource() datasource.DataSource { return &machineDataSource{} }

// machineDataModel is carbide_machine's configuration and result: the
// generated Machine model, plus the MAC to look it up by.
type machineDataModel struct {
	generated.MachineModel
	MAC types.String `tfsdk:"mac"`
}

func (d *machineDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine"
}

// machineLookupAttributes are carbide_machine's attributes: the
// generated Machine attributes, with id and hostname also optional inputs
// that find it, and mac.
func machineLookupAttributes() map[string]schema.Attribute {
	attrs := generated.MachineDataSourceAttributes()
	attrs["id"] = schema.StringAttribute{
		MarkdownDescription: "The machine's ID (a UUID). Give one of `id`, `hostname` and `mac`.",
		Optional:            true,
		Computed:            true,
		Validators:          []validator.String{tfvalidate.UUID()},
	}
	attrs["hostname"] = schema.StringAttribute{
		MarkdownDescription: "Host name of the machine; exactly one machine must have it.",
		Optional:            true,
		Computed:            true,
		Validators: []validator.String{
			stringvalidator.LengthBetween(1, 63),
			stringvalidator.RegexMatches(hostnamePattern, "must be lower-case letters, digits and inner hyphens"),
		},
	}
	attrs["mac"] = schema.StringAttribute{
		MarkdownDescription: "MAC address of one of the machine's NICs.",
		Optional:            true,
		Validators: []validator.String{stringvalidator.RegexMatches(macPattern,
			"must be a MAC address of six colon-separated hex bytes, such as 52:54:00:12:34:56")},
	}
	return attrs
}

func (d *machineDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "One machine, found by its ID, its host name or the MAC address of one of its NICs.",
		Attributes:          machineLookupAttributes(),
	}
}

func (d *machineDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("hostname"), path.MatchRoot("mac")),
	}
}

func (d *machineDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *machineDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m machineDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var found *machinev1.Machine
	switch {
	case !m.Id.IsNull():
		got, err := d.client.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: m.Id.ValueString()}))
		if err != nil {
			apiError(&resp.Diagnostics, "read machine "+m.Id.ValueString(), err)
			return
		}
		found = got.Msg.GetMachine()
	case !m.MAC.IsNull():
		got, err := d.client.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{Mac: m.MAC.ValueString()}))
		if err != nil {
			apiError(&resp.Diagnostics, "look up the machine of MAC "+m.MAC.ValueString(), err)
			return
		}
		if len(got.Msg.GetMachines()) == 0 {
			resp.Diagnostics.AddAttributeError(path.Root("mac"), "No such machine",
				fmt.Sprintf("No machine has MAC address %s.", m.MAC.ValueString()))
			return
		}
		found = got.Msg.GetMachines()[0]
	default:
		var ids []string
		for mach, err := range d.client.AllMachines(ctx, &machinev1.ListMachinesRequest{Hostname: m.Hostname.ValueString()}) {
			if err != nil {
				apiError(&resp.Diagnostics, "look up the machine of host name "+m.Hostname.ValueString(), err)
				return
			}
			found = mach
			ids = append(ids, mach.GetId())
		}
		switch len(ids) {
		case 0:
			resp.Diagnostics.AddAttributeError(path.Root("hostname"), "No such machine",
				fmt.Sprintf("No machine has host name %q.", m.Hostname.ValueString()))
			return
		case 1:
		default:
			resp.Diagnostics.AddAttributeError(path.Root("hostname"), "Several machines have this host name",
				fmt.Sprintf("Machines %s all have host name %q: find the machine by id or mac instead.",
					strings.Join(ids, ", "), m.Hostname.ValueString()))
			return
		}
	}
	resp.Diagnostics.Append(m.fromProto(ctx, found)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// fromProto sets the model's computed attributes from pm.
func (m *machineDataModel) fromProto(ctx context.Context, pm *machinev1.Machine) diag.Diagnostics {
	return m.MachineModel.FromProto(ctx, pm)
}
