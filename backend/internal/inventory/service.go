// Package inventory implements carbide.agent.v1.AgentService: discovery
// agents report the hardware of the machine they run on.
package inventory

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/machine"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves AgentService. That an agent speaks only for its own
// machine is enforced by authorization before a call reaches it.
type Service struct {
	store *store.Store
}

var _ agentv1connect.AgentServiceHandler = (*Service)(nil)

// NewService returns an AgentService over st.
func NewService(st *store.Store) *Service {
	return &Service{store: st}
}

// ReportInventory stores a machine's inventory and moves a discovered
// machine to inventoried.
func (s *Service) ReportInventory(ctx context.Context, req *connect.Request[agentv1.ReportInventoryRequest]) (*connect.Response[agentv1.ReportInventoryResponse], error) {
	id := uuid.MustParse(req.Msg.GetMachineId())
	inv := proto.Clone(req.Msg.GetInventory()).(*machinev1.Inventory)
	inv.ReportTime = timestamppb.New(store.Now())
	raw, err := proto.Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found", id))
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		if m.State == machine.StateDiscovered {
			if m, err = lifecycle.Move(ctx, tx, m, machine.StateInventoried, "discovery agent reported the hardware", principal.From(ctx)); err != nil {
				return err
			}
		}
		if err := tx.Machine.UpdateOne(m).SetInventory(raw).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
			return fmt.Errorf("store inventory: %w", err)
		}
		return machines.RecordChange(ctx, s.store, tx, id, store.Updated)
	})
	if err != nil {
		return nil, err
	}
	pm, err := machines.Load(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	if len(pm) == 0 {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found", id))
	}
	return connect.NewResponse(&agentv1.ReportInventoryResponse{Machine: pm[0]}), nil
}
