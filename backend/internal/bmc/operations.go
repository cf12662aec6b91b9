package bmc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/bmcoperation"
	"github.com/carbide-dev/carbide/ent/predicate"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// RequestOperation queues an operation on a machine's BMC.
func (s *Service) RequestOperation(ctx context.Context, req *connect.Request[bmcv1.RequestOperationRequest]) (*connect.Response[bmcv1.RequestOperationResponse], error) {
	m := req.Msg
	id, err := ids.Parse("machine_id", m.GetMachineId())
	if err != nil {
		return nil, err
	}
	var out *bmcv1.Operation
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if m.GetRequestId() != "" {
			same, err := tx.BMCOperation.Query().
				Where(bmcoperation.MachineID(id), bmcoperation.RequestID(m.GetRequestId())).Only(ctx)
			switch {
			case err == nil:
				if same.Type != typeName[m.GetType()] || !sameBoot(same, m.GetBoot()) {
					return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
						"request_id: %q already named operation %s on this machine, of another type or boot device; use a new request_id",
						m.GetRequestId(), same.ID))
				}
				out = operationToProto(same) // a retried request
				return nil
			case !ent.IsNotFound(err):
				return fmt.Errorf("read operation: %w", err)
			}
		}
		op, err := s.Queue(ctx, tx, id, principal.From(ctx), m.GetType(), m.GetBoot(), m.GetRequestId())
		if err != nil {
			return err
		}
		out = op
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.RequestOperationResponse{Operation: out}), nil
}

// Queue queues an operation of typ (with boot, for
// OPERATION_TYPE_SET_BOOT_DEVICE) on machine id's BMC inside tx, for
// requester, and records it in the change log. FAILED_PRECONDITION when the
// machine has no BMC.
func (s *Service) Queue(ctx context.Context, tx *ent.Tx, id uuid.UUID, requester string, typ bmcv1.OperationType, boot *bmcv1.Boot, requestID string) (*bmcv1.Operation, error) {
	if _, err := tx.BMC.Query().Where(entbmc.MachineID(id)).Only(ctx); ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("machine %s has no BMC; set one with SetBMC first", id))
	} else if err != nil {
		return nil, fmt.Errorf("read BMC: %w", err)
	}
	c := tx.BMCOperation.Create().SetMachineID(id).SetType(typeName[typ]).
		SetRequester(requester).SetCreateTime(store.Now())
	if requestID != "" {
		c.SetRequestID(requestID)
	}
	if boot != nil {
		c.SetBootDevice(bootName[boot.GetDevice()]).SetBootPersistent(boot.GetPersistent()).SetBootEfi(boot.GetEfi())
	}
	op, err := c.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("queue operation: %w", err)
	}
	out := operationToProto(op)
	if err := s.store.RecordChange(ctx, tx, store.KindBMCOperation, store.Created, op.ID.String(), out); err != nil {
		return nil, err
	}
	return out, nil
}

func sameBoot(op *ent.BMCOperation, b *bmcv1.Boot) bool {
	if b == nil {
		return op.BootDevice == bmcoperation.BootDeviceNone
	}
	return op.BootDevice == bootName[b.GetDevice()] && op.BootPersistent == b.GetPersistent() && op.BootEfi == b.GetEfi()
}

// GetOperation returns one operation.
func (s *Service) GetOperation(ctx context.Context, req *connect.Request[bmcv1.GetOperationRequest]) (*connect.Response[bmcv1.GetOperationResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	op, err := s.store.Client.BMCOperation.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, noOperation(id)
	} else if err != nil {
		return nil, fmt.Errorf("read operation: %w", err)
	}
	return connect.NewResponse(&bmcv1.GetOperationResponse{Operation: operationToProto(op)}), nil
}

// ListOperations lists operations, newest first.
func (s *Service) ListOperations(ctx context.Context, req *connect.Request[bmcv1.ListOperationsRequest]) (*connect.Response[bmcv1.ListOperationsResponse], error) {
	m := req.Msg
	var preds []predicate.BMCOperation
	parts := []string{m.GetMachineId()}
	if m.GetMachineId() != "" {
		id, err := ids.Parse("machine_id", m.GetMachineId())
		if err != nil {
			return nil, err
		}
		preds = append(preds, bmcoperation.MachineID(id))
	}
	var states []bmcoperation.State
	for _, st := range m.GetStates() {
		states = append(states, stateName[st])
		parts = append(parts, string(stateName[st]))
	}
	if len(states) > 0 {
		preds = append(preds, bmcoperation.StateIn(states...))
	}
	fp := pagetoken.Filter(parts...)
	after, err := pagetoken.Decode(m.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if after != "" {
		t, id, err := decodeCursor(after)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("page_token: not a token of this list"))
		}
		preds = append(preds, bmcoperation.Or(bmcoperation.CreateTimeLT(t),
			bmcoperation.And(bmcoperation.CreateTime(t), bmcoperation.IDLT(id))))
	}
	size := pagetoken.Size(m.GetPageSize())
	ops, err := s.store.Client.BMCOperation.Query().Where(preds...).
		Order(ent.Desc(bmcoperation.FieldCreateTime), ent.Desc(bmcoperation.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	resp := &bmcv1.ListOperationsResponse{}
	if len(ops) > size {
		ops = ops[:size]
		last := ops[size-1]
		resp.NextPageToken = pagetoken.Encode(encodeCursor(last.CreateTime, last.ID), fp)
	}
	for _, op := range ops {
		resp.Operations = append(resp.Operations, operationToProto(op))
	}
	return connect.NewResponse(resp), nil
}

func encodeCursor(t time.Time, id uuid.UUID) string {
	return strconv.FormatInt(t.UnixNano(), 10) + "/" + id.String()
}

func decodeCursor(s string) (time.Time, uuid.UUID, error) {
	ns, rest, ok := strings.Cut(s, "/")
	if !ok {
		return time.Time{}, uuid.Nil, errors.New("bad cursor")
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	id, err := uuid.Parse(rest)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	return time.Unix(0, n).UTC(), id, nil
}

// CancelOperation cancels an operation no daemon has started. Cancelling
// a cancelled operation returns it as it is.
func (s *Service) CancelOperation(ctx context.Context, req *connect.Request[bmcv1.CancelOperationRequest]) (*connect.Response[bmcv1.CancelOperationResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	var out *bmcv1.Operation
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		op, err := tx.BMCOperation.Get(ctx, id)
		if ent.IsNotFound(err) {
			return noOperation(id)
		} else if err != nil {
			return fmt.Errorf("read operation: %w", err)
		}
		switch op.State {
		case bmcoperation.StateCancelled:
			out = operationToProto(op)
			return nil
		case bmcoperation.StatePending:
		default:
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"operation %s is %s: only a pending operation can be cancelled", id, op.State))
		}
		// The claim of a daemon may be starting it right now: the
		// update takes it only if it is still pending.
		n, err := tx.BMCOperation.Update().Where(bmcoperation.ID(id), bmcoperation.StateEQ(bmcoperation.StatePending)).
			SetState(bmcoperation.StateCancelled).SetError("cancelled by " + principal.From(ctx)).SetEndTime(store.Now()).Save(ctx)
		if err != nil {
			return fmt.Errorf("cancel operation: %w", err)
		}
		if n == 0 {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"operation %s was started by a daemon meanwhile: only a pending operation can be cancelled", id))
		}
		if op, err = tx.BMCOperation.Get(ctx, id); err != nil {
			return fmt.Errorf("read operation: %w", err)
		}
		out = operationToProto(op)
		return s.store.RecordChange(ctx, tx, store.KindBMCOperation, store.Updated, id.String(), out)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.CancelOperationResponse{Operation: out}), nil
}

func noOperation(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("id: no BMC operation %s", id))
}

var (
	typeName = map[bmcv1.OperationType]bmcoperation.Type{
		bmcv1.OperationType_OPERATION_TYPE_POWER_ON:        bmcoperation.TypePowerOn,
		bmcv1.OperationType_OPERATION_TYPE_POWER_OFF:       bmcoperation.TypePowerOff,
		bmcv1.OperationType_OPERATION_TYPE_SOFT_OFF:        bmcoperation.TypeSoftOff,
		bmcv1.OperationType_OPERATION_TYPE_POWER_CYCLE:     bmcoperation.TypePowerCycle,
		bmcv1.OperationType_OPERATION_TYPE_RESET:           bmcoperation.TypeReset,
		bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE: bmcoperation.TypeSetBootDevice,
	}
	typeOf   = invert(typeName)
	bootName = map[bmcv1.BootDevice]bmcoperation.BootDevice{
		bmcv1.BootDevice_BOOT_DEVICE_PXE:        bmcoperation.BootDevicePxe,
		bmcv1.BootDevice_BOOT_DEVICE_DISK:       bmcoperation.BootDeviceDisk,
		bmcv1.BootDevice_BOOT_DEVICE_BIOS_SETUP: bmcoperation.BootDeviceBiosSetup,
	}
	bootOf    = invert(bootName)
	stateName = map[bmcv1.OperationState]bmcoperation.State{
		bmcv1.OperationState_OPERATION_STATE_PENDING:   bmcoperation.StatePending,
		bmcv1.OperationState_OPERATION_STATE_RUNNING:   bmcoperation.StateRunning,
		bmcv1.OperationState_OPERATION_STATE_SUCCEEDED: bmcoperation.StateSucceeded,
		bmcv1.OperationState_OPERATION_STATE_FAILED:    bmcoperation.StateFailed,
		bmcv1.OperationState_OPERATION_STATE_CANCELLED: bmcoperation.StateCancelled,
	}
	stateOf = invert(stateName)
)

func invert[K, V comparable](m map[K]V) map[V]K {
	out := make(map[V]K, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

func operationToProto(op *ent.BMCOperation) *bmcv1.Operation {
	out := &bmcv1.Operation{
		Id:         op.ID.String(),
		MachineId:  op.MachineID.String(),
		Type:       typeOf[op.Type],
		State:      stateOf[op.State],
		Attempts:   int32(op.Attempts),
		Error:      op.Error,
		Requester:  op.Requester,
		Worker:     op.Worker,
		CreateTime: timestamppb.New(op.CreateTime),
		PowerState: powerOf[string(op.PowerState)],
	}
	if op.RequestID != nil {
		out.RequestId = *op.RequestID
	}
	if op.Type == bmcoperation.TypeSetBootDevice {
		out.Boot = &bmcv1.Boot{Device: bootOf[op.BootDevice], Persistent: op.BootPersistent, Efi: op.BootEfi}
	}
	if op.StartTime != nil {
		out.StartTime = timestamppb.New(*op.StartTime)
	}
	if op.EndTime != nil {
		out.EndTime = timestamppb.New(*op.EndTime)
	}
	return out
}
