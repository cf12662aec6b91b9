package machines

import (
	"context"
	"fmt"
	"strings"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var stateToProto = map[machine.State]machinev1.MachineState{
	machine.StateDiscovered:   machinev1.MachineState_MACHINE_STATE_DISCOVERED,
	machine.StateInventoried:  machinev1.MachineState_MACHINE_STATE_INVENTORIED,
	machine.StateReady:        machinev1.MachineState_MACHINE_STATE_READY,
	machine.StateProvisioning: machinev1.MachineState_MACHINE_STATE_PROVISIONING,
	machine.StateAssigned:     machinev1.MachineState_MACHINE_STATE_ASSIGNED,
	machine.StateCleaning:     machinev1.MachineState_MACHINE_STATE_CLEANING,
	machine.StateFailed:       machinev1.MachineState_MACHINE_STATE_FAILED,
	machine.StateMaintenance:  machinev1.MachineState_MACHINE_STATE_MAINTENANCE,
}

// StateToProto converts a stored state to its API enum.
func StateToProto(s machine.State) machinev1.MachineState { return stateToProto[s] }

// StateFromProto converts an API state to the stored one.
func StateFromProto(s machinev1.MachineState) (machine.State, bool) {
	for k, v := range stateToProto {
		if v == s {
			return k, true
		}
	}
	return "", false
}

// CanonicalMAC lower-cases a MAC address that protovalidate has already
// checked to be colon-separated hex.
func CanonicalMAC(mac string) string { return strings.ToLower(mac) }

// Load reads machines with their interfaces and current addresses, in the
// order of ids; missing ids are left out.
func Load(ctx context.Context, client *ent.Client, ids ...uuid.UUID) ([]*machinev1.Machine, error) {
	ms, err := client.Machine.Query().Where(machine.IDIn(ids...)).
		WithNics(func(q *ent.NICQuery) { q.Order(ent.Asc(nic.FieldMAC)) }).
		All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machines: %w", err)
	}
	byID := make(map[uuid.UUID]*ent.Machine, len(ms))
	for _, m := range ms {
		byID[m.ID] = m
	}
	ordered := make([]*ent.Machine, 0, len(ms))
	for _, id := range ids {
		if m, ok := byID[id]; ok {
			ordered = append(ordered, m)
		}
	}
	return toProto(ctx, client, ordered)
}

// AddressKey names the current address of a NIC on a segment.
type AddressKey struct {
	Segment uuid.UUID
	MAC     string
}

// toProto converts machines read with their NICs, adding each NIC's
// current address from the lease table.
func toProto(ctx context.Context, client *ent.Client, ms []*ent.Machine) ([]*machinev1.Machine, error) {
	var macs []string
	for _, m := range ms {
		for _, n := range m.Edges.Nics {
			macs = append(macs, n.MAC)
		}
	}
	addresses := map[AddressKey]string{}
	if len(macs) > 0 {
		leases, err := client.Lease.Query().
			Where(lease.MACIn(macs...), lease.ExpireTimeGT(store.Now())).
			All(ctx)
		if err != nil {
			return nil, fmt.Errorf("read machine addresses: %w", err)
		}
		for _, l := range leases {
			addresses[AddressKey{l.SegmentID, l.MAC}] = l.Address
		}
	}
	out := make([]*machinev1.Machine, 0, len(ms))
	for _, m := range ms {
		pm, err := ToProto(m, addresses)
		if err != nil {
			return nil, err
		}
		out = append(out, pm)
	}
	return out, nil
}

// ToProto converts a machine read with its NICs (in MAC order), given the
// NICs' current addresses.
func ToProto(m *ent.Machine, addresses map[AddressKey]string) (*machinev1.Machine, error) {
	pm := &machinev1.Machine{
		Id:          m.ID.String(),
		Hostname:    m.Hostname,
		State:       StateToProto(m.State),
		Labels:      m.Labels,
		Maintenance: m.Maintenance,
		CreateTime:  timestamppb.New(m.CreateTime),
		UpdateTime:  timestamppb.New(m.UpdateTime),
		StateTime:   timestamppb.New(m.StateTime),
	}
	if m.HardwareID != nil {
		pm.HardwareId = *m.HardwareID
	}
	pm.Task = TaskToProto(m)
	if len(m.Inventory) > 0 {
		inv := &machinev1.Inventory{}
		if err := proto.Unmarshal(m.Inventory, inv); err != nil {
			return nil, fmt.Errorf("decode inventory of machine %s: %w", m.ID, err)
		}
		pm.Inventory = inv
	}
	for _, n := range m.Edges.Nics {
		pi := &machinev1.Interface{Mac: n.MAC, CircuitId: n.CircuitID, RemoteId: n.RemoteID}
		if n.SegmentID != nil {
			pi.SegmentId = n.SegmentID.String()
			pi.Address = addresses[AddressKey{*n.SegmentID, n.MAC}]
		}
		pm.Interfaces = append(pm.Interfaces, pi)
	}
	return pm, nil
}

// TaskToProto is m's task, or nil when it has none.
func TaskToProto(m *ent.Machine) *machinev1.Task {
	if m.TaskStep == nil {
		return nil
	}
	t := &machinev1.Task{Step: *m.TaskStep, Done: m.TaskDone, Total: m.TaskTotal, Message: m.TaskMessage}
	if m.TaskStartTime != nil {
		t.StartTime = timestamppb.New(*m.TaskStartTime)
	}
	if m.TaskDeadline != nil {
		t.Deadline = timestamppb.New(*m.TaskDeadline)
	}
	if m.TaskInstanceID != nil {
		t.InstanceId = m.TaskInstanceID.String()
	}
	return t
}
