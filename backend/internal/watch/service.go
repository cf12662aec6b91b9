// Package watch implements carbide.watch.v1.WatchService: a stream of the
// change log, preceded by a snapshot of the current resources.
package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/instances"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/segments"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/segment"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
)

// batch is how many rows one query reads, for snapshots and the change log.
const batch = 500

// poll is how often a watcher looks at the change log when no notification
// arrives, as a safety net for missed notifications.
const poll = 5 * time.Second

// Service serves WatchService.
type Service struct {
	store *store.Store
	// done ends every stream when the server shuts down.
	done <-chan struct{}
}

var _ watchv1connect.WatchServiceHandler = (*Service)(nil)

// NewService returns a WatchService over st whose streams end when done is
// closed.
func NewService(st *store.Store, done <-chan struct{}) *Service {
	return &Service{store: st, done: done}
}

var kindOf = map[watchv1.ResourceKind]change.Kind{
	watchv1.ResourceKind_RESOURCE_KIND_MACHINE: store.KindMachine,
	watchv1.ResourceKind_RESOURCE_KIND_SEGMENT: store.KindSegment,
	watchv1.ResourceKind_RESOURCE_KIND_BMC:     store.KindBMC,

	watchv1.ResourceKind_RESOURCE_KIND_BMC_OPERATION: store.KindBMCOperation,
	watchv1.ResourceKind_RESOURCE_KIND_INSTANCE:      store.KindInstance,
}

var typeOf = map[change.Type]watchv1.EventType{
	store.Created: watchv1.EventType_EVENT_TYPE_CREATED,
	store.Updated: watchv1.EventType_EVENT_TYPE_UPDATED,
	store.Deleted: watchv1.EventType_EVENT_TYPE_DELETED,
}

// Watch streams a snapshot (when starting from revision 0) and then changes.
func (s *Service) Watch(ctx context.Context, req *connect.Request[watchv1.WatchRequest], stream *connect.ServerStream[watchv1.WatchResponse]) error {
	var kinds []change.Kind
	for _, k := range req.Msg.GetKinds() {
		kinds = append(kinds, kindOf[k])
	}
	want := func(k change.Kind) bool {
		if len(kinds) == 0 {
			return true
		}
		for _, w := range kinds {
			if w == k {
				return true
			}
		}
		return false
	}

	// Reads of the change log wait for writers still running
	// (store.Horizon); a shutdown does not wait for them.
	client := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()

	// Wait on the notifier before reading, so no commit slips between the
	// read and the wait.
	wake := s.store.Changes().Wait()
	newest, oldest, err := s.store.Revision(ctx)
	if err != nil {
		return s.ended(client, err)
	}
	cursor := req.Msg.GetSinceRevision()
	switch {
	case cursor == 0:
		cursor = newest
		if err := s.snapshot(ctx, stream, newest, want); err != nil {
			return s.ended(client, err)
		}
	case cursor > newest:
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("since_revision: %d is ahead of the newest revision %d; start over with since_revision 0", cursor, newest))
	case oldest > 0 && cursor < oldest-1:
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("since_revision: changes up to %d are no longer kept; start over with since_revision 0", oldest-1))
	}

	for {
		rows, err := s.store.ChangesAfter(ctx, cursor, kinds, batch)
		if err != nil {
			return s.ended(client, err)
		}
		for _, row := range rows {
			ev, err := event(row)
			if err != nil {
				return err
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
			cursor = row.ID
		}
		if len(rows) == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return s.ended(client, ctx.Err())
		case <-wake:
		case <-time.After(poll):
		}
		wake = s.store.Changes().Wait()
	}
}

// ended says why a stream ends after err: a watch has no normal end, and a
// client whose deadline passed must not take it for one; during a shutdown,
// the client is told to resume elsewhere.
func (s *Service) ended(client context.Context, err error) error {
	select {
	case <-s.done:
		return connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; resume with since_revision"))
	default:
	}
	if client.Err() != nil {
		return client.Err()
	}
	return err
}

func (s *Service) snapshot(ctx context.Context, stream *connect.ServerStream[watchv1.WatchResponse], rev int64, want func(change.Kind) bool) error {
	if want(store.KindMachine) {
		after := uuid.Nil
		for {
			ids, err := s.store.Client.Machine.Query().Where(machine.IDGT(after)).
				Order(ent.Asc(machine.FieldID)).Limit(batch).IDs(ctx)
			if err != nil {
				return fmt.Errorf("read machines: %w", err)
			}
			ms, err := machines.Load(ctx, s.store.Client, ids...)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if err := stream.Send(&watchv1.WatchResponse{
					Revision: rev, Type: watchv1.EventType_EVENT_TYPE_EXISTING,
					Kind: watchv1.ResourceKind_RESOURCE_KIND_MACHINE, Id: m.GetId(),
					Resource: &watchv1.WatchResponse_Machine{Machine: m},
				}); err != nil {
					return err
				}
			}
			if len(ids) < batch {
				break
			}
			after = ids[len(ids)-1]
		}
	}
	if want(store.KindSegment) {
		after := ""
		for {
			segs, err := s.store.Client.Segment.Query().Where(segment.NameGT(after)).
				Order(ent.Asc(segment.FieldName)).Limit(batch).All(ctx)
			if err != nil {
				return fmt.Errorf("read segments: %w", err)
			}
			for _, seg := range segs {
				ps, err := segments.Load(ctx, s.store.Client, seg)
				if err != nil {
					return err
				}
				if err := stream.Send(&watchv1.WatchResponse{
					Revision: rev, Type: watchv1.EventType_EVENT_TYPE_EXISTING,
					Kind: watchv1.ResourceKind_RESOURCE_KIND_SEGMENT, Id: ps.GetId(),
					Resource: &watchv1.WatchResponse_Segment{Segment: ps},
				}); err != nil {
					return err
				}
			}
			if len(segs) < batch {
				break
			}
			after = segs[len(segs)-1].Name
		}
	}
	if want(store.KindBMC) {
		if err := bmc.EachBMC(ctx, s.store.Client, batch, func(b *bmcv1.BMC) error {
			return stream.Send(&watchv1.WatchResponse{
				Revision: rev, Type: watchv1.EventType_EVENT_TYPE_EXISTING,
				Kind: watchv1.ResourceKind_RESOURCE_KIND_BMC, Id: b.GetMachineId(),
				Resource: &watchv1.WatchResponse_Bmc{Bmc: b},
			})
		}); err != nil {
			return err
		}
	}
	if want(store.KindBMCOperation) {
		if err := bmc.EachUnfinishedOperation(ctx, s.store.Client, batch, func(op *bmcv1.Operation) error {
			return stream.Send(&watchv1.WatchResponse{
				Revision: rev, Type: watchv1.EventType_EVENT_TYPE_EXISTING,
				Kind: watchv1.ResourceKind_RESOURCE_KIND_BMC_OPERATION, Id: op.GetId(),
				Resource: &watchv1.WatchResponse_Operation{Operation: op},
			})
		}); err != nil {
			return err
		}
	}
	if want(store.KindInstance) {
		if err := s.instances(ctx, stream, rev); err != nil {
			return err
		}
	}
	return stream.Send(&watchv1.WatchResponse{Revision: rev, Type: watchv1.EventType_EVENT_TYPE_SYNCED})
}

// instances sends the instances that are not released, the ones a
// watcher keeps: a released instance holds nothing, and its release
// reaches watchers that follow the stream as an update.
func (s *Service) instances(ctx context.Context, stream *connect.ServerStream[watchv1.WatchResponse], rev int64) error {
	after := uuid.Nil
	for {
		page, err := s.store.Client.Instance.Query().
			Where(instance.StateNEQ(instance.StateReleased), instance.IDGT(after)).
			Order(ent.Asc(instance.FieldID)).Limit(batch).All(ctx)
		if err != nil {
			return fmt.Errorf("read instances: %w", err)
		}
		out, err := instances.Load(ctx, s.store.Client, page)
		if err != nil {
			return err
		}
		for _, pi := range out {
			if err := stream.Send(&watchv1.WatchResponse{
				Revision: rev, Type: watchv1.EventType_EVENT_TYPE_EXISTING,
				Kind: watchv1.ResourceKind_RESOURCE_KIND_INSTANCE, Id: pi.GetId(),
				Resource: &watchv1.WatchResponse_Instance{Instance: pi},
			}); err != nil {
				return err
			}
		}
		if len(page) < batch {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

func event(row *ent.Change) (*watchv1.WatchResponse, error) {
	ev := &watchv1.WatchResponse{Revision: row.ID, Type: typeOf[row.Type], Id: row.ResourceID}
	switch row.Kind {
	case store.KindMachine:
		m := &machinev1.Machine{}
		if err := proto.Unmarshal(row.Payload, m); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", row.ID, err)
		}
		ev.Kind = watchv1.ResourceKind_RESOURCE_KIND_MACHINE
		ev.Resource = &watchv1.WatchResponse_Machine{Machine: m}
	case store.KindSegment:
		sg := &networkv1.Segment{}
		if err := proto.Unmarshal(row.Payload, sg); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", row.ID, err)
		}
		ev.Kind = watchv1.ResourceKind_RESOURCE_KIND_SEGMENT
		ev.Resource = &watchv1.WatchResponse_Segment{Segment: sg}
	case store.KindBMC:
		b := &bmcv1.BMC{}
		if err := proto.Unmarshal(row.Payload, b); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", row.ID, err)
		}
		ev.Kind = watchv1.ResourceKind_RESOURCE_KIND_BMC
		ev.Resource = &watchv1.WatchResponse_Bmc{Bmc: b}
	case store.KindBMCOperation:
		op := &bmcv1.Operation{}
		if err := proto.Unmarshal(row.Payload, op); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", row.ID, err)
		}
		ev.Kind = watchv1.ResourceKind_RESOURCE_KIND_BMC_OPERATION
		ev.Resource = &watchv1.WatchResponse_Operation{Operation: op}
	case store.KindInstance:
		inst := &instancev1.Instance{}
		if err := proto.Unmarshal(row.Payload, inst); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", row.ID, err)
		}
		ev.Kind = watchv1.ResourceKind_RESOURCE_KIND_INSTANCE
		ev.Resource = &watchv1.WatchResponse_Instance{Instance: inst}
	}
	return ev, nil
}
