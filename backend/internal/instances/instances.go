// Package instances implements carbide.instance.v1.ImageService and
// InstanceService: the OS images machines can run, and instances, a
// tenant's use of a Ready machine with one of them.
//
// CreateInstance chooses the machine, moves it to provisioning, starts its
// first step (lifecycle.StepPowerOn) and holds the address of its boot
// interface, all in one transaction; the lifecycle controller does the
// rest. Concurrent calls, on any number of API replicas, never get the
// same machine: on PostgreSQL each takes its machine's row with SELECT …
// FOR UPDATE SKIP LOCKED and checks it is still Ready, passing over rows
// another call holds; on the embedded store transactions are serial. The
// partial unique index instance_active_machine (one provisioning, running
// or releasing instance per machine) is the last arbiter: a call that
// loses on it starts over without that machine.
package instances

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/image"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/predicate"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
)

// maxAttempts bounds how often CreateInstance starts over after losing a
// machine (or its request_id) to a concurrent call.
const maxAttempts = 8

// candidatePage is how many candidate machines one query reads.
const candidatePage = 100

// Service serves InstanceService.
type Service struct {
	store    *store.Store
	timeouts lifecycle.Timeouts
	wipe     instance.WipeMode
}

var _ instancev1connect.InstanceServiceHandler = (*Service)(nil)

// NewService returns an InstanceService over st. timeouts bound the steps
// it starts (a zero field means lifecycle.DefaultTimeouts'); wipe is how
// disks are wiped when an instance asks for no mode (empty means quick).
func NewService(st *store.Store, timeouts lifecycle.Timeouts, wipe instance.WipeMode) *Service {
	if wipe == "" {
		wipe = instance.WipeModeQuick
	}
	return &Service{store: st, timeouts: WithDefaults(timeouts), wipe: wipe}
}

// WithDefaults returns t with each zero field set to lifecycle.DefaultTimeouts'.
func WithDefaults(t lifecycle.Timeouts) lifecycle.Timeouts {
	d := lifecycle.DefaultTimeouts
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.PowerOn, &d.PowerOn}, {&t.BootAgent, &d.BootAgent}, {&t.WriteImage, &d.WriteImage},
		{&t.BootOS, &d.BootOS}, {&t.WipeQuick, &d.WipeQuick}, {&t.WipeFull, &d.WipeFull},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return t
}

// target is the machine a CreateInstance asks for: one by id, or any that
// the selector matches.
type target struct {
	machineID uuid.UUID
	selector  *instancev1.Selector
	segmentID uuid.UUID // the selector's, if any
	encoded   []byte    // the selector, as stored
}

// lostRace is the error of a transaction whose instance insert broke a
// unique index: another call took the machine (or the request_id) first.
type lostRace struct {
	machine uuid.UUID
	err     error
}

func (e *lostRace) Error() string {
	return fmt.Sprintf("machine %s taken meanwhile: %v", e.machine, e.err)
}
func (e *lostRace) Unwrap() error { return e.err }

// CreateInstance allocates a Ready machine to a new instance.
func (s *Service) CreateInstance(ctx context.Context, req *connect.Request[instancev1.CreateInstanceRequest]) (*connect.Response[instancev1.CreateInstanceResponse], error) {
	msg := req.Msg
	imageID, err := ids.Parse("image_id", msg.GetImageId())
	if err != nil {
		return nil, err
	}
	var tg target
	switch t := msg.GetTarget().(type) {
	case *instancev1.CreateInstanceRequest_MachineId:
		if tg.machineID, err = ids.Parse("machine_id", t.MachineId); err != nil {
			return nil, err
		}
	case *instancev1.CreateInstanceRequest_Selector:
		tg.selector = t.Selector
		if tg.selector == nil {
			tg.selector = &instancev1.Selector{}
		}
		if id := tg.selector.GetSegmentId(); id != "" {
			if tg.segmentID, err = ids.Parse("selector.segment_id", id); err != nil {
				return nil, err
			}
		}
		if tg.encoded, err = (proto.MarshalOptions{Deterministic: true}).Marshal(tg.selector); err != nil {
			return nil, fmt.Errorf("encode selector: %w", err)
		}
		if tg.encoded == nil {
			tg.encoded = []byte{} // an empty selector is stored empty, not NULL
		}
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("set machine_id, the machine to use, or selector, to choose a Ready one"))
	}
	// A refused call's audit record names what it asked for (request_id
	// is no resource); a transaction that chooses a machine names the
	// instance and the machine instead.
	named := []string{imageID.String()}
	if tg.machineID != uuid.Nil {
		named = append(named, tg.machineID.String())
	}
	wipe := s.wipe
	if m, ok := WipeModeFromProto(msg.GetWipeMode()); ok {
		wipe = m
	}
	id := uuid.New()
	avoid := map[uuid.UUID]bool{}
	var out *instancev1.Instance
	for range maxAttempts {
		audit.Resources(ctx, named)
		err = s.store.InTx(ctx, func(tx *ent.Tx) error {
			var err error
			out, err = s.create(ctx, tx, id, imageID, tg, wipe, msg, avoid)
			return err
		})
		var lost *lostRace
		switch {
		case err == nil:
			return connect.NewResponse(&instancev1.CreateInstanceResponse{Instance: out}), nil
		case errors.As(err, &lost):
			avoid[lost.machine] = true
		default:
			return nil, err
		}
	}
	return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("gave up after %d attempts that lost machines to concurrent requests; retry", maxAttempts))
}

// create is the transaction of CreateInstance.
func (s *Service) create(ctx context.Context, tx *ent.Tx, id, imageID uuid.UUID, tg target, wipe instance.WipeMode,
	msg *instancev1.CreateInstanceRequest, avoid map[uuid.UUID]bool) (*instancev1.Instance, error) {
	if rid := msg.GetRequestId(); rid != "" {
		prev, err := tx.Instance.Query().Where(instance.RequestID(rid)).Only(ctx)
		switch {
		case err == nil:
			return s.replay(ctx, tx, prev, imageID, tg, msg)
		case !ent.IsNotFound(err):
			return nil, fmt.Errorf("read instance by request_id: %w", err)
		}
	}
	img, err := forShare(s.store, tx.Image.Query().Where(image.ID(imageID))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("image_id: image %s does not exist; list images with ListImages", imageID))
	} else if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	if img.Deprecated {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("image_id: image %s %s (%s) is deprecated; choose a newer version", img.Name, img.Version, img.ID))
	}
	var m *ent.Machine
	if tg.selector == nil {
		m, err = s.named(ctx, tx, tg.machineID)
	} else {
		m, err = s.choose(ctx, tx, tg, avoid)
	}
	if err != nil {
		return nil, err
	}
	audit.Resources(ctx, []string{id.String(), m.ID.String()})
	if err := machines.CheckHostname(ctx, s.store, tx, msg.GetHostname(), m.ID, id); err != nil {
		return nil, err
	}

	address, err := holdAddress(ctx, tx, m.ID)
	if err != nil {
		return nil, err
	}
	labels := msg.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	keys := msg.GetSshAuthorizedKeys()
	if keys == nil {
		keys = []string{}
	}
	now := store.Now()
	c := tx.Instance.Create().SetID(id).
		SetHostname(msg.GetHostname()).SetImageID(imageID).SetUserData(msg.GetUserData()).
		SetSSHAuthorizedKeys(keys).SetLabels(labels).SetMachineID(m.ID).SetSelector(tg.encoded).
		SetState(instance.StateProvisioning).SetAddress(address).SetWipeMode(wipe).
		SetCreateTime(now).SetUpdateTime(now).SetStateTime(now)
	if rid := msg.GetRequestId(); rid != "" {
		c.SetRequestID(rid)
	}
	inst, err := c.Save(ctx)
	if ent.IsConstraintError(err) {
		return nil, &lostRace{machine: m.ID, err: err}
	} else if err != nil {
		return nil, fmt.Errorf("create instance: %w", err)
	}

	reason := fmt.Sprintf("instance %s (%s) allocated", id, inst.Hostname)
	if m, err = lifecycle.Move(ctx, tx, m, machine.StateProvisioning, reason, principal.From(ctx)); err != nil {
		return nil, err
	}
	if m, err = lifecycle.StartTask(ctx, tx, m, lifecycle.Task{
		Step: lifecycle.StepPowerOn, Instance: id, Timeout: s.timeouts.PowerOn,
		Message: "powering on to install " + img.Name + " " + img.Version,
	}); err != nil {
		return nil, err
	}
	if m, err = tx.Machine.UpdateOne(m).SetUpdateTime(now).Save(ctx); err != nil {
		return nil, fmt.Errorf("update machine: %w", err)
	}
	if err := machines.RecordChange(ctx, s.store, tx, m.ID, store.Updated); err != nil {
		return nil, err
	}
	out, err := ToProto(inst, m)
	if err != nil {
		return nil, err
	}
	if err := s.store.RecordChange(ctx, tx, store.KindInstance, store.Created, id.String(), out); err != nil {
		return nil, err
	}
	return out, nil
}

// replay answers a CreateInstance that repeats the request_id of prev: prev
// as it is now, if the request asks for what prev's did (hostname, image
// and machine or selector); ALREADY_EXISTS otherwise, since the request_id
// names another request.
func (s *Service) replay(ctx context.Context, tx *ent.Tx, prev *ent.Instance, imageID uuid.UUID, tg target, msg *instancev1.CreateInstanceRequest) (*instancev1.Instance, error) {
	var differs []string
	if prev.Hostname != msg.GetHostname() {
		differs = append(differs, "hostname "+prev.Hostname)
	}
	if prev.ImageID != imageID {
		differs = append(differs, "image_id "+prev.ImageID.String())
	}
	switch {
	case tg.selector != nil && !bytes.Equal(prev.Selector, tg.encoded):
		differs = append(differs, "another selector")
	case tg.selector == nil && (prev.Selector != nil || prev.MachineID == nil || *prev.MachineID != tg.machineID):
		differs = append(differs, "another machine or a selector")
	}
	if len(differs) > 0 {
		return nil, connect.NewError(connect.CodeAlreadyExists,
			fmt.Errorf("request_id %q was used by the request that created instance %s, with %s; give a new request_id for a new instance",
				msg.GetRequestId(), prev.ID, strings.Join(differs, ", ")))
	}
	audit.Resources(ctx, []string{prev.ID.String()})
	m, err := machineOf(ctx, tx.Client(), prev)
	if err != nil {
		return nil, err
	}
	return ToProto(prev, m)
}

// named locks machine id in tx and checks that it may take an instance.
func (s *Service) named(ctx context.Context, tx *ent.Tx, id uuid.UUID) (*ent.Machine, error) {
	m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("machine_id: machine %s does not exist", id))
	} else if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	switch {
	case m.Maintenance || m.State == machine.StateMaintenance:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("machine_id: machine %s is in maintenance; only a Ready machine can take an instance", id))
	case m.State != machine.StateReady:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("machine_id: machine %s is %s; only a Ready machine can take an instance", id, m.State))
	}
	holder, err := tx.Instance.Query().Where(instance.MachineID(id), instance.StateIn(activeStates...)).First(ctx)
	switch {
	case err == nil:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("machine_id: machine %s is held by instance %s (%s)", id, holder.ID, holder.State))
	case !ent.IsNotFound(err):
		return nil, fmt.Errorf("read instances of machine: %w", err)
	}
	return m, nil
}

// available are the conditions of a machine that may take an instance.
func available() []predicate.Machine {
	return []predicate.Machine{
		machine.StateEQ(machine.StateReady), machine.Maintenance(false),
		machine.Not(machine.HasInstancesWith(instance.MachineIDNotNil(), instance.StateIn(activeStates...))),
	}
}

// choose finds, in id order, the first machine that may take an instance,
// matches tg's selector and is not avoided, and locks it in tx. The labels
// and the segment are matched by the database, the inventory here.
func (s *Service) choose(ctx context.Context, tx *ent.Tx, tg target, avoid map[uuid.UUID]bool) (*ent.Machine, error) {
	sel := tg.selector
	preds := available()
	keys := make([]string, 0, len(sel.GetLabels()))
	for k := range sel.GetLabels() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := sel.GetLabels()[k]
		// Keys are restricted by protovalidate to characters that are safe
		// inside a JSON path.
		preds = append(preds, predicate.Machine(func(s *sql.Selector) {
			s.Where(sqljson.ValueEQ(s.C(machine.FieldLabels), v, sqljson.Path(k)))
		}))
	}
	if tg.segmentID != uuid.Nil {
		preds = append(preds, machine.HasNicsWith(nic.SegmentID(tg.segmentID)))
	}
	after := uuid.Nil
	for {
		page, err := tx.Machine.Query().Where(append(preds, machine.IDGT(after))...).
			Order(ent.Asc(machine.FieldID)).Limit(candidatePage).
			Select(machine.FieldID, machine.FieldInventory).All(ctx)
		if err != nil {
			return nil, fmt.Errorf("read candidate machines: %w", err)
		}
		for _, c := range page {
			if avoid[c.ID] {
				continue
			}
			if ok, err := fits(c, sel); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
			m, err := s.take(ctx, tx, c.ID)
			if err != nil {
				return nil, err
			}
			if m != nil {
				return m, nil
			}
		}
		if len(page) < candidatePage {
			break
		}
		after = page[len(page)-1].ID
	}
	ready, err := tx.Machine.Query().Where(machine.StateEQ(machine.StateReady), machine.Maintenance(false)).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("count Ready machines: %w", err)
	}
	return nil, connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("selector: no free machine matches: %d machines are Ready (not in maintenance), and none of them without an instance has the labels, CPUs, memory, disk and segment asked for; free or add machines, or ask for less", ready))
}

// take locks candidate id in tx if it may still take an instance, and
// returns it; nil when another transaction holds it or took it. On
// PostgreSQL the row is locked with FOR UPDATE SKIP LOCKED: a row another
// call holds is passed over, not waited for, and a row it took is read as
// it committed, no longer Ready.
func (s *Service) take(ctx context.Context, tx *ent.Tx, id uuid.UUID) (*ent.Machine, error) {
	q := tx.Machine.Query().Where(append(available(), machine.ID(id))...)
	if s.store.Dialect == dialect.Postgres {
		q = q.ForUpdate(sql.WithLockAction(sql.SkipLocked))
	}
	m, err := q.Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("lock machine %s: %w", id, err)
	}
	return m, nil
}

// fits reports whether m's inventory meets the selector's minimums. A
// machine without an inventory meets none but zero.
func fits(m *ent.Machine, sel *instancev1.Selector) (bool, error) {
	if sel.GetMinCpus() == 0 && sel.GetMinMemoryBytes() == 0 && sel.GetMinDiskBytes() == 0 {
		return true, nil
	}
	if len(m.Inventory) == 0 {
		return false, nil
	}
	inv := &machinev1.Inventory{}
	if err := proto.Unmarshal(m.Inventory, inv); err != nil {
		return false, fmt.Errorf("decode inventory of machine %s: %w", m.ID, err)
	}
	return Fits(inv, sel), nil
}

// Fits reports whether inv has at least the selector's logical CPUs and
// memory, and a disk at least as big as it asks.
func Fits(inv *machinev1.Inventory, sel *instancev1.Selector) bool {
	if inv.GetCpu().GetThreads() < sel.GetMinCpus() || inv.GetMemoryBytes() < sel.GetMinMemoryBytes() {
		return false
	}
	if sel.GetMinDiskBytes() == 0 {
		return true
	}
	for _, d := range inv.GetDisks() {
		if d.GetSizeBytes() >= sel.GetMinDiskBytes() {
			return true
		}
	}
	return false
}

// GetInstance returns one instance.
func (s *Service) GetInstance(ctx context.Context, req *connect.Request[instancev1.GetInstanceRequest]) (*connect.Response[instancev1.GetInstanceResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	inst, err := s.store.Client.Instance.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, instanceNotFound(id)
	} else if err != nil {
		return nil, fmt.Errorf("read instance: %w", err)
	}
	m, err := machineOf(ctx, s.store.Client, inst)
	if err != nil {
		return nil, err
	}
	out, err := ToProto(inst, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.GetInstanceResponse{Instance: out}), nil
}

// ListInstances lists instances, newest first.
func (s *Service) ListInstances(ctx context.Context, req *connect.Request[instancev1.ListInstancesRequest]) (*connect.Response[instancev1.ListInstancesResponse], error) {
	msg := req.Msg
	var preds []predicate.Instance
	var filter []string
	if len(msg.GetStates()) > 0 {
		states := make([]instance.State, 0, len(msg.GetStates()))
		for _, ps := range msg.GetStates() {
			st, ok := StateFromProto(ps)
			if !ok {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("states: %v is not an instance state; use INSTANCE_STATE_PROVISIONING ... INSTANCE_STATE_FAILED", ps))
			}
			states = append(states, st)
			filter = append(filter, "state="+string(st))
		}
		preds = append(preds, instance.StateIn(states...))
	}
	keys := make([]string, 0, len(msg.GetLabels()))
	for k := range msg.GetLabels() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := msg.GetLabels()[k]
		preds = append(preds, predicate.Instance(func(s *sql.Selector) {
			s.Where(sqljson.ValueEQ(s.C(instance.FieldLabels), v, sqljson.Path(k)))
		}))
		filter = append(filter, "label="+k+"="+v)
	}
	if msg.GetMachineId() != "" {
		mid, err := ids.Parse("machine_id", msg.GetMachineId())
		if err != nil {
			return nil, err
		}
		preds = append(preds, instance.MachineID(mid))
		filter = append(filter, "machine="+mid.String())
	}
	if h := msg.GetHostname(); h != "" {
		preds = append(preds, instance.Hostname(h))
		filter = append(filter, "hostname="+h)
	}
	fp := pagetoken.Filter(filter...)
	after, err := pagetoken.Decode(msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if after != "" {
		at, id, err := decodeKey(after)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		preds = append(preds, instance.Or(instance.CreateTimeLT(at), instance.And(instance.CreateTime(at), instance.IDLT(id))))
	}
	size := pagetoken.Size(msg.GetPageSize())
	insts, err := s.store.Client.Instance.Query().Where(preds...).
		Order(ent.Desc(instance.FieldCreateTime), ent.Desc(instance.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	resp := &instancev1.ListInstancesResponse{}
	if len(insts) > size {
		insts = insts[:size]
		last := insts[size-1]
		resp.NextPageToken = pagetoken.Encode(encodeKey(last.CreateTime, last.ID), fp)
	}
	if resp.Instances, err = Load(ctx, s.store.Client, insts); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// Load converts instances, with the tasks of their machines, read in one
// query.
func Load(ctx context.Context, client *ent.Client, insts []*ent.Instance) ([]*instancev1.Instance, error) {
	var mids []uuid.UUID
	for _, inst := range insts {
		if inst.MachineID != nil {
			mids = append(mids, *inst.MachineID)
		}
	}
	byID := map[uuid.UUID]*ent.Machine{}
	if len(mids) > 0 {
		ms, err := client.Machine.Query().Where(machine.IDIn(mids...)).All(ctx)
		if err != nil {
			return nil, fmt.Errorf("read machines of instances: %w", err)
		}
		for _, m := range ms {
			byID[m.ID] = m
		}
	}
	out := make([]*instancev1.Instance, 0, len(insts))
	for _, inst := range insts {
		var m *ent.Machine
		if inst.MachineID != nil {
			m = byID[*inst.MachineID]
		}
		pi, err := ToProto(inst, m)
		if err != nil {
			return nil, err
		}
		out = append(out, pi)
	}
	return out, nil
}

// encodeKey and decodeKey are the sort key of ListInstances in a page
// token: the creation time and the id.
func encodeKey(at time.Time, id uuid.UUID) string {
	return at.UTC().Format(time.RFC3339Nano) + "/" + id.String()
}

func decodeKey(s string) (time.Time, uuid.UUID, error) {
	ts, idStr, ok := strings.Cut(s, "/")
	if !ok {
		return time.Time{}, uuid.Nil, pagetoken.ErrInvalid
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	id, err := uuid.Parse(idStr)
	return at, id, err
}

// DeleteInstance releases an instance. A Provisioning or Running one
// becomes Releasing, and its machine (provisioning or assigned) goes to
// cleaning, its first step lifecycle.StepPowerOn with the wipe mode of the
// request, else the instance's. A machine in maintenance or failed is
// left as it is, for an operator; the instance is Releasing all the same.
// A Failed instance holds no machine and becomes Released at once; a
// Releasing or Released one is returned as it is.
func (s *Service) DeleteInstance(ctx context.Context, req *connect.Request[instancev1.DeleteInstanceRequest]) (*connect.Response[instancev1.DeleteInstanceResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	var out *instancev1.Instance
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		var err error
		out, err = s.release(ctx, tx, id, req.Msg.GetWipeMode())
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.DeleteInstanceResponse{Instance: out}), nil
}

// release is the transaction of DeleteInstance. It locks the machine
// before the instance, in the order CreateInstance (and the lifecycle
// controller) lock them.
func (s *Service) release(ctx context.Context, tx *ent.Tx, id uuid.UUID, wipeOverride instancev1.WipeMode) (*instancev1.Instance, error) {
	inst, err := tx.Instance.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, instanceNotFound(id)
	} else if err != nil {
		return nil, fmt.Errorf("read instance: %w", err)
	}
	var m *ent.Machine
	if inst.MachineID != nil {
		m, err = store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(*inst.MachineID))).Only(ctx)
		if err != nil && !ent.IsNotFound(err) {
			return nil, fmt.Errorf("read machine: %w", err)
		}
	}
	if inst, err = store.ForUpdate(s.store, tx.Instance.Query().Where(instance.ID(id))).Only(ctx); err != nil {
		return nil, fmt.Errorf("lock instance: %w", err)
	}
	if m != nil && (inst.MachineID == nil || *inst.MachineID != m.ID) {
		m = nil // it lost its machine meanwhile
	}
	resources := []string{id.String()}
	if m != nil {
		resources = append(resources, m.ID.String())
	}
	audit.Resources(ctx, resources)
	now := store.Now()
	switch inst.State {
	case instance.StateReleased, instance.StateReleasing:
		return ToProto(inst, m)
	case instance.StateFailed:
		if err := ReleaseAddress(ctx, tx, inst); err != nil {
			return nil, err
		}
		if inst, err = tx.Instance.UpdateOne(inst).SetState(instance.StateReleased).
			SetReleaseTime(now).SetStateTime(now).SetUpdateTime(now).Save(ctx); err != nil {
			return nil, fmt.Errorf("update instance: %w", err)
		}
		return s.recordInstance(ctx, tx, inst, m)
	}

	wipe := inst.WipeMode
	if w, ok := WipeModeFromProto(wipeOverride); ok {
		wipe = w
	}
	if inst, err = tx.Instance.UpdateOne(inst).SetState(instance.StateReleasing).SetWipeMode(wipe).
		SetStateTime(now).SetUpdateTime(now).Save(ctx); err != nil {
		return nil, fmt.Errorf("update instance: %w", err)
	}
	if m != nil && (m.State == machine.StateProvisioning || m.State == machine.StateAssigned) {
		reason := fmt.Sprintf("instance %s (%s) released", inst.ID, inst.Hostname)
		if m, err = lifecycle.Move(ctx, tx, m, machine.StateCleaning, reason, principal.From(ctx)); err != nil {
			return nil, err
		}
		if m, err = lifecycle.StartTask(ctx, tx, m, lifecycle.Task{
			Step: lifecycle.StepPowerOn, Instance: inst.ID, WipeMode: machine.TaskWipeMode(wipe),
			Timeout: s.timeouts.PowerOn, Message: "powering on to wipe the disks (" + string(wipe) + ")",
		}); err != nil {
			return nil, err
		}
		if m, err = tx.Machine.UpdateOne(m).SetUpdateTime(now).Save(ctx); err != nil {
			return nil, fmt.Errorf("update machine: %w", err)
		}
		if err := machines.RecordChange(ctx, s.store, tx, m.ID, store.Updated); err != nil {
			return nil, err
		}
	}
	return s.recordInstance(ctx, tx, inst, m)
}

// RecordChange records instance id, as it is now with its machine's task,
// in the change log, as the last step of tx: the lifecycle controller
// calls it whenever it changes an instance or its machine's task
// (provision.Instances). On PostgreSQL it locks the instance first, so that
// the copy recorded includes every change recorded before it.
func (s *Service) RecordChange(ctx context.Context, tx *ent.Tx, id uuid.UUID) error {
	inst, err := store.ForUpdate(s.store, tx.Instance.Query().Where(instance.ID(id))).Only(ctx)
	if ent.IsNotFound(err) {
		return instanceNotFound(id)
	} else if err != nil {
		return fmt.Errorf("read instance: %w", err)
	}
	m, err := machineOf(ctx, tx.Client(), inst)
	if err != nil {
		return err
	}
	_, err = s.recordInstance(ctx, tx, inst, m)
	return err
}

// ReleaseAddress is the package's ReleaseAddress, for the lifecycle
// controller (provision.Instances).
func (s *Service) ReleaseAddress(ctx context.Context, tx *ent.Tx, inst *ent.Instance) error {
	return ReleaseAddress(ctx, tx, inst)
}

// recordInstance records inst, as it is now, in the change log.
func (s *Service) recordInstance(ctx context.Context, tx *ent.Tx, inst *ent.Instance, m *ent.Machine) (*instancev1.Instance, error) {
	out, err := ToProto(inst, m)
	if err != nil {
		return nil, err
	}
	if err := s.store.RecordChange(ctx, tx, store.KindInstance, store.Updated, inst.ID.String(), out); err != nil {
		return nil, err
	}
	return out, nil
}

// machineOf reads inst's machine; nil if it has none (any more).
func machineOf(ctx context.Context, client *ent.Client, inst *ent.Instance) (*ent.Machine, error) {
	if inst.MachineID == nil {
		return nil, nil
	}
	m, err := client.Machine.Get(ctx, *inst.MachineID)
	if ent.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	return m, nil
}

func instanceNotFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("instance %s not found", id))
}
