// Package agent implements carbide.agent.v1.AgentService: discovery
// agents report the hardware of the machine they run on, which identifies
// the machine and decides whether it is Ready, and ask what to do next.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/provision"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/identityconflict"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/transition"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// How long an agent waits before asking again.
const (
	waitInventoried = 10 * time.Second
	waitMaintenance = 60 * time.Second
	waitConflict    = 10 * time.Second
)

// BMCEnroller stores the BMC credentials agents create in band
// (bmc.Service).
type BMCEnroller interface {
	// MayEnroll reports whether the machine's agent may enrol its BMC:
	// it has no credentials, or only ones an agent enrolled.
	MayEnroll(ctx context.Context, machineID uuid.UUID) (bool, error)
	// Enroll stores the credentials, sealed; it fails with
	// FailedPrecondition when an operator set the machine's.
	Enroll(ctx context.Context, e bmc.Enrollment) (*bmcv1.BMC, error)
}

// Lifecycle drives the steps agents run on provisioning and cleaning
// machines (provision.Controller).
type Lifecycle interface {
	// AgentReported starts the agent's step of m, locked in tx.
	AgentReported(ctx context.Context, tx *ent.Tx, m *ent.Machine) (*ent.Machine, error)
	// Instruction is what the agent of m does, when m is provisioning or
	// cleaning (ok).
	Instruction(ctx context.Context, client *ent.Client, m *ent.Machine) (in *agentv1.Instruction, ok bool, err error)
	// Progress records how far m's step is.
	Progress(ctx context.Context, tx *ent.Tx, m *ent.Machine, step string, done, total int64, message string) error
	// Complete ends m's step.
	Complete(ctx context.Context, tx *ent.Tx, m *ent.Machine, o provision.Outcome) (*ent.Machine, error)
}

// Service serves AgentService. That an agent speaks only for its own
// machine is enforced by authorization before a call reaches it.
type Service struct {
	store  *store.Store
	tokens *pki.AgentTokens
	bmcs   BMCEnroller // nil: agents are never asked to enrol BMCs
	steps  Lifecycle
	logger *slog.Logger

	conflicts prometheus.Counter
	staleBoot prometheus.Counter
}

var _ agentv1connect.AgentServiceHandler = (*Service)(nil)

// NewService returns an AgentService over st. tokens, if not nil, renews
// the agent tokens of agents that authenticated with one. bmcs, if not
// nil, stores the BMC credentials agents enrol in band. Its metrics are
// registered with reg.
func NewService(st *store.Store, tokens *pki.AgentTokens, bmcs BMCEnroller, steps Lifecycle, logger *slog.Logger, reg prometheus.Registerer) *Service {
	s := &Service{store: st, tokens: tokens, bmcs: bmcs, steps: steps, logger: logger,
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_identity_conflicts_held_total",
			Help: "Inventory reports held for an admin because their hardware id is another machine's that is past discovery or has a leased interface.",
		}),
		staleBoot: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_agent_tokens_superseded_total",
			Help: "Agent calls refused because the token is of an earlier boot of the machine.",
		}),
	}
	reg.MustRegister(s.conflicts, s.staleBoot)
	return s
}

// ReportInventory stores a machine's inventory, merges the machine into
// the one that already has its hardware identity when that one is still
// only discovered (or holds the report for an operator when it is not),
// and moves it through inventoried to ready or failed.
func (s *Service) ReportInventory(ctx context.Context, req *connect.Request[agentv1.ReportInventoryRequest]) (*connect.Response[agentv1.ReportInventoryResponse], error) {
	id, err := parseMachineID(req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	inv := proto.Clone(req.Msg.GetInventory()).(*machinev1.Inventory)
	inv.ReportTime = timestamppb.New(store.Now())
	raw, err := proto.Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	hw := HardwareID(inv)
	actor := principal.From(ctx)
	target := id
	var last *ent.Machine
	var held bool
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		held = false
		m, err := lockMachine(ctx, s.store, tx, id)
		if err != nil {
			return err
		}
		if err := s.currentBoot(ctx, m); err != nil {
			return err
		}
		if hw != "" {
			known, err := store.ForUpdate(s.store, tx.Machine.Query().
				Where(machine.HardwareID(hw), machine.IDNEQ(id))).Only(ctx)
			switch {
			case ent.IsNotFound(err):
			case err != nil:
				return fmt.Errorf("look up hardware %s: %w", hw, err)
			default:
				merged, err := s.merge(ctx, tx, m, known, hw, raw, actor)
				if err != nil {
					return err
				}
				if !merged {
					// Held for an operator: nothing else changes.
					last, held = m, true
					return nil
				}
				m, target = known, known.ID
			}
		}
		// A report that names no other machine ends an earlier conflict.
		if _, err := tx.IdentityConflict.Delete().Where(identityconflict.MachineID(m.ID)).Exec(ctx); err != nil {
			return fmt.Errorf("drop the held report of machine %s: %w", m.ID, err)
		}
		upd := tx.Machine.UpdateOne(m).SetInventory(raw).SetUpdateTime(store.Now())
		if hw != "" {
			upd.SetHardwareID(hw)
		}
		if m, err = upd.Save(ctx); err != nil {
			return fmt.Errorf("store inventory: %w", err)
		}
		if m, err = advance(ctx, tx, m, inv, actor); err != nil {
			return err
		}
		if m, err = s.steps.AgentReported(ctx, tx, m); err != nil {
			return err
		}
		last = m
		return machines.RecordChange(ctx, s.store, tx, target, store.Updated)
	})
	if err != nil {
		return nil, err
	}
	pm, err := machines.Load(ctx, s.store.Client, target)
	if err != nil {
		return nil, err
	}
	if len(pm) == 0 {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found", target))
	}
	resp := &agentv1.ReportInventoryResponse{Machine: pm[0]}
	if who := principal.FromContext(ctx); who != nil && who.Method == principal.MethodAgentToken && s.tokens != nil &&
		last.BootID != nil && last.BootExpireTime != nil {
		// The same boot, never past its end.
		tok, exp, err := s.tokens.Issue(target, *last.BootID, time.Now(), *last.BootExpireTime)
		if errors.Is(err, pki.ErrBootEnded) {
			return nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("renew the agent token: %w; boot the machine again", err))
		} else if err != nil {
			return nil, err
		}
		resp.AgentToken, resp.AgentTokenExpireTime = tok, timestamppb.New(exp)
	}
	if resp.Instruction, err = s.instruction(ctx, last); err != nil {
		return nil, err
	}
	// A report held for an operator may come from a duplicate record of
	// the box: its agent does not touch the BMC.
	if s.bmcs != nil && !held {
		if resp.EnrollBmc, err = s.bmcs.MayEnroll(ctx, target); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(resp), nil
}

// EnrollBMC stores the credentials of the BMC user the agent created in
// band; an operator's credentials are never replaced.
func (s *Service) EnrollBMC(ctx context.Context, req *connect.Request[agentv1.EnrollBMCRequest]) (*connect.Response[agentv1.EnrollBMCResponse], error) {
	id, err := parseMachineID(req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	if s.bmcs == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server does not store BMC credentials"))
	}
	m, err := s.store.Client.Machine.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found; report the inventory again", id))
	} else if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	if err := s.currentBoot(ctx, m); err != nil {
		return nil, err
	}
	b, err := s.bmcs.Enroll(ctx, bmc.Enrollment{MachineID: id, Address: req.Msg.GetAddress(),
		MAC: strings.ToLower(req.Msg.GetMac()), Username: req.Msg.GetUsername(), Password: req.Msg.GetPassword()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.EnrollBMCResponse{Bmc: b}), nil
}

// GetInstruction tells an agent what to do next.
func (s *Service) GetInstruction(ctx context.Context, req *connect.Request[agentv1.GetInstructionRequest]) (*connect.Response[agentv1.GetInstructionResponse], error) {
	id, err := parseMachineID(req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	m, err := s.store.Client.Machine.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found; report the inventory again", id))
	} else if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	if err := s.currentBoot(ctx, m); err != nil {
		return nil, err
	}
	in, err := s.instruction(ctx, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.GetInstructionResponse{Instruction: in}), nil
}

// parseMachineID parses a request's machine_id. Validation has checked it
// already; a handler does not rely on that.
func parseMachineID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("machine_id %q is not a UUID; give the machine id of the agent's configuration", s))
	}
	return id, nil
}

// currentBoot refuses an agent token issued for an earlier boot of m: a
// new boot supersedes the old one, whose tokens stop working.
func (s *Service) currentBoot(ctx context.Context, m *ent.Machine) error {
	who := principal.FromContext(ctx)
	if who == nil || who.Method != principal.MethodAgentToken {
		return nil
	}
	if m.BootID == nil || m.BootID.String() != who.BootID {
		s.staleBoot.Inc()
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf(
			"the agent token is for an earlier boot of machine %s, which has booted again since; fetch the configuration of the current boot", m.ID))
	}
	return nil
}

func lockMachine(ctx context.Context, st *store.Store, tx *ent.Tx, id uuid.UUID) (*ent.Machine, error) {
	m, err := store.ForUpdate(st, tx.Machine.Query().Where(machine.ID(id))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s not found", id))
	} else if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	return m, nil
}

// merge folds m, a machine enrolled for a NIC that was new, into known,
// the machine that already has m's hardware identity hw: the box was seen
// before on another NIC, or its record was re-created. m's interfaces move
// to known, which takes over m's boot, and m is deleted. It merges only
// while known is still discovered and none of its interfaces is leased;
// otherwise it holds the report (raw) as an identity conflict for an
// operator, changes nothing else and returns false. A machine that
// already has another identity is not merged: two records claim one box,
// which an operator resolves.
func (s *Service) merge(ctx context.Context, tx *ent.Tx, m, known *ent.Machine, hw string, raw []byte, actor string) (bool, error) {
	if m.HardwareID != nil {
		return false, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"machine %s is hardware %s but now reports %s, which is machine %s; delete the record that is wrong",
			m.ID, *m.HardwareID, hw, known.ID))
	}
	switch m.State {
	case machine.StateDiscovered, machine.StateInventoried, machine.StateFailed:
	default:
		return false, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"machine %s reports hardware %s, which is machine %s, but is %s itself; delete the record that is wrong",
			m.ID, hw, known.ID, m.State))
	}
	ok, err := machines.MayMerge(ctx, tx, known)
	if err != nil {
		return false, err
	}
	if !ok {
		if _, err := tx.IdentityConflict.Delete().Where(identityconflict.MachineID(m.ID)).Exec(ctx); err != nil {
			return false, fmt.Errorf("drop the held report of machine %s: %w", m.ID, err)
		}
		if err := tx.IdentityConflict.Create().SetMachineID(m.ID).SetKnownMachineID(known.ID).
			SetHardwareID(hw).SetInventory(raw).SetReportedBy(actor).Exec(ctx); err != nil {
			return false, fmt.Errorf("hold the report of machine %s: %w", m.ID, err)
		}
		s.conflicts.Inc()
		s.logger.WarnContext(ctx, "identity conflict: a report names the hardware of another machine; held for an operator",
			"hardware_id", hw, "machine", m.ID.String(), "known_machine", known.ID.String(), "known_state", string(known.State))
		return false, nil
	}
	moved, err := machines.Merge(ctx, s.store, tx, m, known)
	if err != nil {
		return false, err
	}
	// The box's current boot is the one it reported from.
	upd := tx.Machine.UpdateOne(known).ClearBootNonceHash()
	if m.BootID != nil && m.BootExpireTime != nil {
		upd.SetBootID(*m.BootID).SetBootExpireTime(*m.BootExpireTime)
	} else {
		upd.ClearBootID().ClearBootExpireTime()
	}
	if err := upd.Exec(ctx); err != nil {
		return false, fmt.Errorf("move the boot of machine %s to machine %s: %w", m.ID, known.ID, err)
	}
	s.logger.InfoContext(ctx, "rediscovered known hardware: merged machine", "hardware_id", hw,
		"machine", known.ID.String(), "merged", m.ID.String(), "interfaces_moved", moved)
	return true, nil
}

// advance moves a machine the agent just inventoried: discovered to
// inventoried, then inventoried to ready when the hardware checks pass and
// to failed when they do not. A machine in maintenance stays put.
func advance(ctx context.Context, tx *ent.Tx, m *ent.Machine, inv *machinev1.Inventory, actor string) (*ent.Machine, error) {
	if m.Maintenance {
		return m, nil
	}
	var err error
	if m.State == machine.StateDiscovered {
		if m, err = lifecycle.Move(ctx, tx, m, machine.StateInventoried, "discovery agent reported the hardware: "+summary(inv), actor); err != nil {
			return nil, err
		}
	}
	if m.State != machine.StateInventoried {
		return m, nil
	}
	if problems := checkHardware(inv); len(problems) > 0 {
		return lifecycle.Move(ctx, tx, m, machine.StateFailed, "hardware checks failed: "+strings.Join(problems, "; "), actor)
	}
	return lifecycle.Move(ctx, tx, m, machine.StateReady, "hardware checks passed", actor)
}

// instruction is what the agent of m does next.
func (s *Service) instruction(ctx context.Context, m *ent.Machine) (*agentv1.Instruction, error) {
	wait := func(d time.Duration, reason string) *agentv1.Instruction {
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_WAIT, Reason: reason, Wait: durationpb.New(d)}
	}
	if m.Maintenance || m.State == machine.StateMaintenance {
		return wait(waitMaintenance, "the machine is in maintenance"), nil
	}
	c, err := s.store.Client.IdentityConflict.Query().Where(identityconflict.MachineID(m.ID)).Only(ctx)
	if err == nil {
		return wait(waitConflict, fmt.Sprintf("its hardware %s is machine %s's; the report is held until an operator resolves it (MachineService.ResolveIdentityConflict)",
			c.HardwareID, c.KnownMachineID)), nil
	} else if !ent.IsNotFound(err) {
		return nil, fmt.Errorf("read the held report of machine %s: %w", m.ID, err)
	}
	if in, ok, err := s.steps.Instruction(ctx, s.store.Client, m); ok || err != nil {
		return in, err
	}
	switch m.State {
	case machine.StateDiscovered:
		return wait(waitInventoried, "report the inventory"), nil
	case machine.StateInventoried:
		return wait(waitInventoried, "waiting for the hardware checks"), nil
	case machine.StateReady:
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF,
			Reason: "the machine is ready; it stays off until it is allocated"}, nil
	case machine.StateFailed:
		t, err := s.store.Client.Transition.Query().
			Where(transition.MachineID(m.ID)).Order(ent.Desc(transition.FieldID)).First(ctx)
		reason := "the machine failed"
		if err == nil && t.Reason != "" {
			reason += ": " + t.Reason
		} else if err != nil && !ent.IsNotFound(err) {
			return nil, fmt.Errorf("read state history: %w", err)
		}
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF, Reason: reason}, nil
	default:
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_REBOOT,
			Reason: fmt.Sprintf("the machine is %s: reboot into what it boots next", m.State)}, nil
	}
}

// ReportProgress records how far the agent's install or wipe is.
func (s *Service) ReportProgress(ctx context.Context, req *connect.Request[agentv1.ReportProgressRequest]) (*connect.Response[agentv1.ReportProgressResponse], error) {
	id, err := parseMachineID(req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := lockMachine(ctx, s.store, tx, id)
		if err != nil {
			return err
		}
		if err := s.currentBoot(ctx, m); err != nil {
			return err
		}
		r := req.Msg
		return s.steps.Progress(ctx, tx, m, r.GetStep(), r.GetDone(), r.GetTotal(), r.GetMessage())
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.ReportProgressResponse{}), nil
}

// CompleteStep ends the agent's install or wipe and says what to do next.
func (s *Service) CompleteStep(ctx context.Context, req *connect.Request[agentv1.CompleteStepRequest]) (*connect.Response[agentv1.CompleteStepResponse], error) {
	id, err := parseMachineID(req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	var last *ent.Machine
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := lockMachine(ctx, s.store, tx, id)
		if err != nil {
			return err
		}
		if err := s.currentBoot(ctx, m); err != nil {
			return err
		}
		r := req.Msg
		last, err = s.steps.Complete(ctx, tx, m, provision.Outcome{Step: r.GetStep(), Error: r.GetError(),
			Bytes: r.GetBytes(), Duration: r.GetDuration().AsDuration()})
		return err
	})
	if err != nil {
		return nil, err
	}
	in, err := s.instruction(ctx, last)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.CompleteStepResponse{Instruction: in}), nil
}
