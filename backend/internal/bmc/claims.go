package bmc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/bmclease"
	"github.com/carbide-dev/carbide/ent/bmcoperation"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// grantQuery takes a machine's lease for a daemon if it is free or
// expired, and returns the grant's token; no row if another daemon holds
// it. On a conflict with a concurrent grant PostgreSQL waits for it and
// checks the condition on the row it committed.
const grantQuery = `INSERT INTO bmc_leases (machine_id, token, holder, expire_time, grant_time)
	VALUES ($1, 1, $2, $3, $4)
	ON CONFLICT (machine_id) DO UPDATE SET token = bmc_leases.token + 1, holder = excluded.holder,
		expire_time = excluded.expire_time, grant_time = excluded.grant_time
	WHERE bmc_leases.expire_time <= excluded.grant_time
	RETURNING token`

// Claim hands a daemon up to max_machines machines under leases: first
// those with an operation waiting (oldest first), then those whose power
// state is due to be polled (seen longest ago first).
func (s *Service) Claim(ctx context.Context, req *connect.Request[bmcv1.ClaimRequest]) (*connect.Response[bmcv1.ClaimResponse], error) {
	m := req.Msg
	max := int(m.GetMaxMachines())
	var work []*bmcv1.Work
	var now, expire time.Time
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		work = nil
		now = store.Now()
		expire = now.Add(s.lease)
		held, err := s.heldMachines(ctx, tx, now)
		if err != nil {
			return err
		}
		tried := map[uuid.UUID]bool{}
		var segDefaults defaults // read at the first BMC without credentials of its own
		defaultsRead := false
		take := func(machineID uuid.UUID, op *ent.BMCOperation) error {
			tried[machineID] = true
			b, err := tx.BMC.Query().Where(entbmc.MachineID(machineID)).Only(ctx)
			if ent.IsNotFound(err) {
				if op != nil {
					return s.finish(ctx, tx, op, bmcoperation.StateFailed, "the machine has no BMC", "unknown")
				}
				return nil
			} else if err != nil {
				return fmt.Errorf("read BMC: %w", err)
			}
			var creds *ent.SegmentCredentials
			if !ownCredentials(b) {
				if !defaultsRead {
					if segDefaults, err = loadDefaults(ctx, tx.SegmentCredentials); err != nil {
						return err
					}
					defaultsRead = true
				}
				if creds = segDefaults.forBMC(b); creds == nil {
					// Nothing a daemon could do: the operation fails,
					// a poll records why, and the BMC waits for its
					// next poll like the others.
					why := noCredentials(b)
					if op != nil {
						return s.finish(ctx, tx, op, bmcoperation.StateFailed, why, "unknown")
					}
					return s.observe(ctx, tx, machineID, "unknown", why, now)
				}
			}
			token, ok, err := s.grant(ctx, tx, machineID, m.GetWorker(), expire, now)
			if err != nil || !ok {
				return err
			}
			target, err := s.target(b, creds, m.GetPublicKey())
			if err != nil {
				return err
			}
			w := &bmcv1.Work{MachineId: machineID.String(), Lease: token,
				LeaseExpireTime: timestamppb.New(expire), Target: target}
			if op != nil {
				u := op.Update().SetState(bmcoperation.StateRunning).AddAttempts(1).SetWorker(m.GetWorker())
				if op.StartTime == nil {
					u.SetStartTime(now)
				}
				if op, err = u.Save(ctx); err != nil {
					return fmt.Errorf("start operation: %w", err)
				}
				w.Operation = operationToProto(op)
				if err := s.store.RecordChange(ctx, tx, store.KindBMCOperation, store.Updated, op.ID.String(), w.Operation); err != nil {
					return err
				}
			}
			work = append(work, w)
			return nil
		}
		// Operations: the oldest unfinished operation of each machine
		// no daemon holds.
		ops, err := tx.BMCOperation.Query().
			Where(bmcoperation.StateIn(bmcoperation.StatePending, bmcoperation.StateRunning)).
			Order(ent.Asc(bmcoperation.FieldCreateTime), ent.Asc(bmcoperation.FieldID)).
			Limit(4*max + len(held)).All(ctx)
		if err != nil {
			return fmt.Errorf("read waiting operations: %w", err)
		}
		for _, op := range ops {
			if len(work) >= max {
				break
			}
			if held[op.MachineID] || tried[op.MachineID] {
				tried[op.MachineID] = true // a later operation waits for this one
				continue
			}
			if err := take(op.MachineID, op); err != nil {
				return err
			}
		}
		if m.GetPollIntervalSeconds() == 0 || len(work) >= max {
			return nil
		}
		due := now.Add(-time.Duration(m.GetPollIntervalSeconds()) * time.Second)
		polls, err := tx.BMC.Query().
			Where(entbmc.Or(entbmc.PowerTimeIsNil(), entbmc.PowerTimeLTE(due))).
			Order(ent.Asc(entbmc.FieldPowerTime), ent.Asc(entbmc.FieldMachineID)).
			Limit(2*max + len(held) + len(tried)).All(ctx)
		if err != nil {
			return fmt.Errorf("read BMCs due for a poll: %w", err)
		}
		for _, b := range polls {
			if len(work) >= max {
				break
			}
			if held[b.MachineID] || tried[b.MachineID] {
				continue
			}
			if err := take(b.MachineID, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Logged once committed: the log of grants and ends is a record of
	// who held each machine when, checked by the tests for overlaps.
	for _, w := range work {
		s.logger.InfoContext(ctx, "BMC lease granted", "machine", w.GetMachineId(), "worker", m.GetWorker(), "token", w.GetLease(), "at", now, "until", expire)
	}
	return connect.NewResponse(&bmcv1.ClaimResponse{Work: work, LeaseSeconds: uint32(s.lease / time.Second)}), nil
}

// heldMachines are the machines whose lease a daemon holds now.
func (s *Service) heldMachines(ctx context.Context, tx *ent.Tx, now time.Time) (map[uuid.UUID]bool, error) {
	var rows []struct {
		MachineID uuid.UUID `json:"machine_id"`
	}
	if err := tx.BMCLease.Query().Where(bmclease.ExpireTimeGT(now)).Select(bmclease.FieldMachineID).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	held := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		held[r.MachineID] = true
	}
	return held, nil
}

// grant takes the machine's lease for worker until expire, if it is free
// or expired at now.
func (s *Service) grant(ctx context.Context, tx *ent.Tx, machineID uuid.UUID, worker string, expire, now time.Time) (token int64, ok bool, err error) {
	rows, err := tx.QueryContext(ctx, s.store.SQL(grantQuery), machineID, worker, expire, now)
	if err != nil {
		return 0, false, fmt.Errorf("grant lease: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return 0, false, rows.Err()
	}
	if err := rows.Scan(&token); err != nil {
		return 0, false, fmt.Errorf("grant lease: %w", err)
	}
	return token, true, rows.Close()
}

// target is how the daemon reaches b, with its own credentials or, if
// creds is not nil, its segment's defaults, the password sealed to the
// daemon's public key.
func (s *Service) target(b *ent.BMC, creds *ent.SegmentCredentials, publicKey []byte) (*bmcv1.Target, error) {
	t := &bmcv1.Target{Address: b.Address, Port: uint32(b.Port), Protocol: protocolOf[b.Protocol], Username: b.Username}
	var (
		password []byte
		err      error
	)
	switch {
	case creds != nil:
		t.Username = creds.Username
		password, err = s.keys.Open(secrets.Sealed{KeyID: creds.PasswordKeyID, Ciphertext: creds.PasswordSealed}, segmentPasswordAAD(creds.SegmentID))
		if err != nil {
			return nil, fmt.Errorf("open the default BMC password of segment %s: %w", creds.SegmentID, err)
		}
	case b.PasswordSealed == nil || len(*b.PasswordSealed) == 0:
		return t, nil
	default:
		password, err = s.keys.Open(secrets.Sealed{KeyID: b.PasswordKeyID, Ciphertext: *b.PasswordSealed}, passwordAAD(b.MachineID))
		if err != nil {
			return nil, fmt.Errorf("open the BMC password of machine %s: %w", b.MachineID, err)
		}
	}
	t.SealedPassword, err = secrets.SealTo(publicKey, passwordInfo(b.MachineID), password)
	clear(password)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("public_key: %w", err))
	}
	return t, nil
}

// Renew extends the daemon's leases it still holds.
func (s *Service) Renew(ctx context.Context, req *connect.Request[bmcv1.RenewRequest]) (*connect.Response[bmcv1.RenewResponse], error) {
	now := store.Now()
	expire := now.Add(s.lease)
	resp := &bmcv1.RenewResponse{LeaseExpireTime: timestamppb.New(expire)}
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		resp.Lost = nil
		for _, l := range req.Msg.GetLeases() {
			id, err := ids.Parse("leases.machine_id", l.GetMachineId())
			if err != nil {
				return err
			}
			n, err := tx.BMCLease.Update().
				Where(bmclease.MachineID(id), bmclease.Token(l.GetLease()), bmclease.Holder(req.Msg.GetWorker()),
					bmclease.ExpireTimeGT(now)).
				SetExpireTime(expire).Save(ctx)
			if err != nil {
				return fmt.Errorf("renew lease: %w", err)
			}
			if n == 0 {
				resp.Lost = append(resp.Lost, l)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// errLeaseLost is the answer to a report under a lease the daemon no
// longer holds.
var errLeaseLost = errors.New("the lease is no longer this daemon's (it expired and another daemon took the machine over, or it was released)")

// Report records what the daemon did under a lease, and ends the lease.
func (s *Service) Report(ctx context.Context, req *connect.Request[bmcv1.ReportRequest]) (*connect.Response[bmcv1.ReportResponse], error) {
	m := req.Msg
	machineID, err := ids.Parse("lease.machine_id", m.GetLease().GetMachineId())
	if err != nil {
		return nil, err
	}
	var out *bmcv1.Operation
	var now time.Time
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		out = nil
		now = store.Now()
		// The lease's token fences the report: it counts if no other
		// daemon was granted the machine since, even if it expired.
		n, err := tx.BMCLease.Update().
			Where(bmclease.MachineID(machineID), bmclease.Token(m.GetLease().GetLease()), bmclease.Holder(m.GetWorker())).
			SetExpireTime(now).SetHolder("").Save(ctx)
		if err != nil {
			return fmt.Errorf("end lease: %w", err)
		}
		if n == 0 {
			return connect.NewError(connect.CodeFailedPrecondition, errLeaseLost)
		}
		power := powerName[m.GetPowerState()]
		if power == "" {
			power = "unknown"
		}
		if m.GetOperationId() != "" {
			opID, err := ids.Parse("operation_id", m.GetOperationId())
			if err != nil {
				return err
			}
			op, err := tx.BMCOperation.Get(ctx, opID)
			switch {
			case ent.IsNotFound(err):
				return noOperation(opID)
			case err != nil:
				return fmt.Errorf("read operation: %w", err)
			case op.MachineID != machineID || op.State != bmcoperation.StateRunning || op.Worker != m.GetWorker():
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
					"operation %s is not running on machine %s under this daemon (it is %s, worker %q)", opID, machineID, op.State, op.Worker))
			}
			state := bmcoperation.StateSucceeded
			if m.GetResult() == bmcv1.ReportRequest_RESULT_FAILED {
				state = bmcoperation.StateFailed
			}
			if err := s.finish(ctx, tx, op, state, m.GetError(), power); err != nil {
				return err
			}
			if op, err = tx.BMCOperation.Get(ctx, opID); err != nil {
				return fmt.Errorf("read operation: %w", err)
			}
			out = operationToProto(op)
		}
		errText := ""
		if m.GetOperationId() == "" {
			errText = m.GetError()
		}
		return s.observe(ctx, tx, machineID, power, errText, now)
	})
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "BMC lease ended", "machine", machineID, "worker", m.GetWorker(), "token", m.GetLease().GetLease(), "at", now)
	return connect.NewResponse(&bmcv1.ReportResponse{Operation: out}), nil
}

// finish ends op in state, with its error and the power state seen.
func (s *Service) finish(ctx context.Context, tx *ent.Tx, op *ent.BMCOperation, state bmcoperation.State, why, power string) error {
	op, err := op.Update().SetState(state).SetError(why).SetEndTime(store.Now()).
		SetPowerState(bmcoperation.PowerState(power)).Save(ctx)
	if err != nil {
		return fmt.Errorf("finish operation: %w", err)
	}
	return s.store.RecordChange(ctx, tx, store.KindBMCOperation, store.Updated, op.ID.String(), operationToProto(op))
}

// observe records the power state a daemon saw (or why it could not), and
// whether it drifted from what the machine's last finished power
// operation left.
func (s *Service) observe(ctx context.Context, tx *ent.Tx, machineID uuid.UUID, power, why string, now time.Time) error {
	b, err := tx.BMC.Query().Where(entbmc.MachineID(machineID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil // deleted meanwhile
	} else if err != nil {
		return fmt.Errorf("read BMC: %w", err)
	}
	drift := false
	if power != "unknown" {
		if want, ok, err := s.expectedPower(ctx, tx, machineID); err != nil {
			return err
		} else if ok {
			drift = want != power
		}
	}
	before := toProto(b)
	b, err = b.Update().SetPowerState(entbmc.PowerState(power)).SetPowerTime(now).SetPowerError(why).SetPowerDrift(drift).Save(ctx)
	if err != nil {
		return fmt.Errorf("record power state: %w", err)
	}
	after := toProto(b)
	if before.GetPowerState() == after.GetPowerState() && before.GetPowerError() == after.GetPowerError() &&
		before.GetPowerDrift() == after.GetPowerDrift() {
		return nil // only the time it was seen changed: no news for Watch
	}
	if drift && !before.GetPowerDrift() {
		s.logger.WarnContext(ctx, "BMC power state drifted", "machine", machineID, "power", power)
	}
	if after, err = showOne(ctx, tx.SegmentCredentials, b); err != nil {
		return err
	}
	return s.store.RecordChange(ctx, tx, store.KindBMC, store.Updated, machineID.String(), after)
}

// expectedPower is the power state the machine's last succeeded power
// operation left; ok is false if it had none.
func (s *Service) expectedPower(ctx context.Context, tx *ent.Tx, machineID uuid.UUID) (string, bool, error) {
	op, err := tx.BMCOperation.Query().
		Where(bmcoperation.MachineID(machineID), bmcoperation.StateEQ(bmcoperation.StateSucceeded),
			bmcoperation.TypeNEQ(bmcoperation.TypeSetBootDevice)).
		Order(ent.Desc(bmcoperation.FieldEndTime)).First(ctx)
	if ent.IsNotFound(err) {
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("read last operation: %w", err)
	}
	switch op.Type {
	case bmcoperation.TypePowerOff, bmcoperation.TypeSoftOff:
		return "off", true, nil
	default:
		return "on", true, nil
	}
}

// Release ends leases a daemon holds, as it does when it stops: their
// operations wait for the next claim.
func (s *Service) Release(ctx context.Context, req *connect.Request[bmcv1.ReleaseRequest]) (*connect.Response[bmcv1.ReleaseResponse], error) {
	var now time.Time
	var ended []*bmcv1.LeaseRef
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		now, ended = store.Now(), nil
		for _, l := range req.Msg.GetLeases() {
			id, err := ids.Parse("leases.machine_id", l.GetMachineId())
			if err != nil {
				return err
			}
			n, err := tx.BMCLease.Update().
				Where(bmclease.MachineID(id), bmclease.Token(l.GetLease()), bmclease.Holder(req.Msg.GetWorker())).
				SetExpireTime(now).SetHolder("").Save(ctx)
			if err != nil {
				return fmt.Errorf("release lease: %w", err)
			}
			if n > 0 {
				ended = append(ended, l)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range ended {
		s.logger.InfoContext(ctx, "BMC lease ended", "machine", l.GetMachineId(), "worker", req.Msg.GetWorker(), "token", l.GetLease(), "at", now)
	}
	return connect.NewResponse(&bmcv1.ReleaseResponse{}), nil
}
