// Package machines implements carbide.machine.v1.MachineService: the
// machines, their interfaces, labels, maintenance hold and state history.
package machines

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/predicate"
	"github.com/carbide-dev/carbide/ent/transition"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves MachineService.
type Service struct {
	store    *store.Store
	timeouts lifecycle.Timeouts
}

var _ machinev1connect.MachineServiceHandler = (*Service)(nil)

// NewService returns a MachineService over st; a retried machine's
// cleaning has timeouts' deadlines.
func NewService(st *store.Store, timeouts lifecycle.Timeouts) *Service {
	return &Service{store: st, timeouts: timeouts}
}

// CreateMachine registers a machine by its MACs.
func (s *Service) CreateMachine(ctx context.Context, req *connect.Request[machinev1.CreateMachineRequest]) (*connect.Response[machinev1.CreateMachineResponse], error) {
	macs := make([]string, len(req.Msg.GetMacs()))
	for i, m := range req.Msg.GetMacs() {
		macs[i] = CanonicalMAC(m)
	}
	if dup := firstDuplicate(macs); dup != "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("macs: %s is listed twice", dup))
	}
	var id uuid.UUID
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		taken, err := tx.NIC.Query().Where(nic.MACIn(macs...)).First(ctx)
		switch {
		case err == nil:
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("macs: %s already belongs to machine %s", taken.MAC, taken.MachineID))
		case !ent.IsNotFound(err):
			return fmt.Errorf("check MACs: %w", err)
		}
		labels := req.Msg.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		now := store.Now()
		m, err := tx.Machine.Create().
			SetHostname(req.Msg.GetHostname()).SetLabels(labels).
			SetCreateTime(now).SetUpdateTime(now).SetStateTime(now).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("create machine: %w", err)
		}
		id = m.ID
		builders := make([]*ent.NICCreate, len(macs))
		for i, mac := range macs {
			builders[i] = tx.NIC.Create().SetMachineID(m.ID).SetMAC(mac)
		}
		if err := tx.NIC.CreateBulk(builders...).Exec(ctx); err != nil {
			if ent.IsConstraintError(err) {
				return connect.NewError(connect.CodeAlreadyExists, errors.New("macs: a MAC already belongs to another machine"))
			}
			return fmt.Errorf("create interfaces: %w", err)
		}
		if err := lifecycle.RecordCreation(ctx, tx, "registered through the API", principal.From(ctx), m); err != nil {
			return err
		}
		return s.recordChange(ctx, tx, m.ID, store.Created)
	})
	if err != nil {
		return nil, err
	}
	pm, err := s.get(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.CreateMachineResponse{Machine: pm}), nil
}

// GetMachine returns one machine.
func (s *Service) GetMachine(ctx context.Context, req *connect.Request[machinev1.GetMachineRequest]) (*connect.Response[machinev1.GetMachineResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	pm, err := s.get(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.GetMachineResponse{Machine: pm}), nil
}

// ListMachines lists machines in id order.
func (s *Service) ListMachines(ctx context.Context, req *connect.Request[machinev1.ListMachinesRequest]) (*connect.Response[machinev1.ListMachinesResponse], error) {
	msg := req.Msg
	var preds []predicate.Machine
	var filter []string
	if len(msg.GetStates()) > 0 {
		states := make([]machine.State, 0, len(msg.GetStates()))
		for _, ps := range msg.GetStates() {
			st, ok := StateFromProto(ps)
			if !ok {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("states: %v is not a machine state; use one of MACHINE_STATE_DISCOVERED ... MACHINE_STATE_MAINTENANCE", ps))
			}
			states = append(states, st)
			filter = append(filter, "state="+string(st))
		}
		preds = append(preds, machine.StateIn(states...))
	}
	keys := make([]string, 0, len(msg.GetLabels()))
	for k := range msg.GetLabels() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := msg.GetLabels()[k]
		// Keys are restricted by protovalidate to characters that are safe
		// inside a JSON path.
		preds = append(preds, predicate.Machine(func(sel *sql.Selector) {
			sel.Where(sqljson.ValueEQ(sel.C(machine.FieldLabels), v, sqljson.Path(k)))
		}))
		filter = append(filter, "label="+k+"="+v)
	}
	if msg.GetMac() != "" {
		mac := CanonicalMAC(msg.GetMac())
		preds = append(preds, machine.HasNicsWith(nic.MAC(mac)))
		filter = append(filter, "mac="+mac)
	}
	if hw := msg.GetHardwareId(); hw != "" {
		preds = append(preds, machine.HardwareID(hw))
		filter = append(filter, "hardware_id="+hw)
	}
	if h := msg.GetHostname(); h != "" {
		preds = append(preds, machine.Hostname(h))
		filter = append(filter, "hostname="+h)
	}
	fp := pagetoken.Filter(filter...)
	after, err := pagetoken.Decode(msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if after != "" {
		id, err := uuid.Parse(after)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		preds = append(preds, machine.IDGT(id))
	}
	size := pagetoken.Size(msg.GetPageSize())
	ms, err := s.store.Client.Machine.Query().Where(preds...).
		WithNics(func(q *ent.NICQuery) { q.Order(ent.Asc(nic.FieldMAC)) }).
		Order(ent.Asc(machine.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	resp := &machinev1.ListMachinesResponse{}
	if len(ms) > size {
		ms = ms[:size]
		resp.NextPageToken = pagetoken.Encode(ms[size-1].ID.String(), fp)
	}
	if resp.Machines, err = toProto(ctx, s.store.Client, ms); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// UpdateMachine changes labels, hostname and the maintenance hold.
func (s *Service) UpdateMachine(ctx context.Context, req *connect.Request[machinev1.UpdateMachineRequest]) (*connect.Response[machinev1.UpdateMachineResponse], error) {
	in := req.Msg.GetMachine()
	id, err := ids.Parse("machine.id", in.GetId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return notFound(id)
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		paths := req.Msg.GetUpdateMask().GetPaths()
		changed := false
		if slices.Contains(paths, "maintenance") && in.GetMaintenance() != m.Maintenance {
			changed = true
			to, reason := machine.StateMaintenance, "maintenance hold set through the API"
			if !in.GetMaintenance() {
				if to, err = lifecycle.StateBeforeMaintenance(ctx, tx, m); err != nil {
					return err
				}
				reason = "maintenance hold cleared through the API"
			}
			if m.State != to {
				if m, err = lifecycle.Move(ctx, tx, m, to, reason, principal.From(ctx)); err != nil {
					return err
				}
			}
		}
		upd := tx.Machine.UpdateOne(m).SetUpdateTime(store.Now())
		for _, path := range paths {
			switch path {
			case "labels":
				labels := in.GetLabels()
				if labels == nil {
					labels = map[string]string{}
				}
				upd.SetLabels(labels)
				changed = changed || !maps.Equal(labels, m.Labels)
			case "hostname":
				upd.SetHostname(in.GetHostname())
				if in.GetHostname() != m.Hostname {
					changed = true
					if err := CheckHostname(ctx, s.store, tx, in.GetHostname(), id, uuid.Nil); err != nil {
						return err
					}
				}
			case "maintenance":
				upd.SetMaintenance(in.GetMaintenance())
			}
		}
		if !changed {
			return nil // idempotent: nothing to do, no change recorded
		}
		if _, err := upd.Save(ctx); err != nil {
			return fmt.Errorf("update machine: %w", err)
		}
		return s.recordChange(ctx, tx, id, store.Updated)
	})
	if err != nil {
		return nil, err
	}
	pm, err := s.get(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.UpdateMachineResponse{Machine: pm}), nil
}

// DeleteMachine forgets a machine that is not in use.
func (s *Service) DeleteMachine(ctx context.Context, req *connect.Request[machinev1.DeleteMachineRequest]) (*connect.Response[machinev1.DeleteMachineResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return notFound(id)
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		switch m.State {
		case machine.StateProvisioning, machine.StateAssigned, machine.StateCleaning:
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("machine %s is %s; release its instance and let cleaning finish before deleting it", id, m.State))
		}
		// The machine is locked (ForUpdate above): the copy recorded
		// includes every change recorded before.
		last, err := s.snapshot(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := tx.Machine.DeleteOne(m).Exec(ctx); err != nil {
			return fmt.Errorf("delete machine: %w", err)
		}
		return s.store.RecordChange(ctx, tx, store.KindMachine, store.Deleted, id.String(), last)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.DeleteMachineResponse{}), nil
}

// ListMachineTransitions returns a machine's state history, oldest first.
func (s *Service) ListMachineTransitions(ctx context.Context, req *connect.Request[machinev1.ListMachineTransitionsRequest]) (*connect.Response[machinev1.ListMachineTransitionsResponse], error) {
	id, err := ids.Parse("machine_id", req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	exists, err := s.store.Client.Machine.Query().Where(machine.ID(id)).Exist(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	if !exists {
		return nil, notFound(id)
	}
	fp := pagetoken.Filter(id.String())
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.Transition.Query().Where(transition.MachineID(id))
	if after != "" {
		var n int64
		if _, err := fmt.Sscan(after, &n); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		q = q.Where(transition.IDGT(n))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	ts, err := q.Order(ent.Asc(transition.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read state history: %w", err)
	}
	resp := &machinev1.ListMachineTransitionsResponse{}
	if len(ts) > size {
		ts = ts[:size]
		resp.NextPageToken = pagetoken.Encode(fmt.Sprint(ts[size-1].ID), fp)
	}
	for _, t := range ts {
		pt := &machinev1.StateTransition{
			ToState: StateToProto(machine.State(t.ToState)),
			Reason:  t.Reason,
			Actor:   t.Actor,
			Time:    timestamppb.New(t.Time),
		}
		if t.FromState != nil {
			pt.FromState = StateToProto(machine.State(*t.FromState))
		}
		resp.Transitions = append(resp.Transitions, pt)
	}
	return connect.NewResponse(resp), nil
}

// RetryMachine sends a failed machine back to lifecycle.RetryState,
// recording the operator's reason and name in its history.
func (s *Service) RetryMachine(ctx context.Context, req *connect.Request[machinev1.RetryMachineRequest]) (*connect.Response[machinev1.RetryMachineResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(req.Msg.GetReason())
	if reason == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("reason is empty; say what was fixed, such as \"replaced the failed DIMM\""))
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return notFound(id)
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		switch m.State {
		case machine.StateFailed:
		case machine.StateMaintenance:
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("machine %s is in maintenance, not failed; only a failed machine can be retried: clear the maintenance hold first (UpdateMachine), which returns it to the state it had", id))
		default:
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("machine %s is %s, not failed; only a failed machine can be retried", id, m.State))
		}
		to, err := lifecycle.RetryTo(ctx, tx, m)
		if err != nil {
			return err
		}
		if m, err = lifecycle.Move(ctx, tx, m, to, "retried by an operator: "+reason, principal.From(ctx)); err != nil {
			return err
		}
		if to == machine.StateCleaning {
			if _, err := lifecycle.StartTask(ctx, tx, m, lifecycle.Task{Step: lifecycle.StepPowerOn,
				Timeout: s.timeouts.PowerOn, WipeMode: machine.TaskWipeModeQuick,
				Message: "retried: the machine is cleaned before it is Ready again"}); err != nil {
				return err
			}
		}
		if err := tx.Machine.UpdateOneID(id).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
			return fmt.Errorf("update machine: %w", err)
		}
		return s.recordChange(ctx, tx, id, store.Updated)
	})
	if err != nil {
		return nil, err
	}
	pm, err := s.get(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&machinev1.RetryMachineResponse{Machine: pm}), nil
}

// RecordChange records the current state of machine id in the change log,
// as the last step of tx. Packages that change a machine call it.
func RecordChange(ctx context.Context, st *store.Store, tx *ent.Tx, id uuid.UUID, typ change.Type) error {
	// Lock before reading, so the copy recorded includes the changes of
	// every transaction that recorded this machine before.
	if err := Lock(ctx, st, tx, id); err != nil {
		return err
	}
	pm, err := Load(ctx, tx.Client(), id)
	if err != nil {
		return err
	}
	if len(pm) == 0 {
		return notFound(id)
	}
	return st.RecordChange(ctx, tx, store.KindMachine, typ, id.String(), pm[0])
}

// RecordChanges records the current state of machines ids in the change
// log, as RecordChange does for one: one read and one insert for all.
func RecordChanges(ctx context.Context, st *store.Store, tx *ent.Tx, ids []uuid.UUID, typ change.Type) error {
	if len(ids) == 0 {
		return nil
	}
	if err := Lock(ctx, st, tx, ids...); err != nil {
		return err
	}
	pms, err := Load(ctx, tx.Client(), ids...)
	if err != nil {
		return err
	}
	changed := make([]store.Changed, len(pms))
	for i, pm := range pms {
		changed[i] = store.Changed{ID: pm.GetId(), Resource: pm}
	}
	return st.RecordChanges(ctx, tx, store.KindMachine, typ, changed)
}

// Lock locks machines until tx ends, as a transaction does before it reads
// machines in order to record them in the change log: a transaction that
// recorded one of them before has then committed, and the read (in
// PostgreSQL's read-committed mode) shows its change too, and the copy
// this transaction records is numbered after that transaction's (see
// store.RecordChange). Without it, two transactions changing one machine
// at once (allocations for two of its MACs) could each record a copy that
// lacks the other's change, and watchers would keep the stale one. Only
// writers of the same machines wait for each other. The lock (FOR NO KEY
// UPDATE) does not block inserts that refer to the machine; machines are
// locked in id order, so that two transactions locking the same machines
// cannot deadlock. On the embedded store, transactions are serial already.
func Lock(ctx context.Context, st *store.Store, tx *ent.Tx, ids ...uuid.UUID) error {
	if st.Dialect != dialect.Postgres || len(ids) == 0 {
		return nil
	}
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	if _, err := tx.ExecContext(ctx, "SELECT 1 FROM machines WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE", strs); err != nil {
		return fmt.Errorf("lock machines: %w", err)
	}
	return nil
}

func (s *Service) recordChange(ctx context.Context, tx *ent.Tx, id uuid.UUID, typ change.Type) error {
	return RecordChange(ctx, s.store, tx, id, typ)
}

func (s *Service) snapshot(ctx context.Context, tx *ent.Tx, id uuid.UUID) (*machinev1.Machine, error) {
	return s.get(ctx, tx.Client(), id)
}

func (s *Service) get(ctx context.Context, client *ent.Client, id uuid.UUID) (*machinev1.Machine, error) {
	pm, err := Load(ctx, client, id)
	if err != nil {
		return nil, err
	}
	if len(pm) == 0 {
		return nil, notFound(id)
	}
	return pm[0], nil
}

func notFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found", id))
}

func firstDuplicate(ss []string) string {
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		if seen[s] {
			return s
		}
		seen[s] = true
	}
	return ""
}
