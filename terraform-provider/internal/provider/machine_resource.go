package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

var (
	_ resource.ResourceWithConfigure   = (*machineResource)(nil)
	_ resource.ResourceWithImportState = (*machineResource)(nil)
)

// machineResource is carbide_machine: a machine registered by the MAC
// addresses of its NICs (CreateMachine), or an existing one adopted, with
// its hostname, labels, maintenance flag and BMC.
type machineResource struct {
	client *carbide.Client
}

func newMachineResource() resource.Resource { return &machineResource{} }

func (r *machineResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine"
}

func (r *machineResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *machineResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan machineResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	macs, labels, diags := plan.createInput(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	hostname := plan.Hostname.ValueString()
	created, err := r.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
		Hostname: hostname,
		Macs:     macs,
		Labels:   labels,
	}))
	var m *machinev1.Machine
	switch {
	case err == nil:
		m = created.Msg.GetMachine()
	case connect.CodeOf(err) == connect.CodeAlreadyExists && plan.Adopt.ValueBool():
		m, err = r.adopt(ctx, macs)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("macs"), "Cannot adopt the machine", err.Error())
			return
		}
		// Set what the configuration says on the adopted machine.
		var mask []string
		upd := &machinev1.Machine{Id: m.GetId()}
		if !plan.Hostname.IsNull() && !plan.Hostname.IsUnknown() && hostname != m.GetHostname() {
			upd.Hostname, mask = hostname, append(mask, "hostname")
		}
		if !maps.Equal(labels, m.GetLabels()) {
			upd.Labels, mask = labels, append(mask, "labels")
		}
		if len(mask) > 0 {
			got, err := r.update(ctx, upd, mask)
			if err != nil {
				apiError(&resp.Diagnostics, "update the adopted machine", err)
				return
			}
			m = got
		}
	case connect.CodeOf(err) == connect.CodeAlreadyExists:
		resp.Diagnostics.AddAttributeError(path.Root("macs"), "Cannot register the machine",
			err.Error()+"\n\nA machine with one of these MAC addresses exists already (DHCP or the discovery agent "+
				"may have enrolled it). Set adopt = true to manage that machine, or import it: "+
				"terraform import <address> <machine id>.")
		return
	default:
		apiError(&resp.Diagnostics, "register the machine", err)
		return
	}
	// Save the machine at once, so that a failure below leaves it in the
	// state (tainted) instead of orphaned.
	plan.Id = types.StringValue(m.GetId())
	if plan.Maintenance.ValueBool() && !m.GetMaintenance() {
		got, err := r.update(ctx, &machinev1.Machine{Id: m.GetId(), Maintenance: true}, []string{"maintenance"})
		if err != nil {
			resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), plan.Id)...)
			apiError(&resp.Diagnostics, "put the machine in maintenance", err)
			return
		}
		m = got
	}
	bmc, diags := r.applyBMC(ctx, req.Config, m.GetId(), plan.BMC, types.ObjectNull(bmcAttrTypes()), true)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), plan.Id)...)
		return
	}
	resp.Diagnostics.Append(plan.fromProto(ctx, m, bmc)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// adopt returns the existing machine that owns every one of macs.
func (r *machineResource) adopt(ctx context.Context, macs []string) (*machinev1.Machine, error) {
	found, err := r.client.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{Mac: macs[0]}))
	if err != nil {
		return nil, fmt.Errorf("look up the machine of %s: %w", macs[0], err)
	}
	if len(found.Msg.GetMachines()) == 0 {
		return nil, fmt.Errorf("no machine has MAC %s, yet registering it said one does; another MAC of the list belongs to a machine: "+
			"list only the MAC addresses of one machine", macs[0])
	}
	m := found.Msg.GetMachines()[0]
	have := machineMACs(m)
	for _, mac := range macs {
		if !slices.Contains(have, strings.ToLower(mac)) {
			return nil, fmt.Errorf("machine %s has MAC %s but not %s (it has %s): list only the MAC addresses of one machine",
				m.GetId(), macs[0], mac, strings.Join(have, ", "))
		}
	}
	return m, nil
}

func (r *machineResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state machineResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	got, err := r.client.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: state.Id.ValueString()}))
	if isNotFound(err) {
		// Deleted outside Terraform: the next plan creates it again.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		apiError(&resp.Diagnostics, "read the machine", err)
		return
	}
	bmc, err := r.getBMC(ctx, state.Id.ValueString())
	if err != nil {
		apiError(&resp.Diagnostics, "read the machine's BMC", err)
		return
	}
	resp.Diagnostics.Append(state.fromProto(ctx, got.Msg.GetMachine(), bmc)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *machineResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state machineResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	_, labels, diags := plan.createInput(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	upd := &machinev1.Machine{Id: state.Id.ValueString()}
	var mask []string
	if !plan.Hostname.IsUnknown() && !plan.Hostname.Equal(state.Hostname) {
		upd.Hostname, mask = plan.Hostname.ValueString(), append(mask, "hostname")
	}
	if !plan.Labels.Equal(state.Labels) {
		upd.Labels, mask = labels, append(mask, "labels")
	}
	if !plan.Maintenance.Equal(state.Maintenance) {
		upd.Maintenance, mask = plan.Maintenance.ValueBool(), append(mask, "maintenance")
	}
	var m *machinev1.Machine
	if len(mask) > 0 {
		got, err := r.update(ctx, upd, mask)
		if err != nil {
			apiError(&resp.Diagnostics, "update the machine", err)
			return
		}
		m = got
	} else {
		got, err := r.client.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: upd.Id}))
		if err != nil {
			apiError(&resp.Diagnostics, "read the machine", err)
			return
		}
		m = got.Msg.GetMachine()
	}
	bmc, diags := r.applyBMC(ctx, req.Config, upd.Id, plan.BMC, state.BMC, false)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	plan.Id = state.Id
	resp.Diagnostics.Append(plan.fromProto(ctx, m, bmc)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// update calls UpdateMachine with the fields of mask.
func (r *machineResource) update(ctx context.Context, m *machinev1.Machine, mask []string) (*machinev1.Machine, error) {
	got, err := r.client.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine:    m,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
	}))
	if err != nil {
		return nil, err
	}
	return got.Msg.GetMachine(), nil
}

func (r *machineResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state machineResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.Id.ValueString()
	if _, err := r.client.BMC.DeleteBMC(ctx, connect.NewRequest(&bmcv1.DeleteBMCRequest{MachineId: id})); err != nil && !isNotFound(err) {
		apiError(&resp.Diagnostics, "delete the machine's BMC", err)
		return
	}
	if _, err := r.client.Machines.DeleteMachine(ctx, connect.NewRequest(&machinev1.DeleteMachineRequest{Id: id})); err != nil && !isNotFound(err) {
		apiError(&resp.Diagnostics, "delete the machine", err)
	}
}

func (r *machineResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	// An imported machine is managed as if it had been adopted.
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("adopt"), types.BoolValue(false))...)
}

// machineMACs are the MAC addresses of m's interfaces, in lower case.
func machineMACs(m *machinev1.Machine) []string {
	var macs []string
	for _, i := range m.GetInterfaces() {
		macs = append(macs, strings.ToLower(i.GetMac()))
	}
	return macs
}

// createInput is the plan's MACs and labels for the API.
func (m *machineResourceModel) createInput(ctx context.Context) ([]string, map[string]string, diag.Diagnostics) {
	var diags diag.Diagnostics
	var macs []string
	var labels map[string]string
	if !m.MACs.IsUnknown() {
		diags.Append(m.MACs.ElementsAs(ctx, &macs, false)...)
	}
	if !m.Labels.IsUnknown() {
		diags.Append(m.Labels.ElementsAs(ctx, &labels, false)...)
	}
	return macs, labels, diags
}
