// Package lifecycle holds the rules of a machine's lifecycle — which state
// may follow which — and records every transition in the machine's history.
//
//	discovered -> inventoried -> ready -> provisioning -> assigned -> cleaning -> ready
//
// A provisioning machine whose install failed, or whose instance is
// released, goes to cleaning. Any state
// may go to failed or maintenance; a failed machine is retried from
// discovered, inventoried, ready or cleaning; a machine leaving maintenance
// may return to any state. An operator retries a failed machine
// (MachineService.RetryMachine) to RetryTo's state.
package lifecycle

import (
	"context"
	"fmt"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/transition"
)

// next lists the ordinary successors of each state.
var next = map[machine.State][]machine.State{
	machine.StateDiscovered:   {machine.StateInventoried},
	machine.StateInventoried:  {machine.StateReady},
	machine.StateReady:        {machine.StateProvisioning},
	machine.StateProvisioning: {machine.StateAssigned, machine.StateCleaning},
	machine.StateAssigned:     {machine.StateCleaning},
	machine.StateCleaning:     {machine.StateReady},
	machine.StateFailed:       {machine.StateDiscovered, machine.StateInventoried, machine.StateReady, machine.StateCleaning},
}

// RetryState is where an operator's retry sends a failed machine that
// never held a tenant's data: discovered, so that it boots the discovery
// agent again, reports its hardware anew and passes the hardware checks
// before it is ready. A cause fixed by hand (a DIMM replaced, a disk
// added) is thus checked again, and a machine whose cause persists fails
// again with the current reason.
const RetryState = machine.StateDiscovered

// RetryTo is where an operator's retry sends failed machine m, read in
// tx: cleaning when it failed while provisioning, assigned or cleaning,
// since its disks may hold a tenant's data (the cleaning's agent reports
// the hardware again, too); RetryState otherwise.
func RetryTo(ctx context.Context, tx *ent.Tx, m *ent.Machine) (machine.State, error) {
	t, err := tx.Transition.Query().
		Where(transition.MachineID(m.ID), transition.ToStateEQ(transition.ToStateFailed)).
		Order(ent.Desc(transition.FieldID)).
		First(ctx)
	switch {
	case ent.IsNotFound(err):
		return RetryState, nil
	case err != nil:
		return "", fmt.Errorf("read state history: %w", err)
	case t.FromState == nil:
		return RetryState, nil
	}
	switch *t.FromState {
	case transition.FromStateProvisioning, transition.FromStateAssigned, transition.FromStateCleaning:
		return machine.StateCleaning, nil
	}
	return RetryState, nil
}

// Allowed reports whether a machine in state from may move to state to.
func Allowed(from, to machine.State) bool {
	switch {
	case from == to:
		return false
	case to == machine.StateMaintenance, to == machine.StateFailed && from != machine.StateMaintenance:
		return true
	case from == machine.StateMaintenance:
		return true
	}
	for _, s := range next[from] {
		if s == to {
			return true
		}
	}
	return false
}

// TransitionError is returned for a transition the lifecycle forbids.
type TransitionError struct {
	From, To machine.State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("a machine in state %s cannot move to %s", e.From, e.To)
}

// Move moves m to state to inside tx and records the transition with its
// reason and actor. m must have been read in tx.
func Move(ctx context.Context, tx *ent.Tx, m *ent.Machine, to machine.State, reason, actor string) (*ent.Machine, error) {
	if !Allowed(m.State, to) {
		return nil, &TransitionError{From: m.State, To: to}
	}
	now := store.Now()
	updated, err := tx.Machine.UpdateOne(m).SetState(to).SetStateTime(now).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("set machine state: %w", err)
	}
	from := m.State
	if err := tx.Transition.Create().
		SetMachineID(m.ID).SetFromState(transition.FromState(from)).SetToState(transition.ToState(to)).
		SetReason(reason).SetActor(actor).SetTime(now).
		Exec(ctx); err != nil {
		return nil, fmt.Errorf("record transition: %w", err)
	}
	return updated, nil
}

// RecordCreation records the first entry of the history of new machines.
func RecordCreation(ctx context.Context, tx *ent.Tx, reason, actor string, ms ...*ent.Machine) error {
	creates := make([]*ent.TransitionCreate, len(ms))
	for i, m := range ms {
		creates[i] = tx.Transition.Create().
			SetMachineID(m.ID).SetToState(transition.ToState(m.State)).
			SetReason(reason).SetActor(actor).SetTime(m.StateTime)
	}
	if err := tx.Transition.CreateBulk(creates...).Exec(ctx); err != nil {
		return fmt.Errorf("record creation: %w", err)
	}
	return nil
}

// StateBeforeMaintenance is the state m was in when it entered maintenance,
// or discovered if its history does not say.
func StateBeforeMaintenance(ctx context.Context, tx *ent.Tx, m *ent.Machine) (machine.State, error) {
	t, err := tx.Transition.Query().
		Where(transition.MachineID(m.ID), transition.ToStateEQ(transition.ToStateMaintenance)).
		Order(ent.Desc(transition.FieldID)).
		First(ctx)
	switch {
	case ent.IsNotFound(err):
		return machine.StateDiscovered, nil
	case err != nil:
		return "", fmt.Errorf("read state history: %w", err)
	case t.FromState == nil || *t.FromState == transition.FromStateMaintenance:
		return machine.StateDiscovered, nil
	}
	return machine.State(*t.FromState), nil
}
