package machines

import (
	"context"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/identityconflict"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MayMerge reports whether a machine reporting the hardware id of known
// may be merged into it without an operator: only while known is still
// Discovered and none of its interfaces holds a lease, that is while no
// running box speaks as it. Otherwise the report could be a host on the
// provisioning network claiming another machine's identity.
func MayMerge(ctx context.Context, tx *ent.Tx, known *ent.Machine) (bool, error) {
	if known.State != machine.StateDiscovered {
		return false, nil
	}
	macs, err := tx.NIC.Query().Where(nic.MachineID(known.ID)).Select(nic.FieldMAC).Strings(ctx)
	if err != nil {
		return false, fmt.Errorf("read the interfaces of machine %s: %w", known.ID, err)
	}
	leased, err := tx.Lease.Query().Where(lease.ExpireTimeGT(store.Now()), lease.MACIn(macs...)).Exist(ctx)
	if err != nil {
		return false, fmt.Errorf("read the leases of machine %s: %w", known.ID, err)
	}
	return !leased, nil
}

// Merge folds m into known, the machine that has the same hardware: m's
// interfaces move to known and m is deleted, with its change recorded.
// The caller records known's change.
func Merge(ctx context.Context, st *store.Store, tx *ent.Tx, m, known *ent.Machine) (int, error) {
	if err := Lock(ctx, st, tx, m.ID); err != nil {
		return 0, err
	}
	gone, err := Load(ctx, tx.Client(), m.ID)
	if err != nil {
		return 0, err
	}
	moved, err := tx.NIC.Update().Where(nic.MachineID(m.ID)).SetMachineID(known.ID).Save(ctx)
	if err != nil {
		return 0, fmt.Errorf("move interfaces to machine %s: %w", known.ID, err)
	}
	if err := tx.Machine.DeleteOne(m).Exec(ctx); err != nil {
		return 0, fmt.Errorf("delete machine %s: %w", m.ID, err)
	}
	if len(gone) == 1 {
		if err := st.RecordChange(ctx, tx, store.KindMachine, store.Deleted, m.ID.String(), gone[0]); err != nil {
			return 0, err
		}
	}
	return moved, nil
}

// ListIdentityConflicts lists the held reports, oldest first.
func (s *Service) ListIdentityConflicts(ctx context.Context, req *connect.Request[machinev1.ListIdentityConflictsRequest]) (*connect.Response[machinev1.ListIdentityConflictsResponse], error) {
	fp := pagetoken.Filter("identity-conflicts")
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.IdentityConflict.Query()
	if after != "" {
		n, err := strconv.Atoi(after)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		q = q.Where(identityconflict.IDGT(n))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	cs, err := q.Order(ent.Asc(identityconflict.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read identity conflicts: %w", err)
	}
	resp := &machinev1.ListIdentityConflictsResponse{}
	if len(cs) > size {
		cs = cs[:size]
		resp.NextPageToken = pagetoken.Encode(strconv.Itoa(cs[size-1].ID), fp)
	}
	for _, c := range cs {
		pc, err := conflictToProto(c)
		if err != nil {
			return nil, err
		}
		resp.Conflicts = append(resp.Conflicts, pc)
	}
	return connect.NewResponse(resp), nil
}

func conflictToProto(c *ent.IdentityConflict) (*machinev1.IdentityConflict, error) {
	inv := &machinev1.Inventory{}
	if err := proto.Unmarshal(c.Inventory, inv); err != nil {
		return nil, fmt.Errorf("decode the held inventory of machine %s: %w", c.MachineID, err)
	}
	return &machinev1.IdentityConflict{
		MachineId:      c.MachineID.String(),
		KnownMachineId: c.KnownMachineID.String(),
		HardwareId:     c.HardwareID,
		Inventory:      inv,
		ReportedBy:     c.ReportedBy,
		CreateTime:     timestamppb.New(c.CreateTime),
	}, nil
}

// ResolveIdentityConflict merges the reporting machine into the known one
// or rejects its report.
func (s *Service) ResolveIdentityConflict(ctx context.Context, req *connect.Request[machinev1.ResolveIdentityConflictRequest]) (*connect.Response[machinev1.ResolveIdentityConflictResponse], error) {
	id, err := uuid.Parse(req.Msg.GetMachineId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("machine_id %q is not a UUID", req.Msg.GetMachineId()))
	}
	actor := principal.From(ctx)
	var remains uuid.UUID
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		c, err := store.ForUpdate(s.store, tx.IdentityConflict.Query().Where(identityconflict.MachineID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s has no held report; ListIdentityConflicts lists those that do", id))
		} else if err != nil {
			return fmt.Errorf("read the held report of machine %s: %w", id, err)
		}
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
		if err != nil {
			return fmt.Errorf("read machine %s: %w", id, err)
		}
		if err := tx.IdentityConflict.DeleteOne(c).Exec(ctx); err != nil {
			return fmt.Errorf("drop the held report of machine %s: %w", id, err)
		}
		switch req.Msg.GetResolution() {
		case machinev1.ResolveIdentityConflictRequest_RESOLUTION_MERGE:
			known, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(c.KnownMachineID))).Only(ctx)
			if err != nil {
				return fmt.Errorf("read machine %s: %w", c.KnownMachineID, err)
			}
			if _, err := Merge(ctx, s.store, tx, m, known); err != nil {
				return err
			}
			if err := tx.Machine.UpdateOne(known).SetInventory(c.Inventory).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
				return fmt.Errorf("store the inventory of machine %s: %w", known.ID, err)
			}
			remains = known.ID
		default:
			if m.State == machine.StateFailed {
				remains = m.ID
				break
			}
			if _, err := lifecycle.Move(ctx, tx, m, machine.StateFailed, fmt.Sprintf(
				"an operator rejected its report of hardware %s, which is machine %s", c.HardwareID, c.KnownMachineID), actor); err != nil {
				return err
			}
			remains = m.ID
		}
		return s.recordChange(ctx, tx, remains, store.Updated)
	})
	if err != nil {
		return nil, err
	}
	pm, err := s.get(ctx, s.store.Client, remains)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.ResolveIdentityConflictResponse{Machine: pm}), nil
}
