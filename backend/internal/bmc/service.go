// Package bmc implements carbide.bmc.v1.BMCService: each machine's BMC
// (its address and sealed password), the power and boot operations
// operators queue, and the leases under which the carbide-bmc daemons
// take a machine's work, one daemon per machine at a time.
//
// A daemon claims machines (Claim): the oldest waiting operation of a
// machine, or a machine whose power state is due to be polled. Each
// claim takes the machine's lease, a row per machine in bmc_leases, in
// one statement that succeeds only if the lease is free or expired; the
// database's unique index on the machine makes two grants at once
// impossible. A lease's token grows with each grant and fences the
// reports of a daemon that lost it. The daemon renews its leases while it
// works (Renew), and reports (Report), which ends the lease; a daemon
// that dies stops renewing, and once its leases expire another daemon
// claims the machines, and takes a running operation over.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect/sql"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/bmcoperation"
	"github.com/carbide-dev/carbide/ent/predicate"
	"github.com/carbide-dev/carbide/ent/segmentcredentials"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/carbide-dev/carbide/gen/carbide/bmc/v1/bmcv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultLeaseTime is how long a daemon's lease on a machine lasts unless
// it renews it.
const DefaultLeaseTime = 30 * time.Second

// Service serves BMCService.
type Service struct {
	store  *store.Store
	keys   *secrets.Keyring // nil: no password can be set
	lease  time.Duration
	logger *slog.Logger
}

var _ bmcv1connect.BMCServiceHandler = (*Service)(nil)

// NewService returns a BMCService over st. keys seals the passwords at
// rest; without it (nil) SetBMC refuses passwords. lease is how long a
// daemon's lease lasts (DefaultLeaseTime if 0).
func NewService(st *store.Store, keys *secrets.Keyring, lease time.Duration, logger *slog.Logger) *Service {
	if lease <= 0 {
		lease = DefaultLeaseTime
	}
	return &Service{store: st, keys: keys, lease: lease, logger: logger}
}

// passwordAAD binds a sealed password to its machine, so that a sealed
// value copied to another machine's row does not open.
func passwordAAD(machineID uuid.UUID) []byte {
	return secrets.AAD("bmc", machineID.String(), "password")
}

// passwordInfo is the HPKE info a password is sealed to a daemon with
// (see carbide.bmc.v1.Target.sealed_password).
func passwordInfo(machineID uuid.UUID) []byte {
	return []byte("carbide bmc password " + machineID.String())
}

// SetBMC records a machine's BMC, or changes it. A BMC set without a
// username has no credentials of its own, and uses its segment's
// defaults (SetSegmentCredentials).
func (s *Service) SetBMC(ctx context.Context, req *connect.Request[bmcv1.SetBMCRequest]) (*connect.Response[bmcv1.SetBMCResponse], error) {
	m := req.Msg
	id, err := ids.Parse("machine_id", m.GetMachineId())
	if err != nil {
		return nil, err
	}
	var sealed *secrets.Sealed
	if m.GetPassword() != "" {
		// Without a keyring Seal fails with secrets.ErrNoKeyring, which
		// reaches the caller as FailedPrecondition saying what to set.
		sl, err := s.keys.Seal([]byte(m.GetPassword()), passwordAAD(id))
		if err != nil {
			return nil, fmt.Errorf("seal BMC password: %w", err)
		}
		sealed = &sl
	}
	protocol := protocolName[m.GetProtocol()]
	if protocol == "" {
		protocol = entbmc.ProtocolAuto
	}
	var out *bmcv1.BMC
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if _, err := tx.Machine.Get(ctx, id); ent.IsNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine_id: no machine %s", id))
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		now := store.Now()
		cur, err := tx.BMC.Query().Where(entbmc.MachineID(id)).Only(ctx)
		var b *ent.BMC
		typ := store.Updated
		switch {
		case ent.IsNotFound(err):
			typ = store.Created
			c := tx.BMC.Create().SetMachineID(id).SetAddress(m.GetAddress()).SetPort(int(m.GetPort())).
				SetProtocol(protocol).SetUsername(m.GetUsername()).SetCreateTime(now).SetUpdateTime(now)
			if sealed != nil {
				c.SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).SetCredentialSource(entbmc.CredentialSourceOperator)
			}
			b, err = c.Save(ctx)
		case err != nil:
			return fmt.Errorf("read BMC: %w", err)
		default:
			u := cur.Update().SetAddress(m.GetAddress()).SetPort(int(m.GetPort())).
				SetProtocol(protocol).SetUsername(m.GetUsername()).SetUpdateTime(now)
			switch {
			case sealed != nil:
				// The operator's credentials from now on: an agent no
				// longer replaces them.
				u.SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).SetCredentialSource(entbmc.CredentialSourceOperator)
			case m.GetUsername() == "":
				// No credentials of its own: its segment's defaults.
				u.ClearPasswordSealed().SetPasswordKeyID("")
			}
			b, err = u.Save(ctx)
		}
		if err != nil {
			return fmt.Errorf("write BMC: %w", err)
		}
		if out, err = showOne(ctx, tx.SegmentCredentials, b); err != nil {
			return err
		}
		return s.store.RecordChange(ctx, tx, store.KindBMC, typ, id.String(), out)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.SetBMCResponse{Bmc: out}), nil
}

// GetBMC returns a machine's BMC, without its password.
func (s *Service) GetBMC(ctx context.Context, req *connect.Request[bmcv1.GetBMCRequest]) (*connect.Response[bmcv1.GetBMCResponse], error) {
	id, err := ids.Parse("machine_id", req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	b, err := s.store.Client.BMC.Query().Where(entbmc.MachineID(id)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, noBMC(id)
	} else if err != nil {
		return nil, fmt.Errorf("read BMC: %w", err)
	}
	out, err := showOne(ctx, s.store.Client.SegmentCredentials, b)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.GetBMCResponse{Bmc: out}), nil
}

// ListBMCs lists BMCs in machine id order.
func (s *Service) ListBMCs(ctx context.Context, req *connect.Request[bmcv1.ListBMCsRequest]) (*connect.Response[bmcv1.ListBMCsResponse], error) {
	var states []entbmc.PowerState
	var names []string
	for _, p := range req.Msg.GetPowerStates() {
		states = append(states, entbmc.PowerState(powerName[p]))
		names = append(names, powerName[p])
	}
	fp := pagetoken.Filter(names...)
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.BMC.Query()
	if len(states) > 0 {
		q = q.Where(entbmc.PowerStateIn(states...))
	}
	if after != "" {
		a, err := uuid.Parse(after)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("page_token: not a token of this list"))
		}
		q = q.Where(machineIDGT(a))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	bs, err := q.Order(ent.Asc(entbmc.FieldMachineID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list BMCs: %w", err)
	}
	resp := &bmcv1.ListBMCsResponse{}
	if len(bs) > size {
		bs = bs[:size]
		resp.NextPageToken = pagetoken.Encode(bs[size-1].MachineID.String(), fp)
	}
	d, err := loadDefaults(ctx, s.store.Client.SegmentCredentials)
	if err != nil {
		return nil, err
	}
	for _, b := range bs {
		resp.Bmcs = append(resp.Bmcs, d.show(b))
	}
	return connect.NewResponse(resp), nil
}

// DeleteBMC forgets a machine's BMC; its operations that no daemon has
// started are cancelled. Deleting a BMC that is not there succeeds.
func (s *Service) DeleteBMC(ctx context.Context, req *connect.Request[bmcv1.DeleteBMCRequest]) (*connect.Response[bmcv1.DeleteBMCResponse], error) {
	id, err := ids.Parse("machine_id", req.Msg.GetMachineId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		b, err := tx.BMC.Query().Where(entbmc.MachineID(id)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read BMC: %w", err)
		}
		if err := tx.BMC.DeleteOne(b).Exec(ctx); err != nil {
			return fmt.Errorf("delete BMC: %w", err)
		}
		if err := s.cancelPending(ctx, tx, id, "the machine's BMC was deleted"); err != nil {
			return err
		}
		return s.store.RecordChange(ctx, tx, store.KindBMC, store.Deleted, id.String(), toProto(b))
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.DeleteBMCResponse{}), nil
}

// cancelPending cancels the machine's operations no daemon has started.
func (s *Service) cancelPending(ctx context.Context, tx *ent.Tx, machineID uuid.UUID, why string) error {
	ops, err := tx.BMCOperation.Query().
		Where(bmcoperation.MachineID(machineID), bmcoperation.StateEQ(bmcoperation.StatePending)).All(ctx)
	if err != nil {
		return fmt.Errorf("read operations: %w", err)
	}
	now := store.Now()
	for _, op := range ops {
		op, err := op.Update().SetState(bmcoperation.StateCancelled).SetError(why).SetEndTime(now).Save(ctx)
		if err != nil {
			return fmt.Errorf("cancel operation: %w", err)
		}
		if err := s.store.RecordChange(ctx, tx, store.KindBMCOperation, store.Updated, op.ID.String(), operationToProto(op)); err != nil {
			return err
		}
	}
	return nil
}

// machineIDGT selects the BMCs of machines whose id sorts after id.
func machineIDGT(id uuid.UUID) predicate.BMC {
	return predicate.BMC(sql.FieldGT(entbmc.FieldMachineID, id))
}

func noBMC(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine %s has no BMC; set one with SetBMC", id))
}

var (
	protocolName = map[bmcv1.Protocol]entbmc.Protocol{
		bmcv1.Protocol_PROTOCOL_AUTO:    entbmc.ProtocolAuto,
		bmcv1.Protocol_PROTOCOL_IPMI:    entbmc.ProtocolIpmi,
		bmcv1.Protocol_PROTOCOL_REDFISH: entbmc.ProtocolRedfish,
	}
	protocolOf = map[entbmc.Protocol]bmcv1.Protocol{
		entbmc.ProtocolAuto:    bmcv1.Protocol_PROTOCOL_AUTO,
		entbmc.ProtocolIpmi:    bmcv1.Protocol_PROTOCOL_IPMI,
		entbmc.ProtocolRedfish: bmcv1.Protocol_PROTOCOL_REDFISH,
	}
	credentialSourceOf = map[entbmc.CredentialSource]bmcv1.CredentialSource{
		entbmc.CredentialSourceOperator: bmcv1.CredentialSource_CREDENTIAL_SOURCE_OPERATOR,
		entbmc.CredentialSourceAgent:    bmcv1.CredentialSource_CREDENTIAL_SOURCE_AGENT,
	}
	powerName = map[bmcv1.PowerState]string{
		bmcv1.PowerState_POWER_STATE_UNKNOWN: "unknown",
		bmcv1.PowerState_POWER_STATE_ON:      "on",
		bmcv1.PowerState_POWER_STATE_OFF:     "off",
	}
	powerOf = map[string]bmcv1.PowerState{
		"unknown": bmcv1.PowerState_POWER_STATE_UNKNOWN,
		"on":      bmcv1.PowerState_POWER_STATE_ON,
		"off":     bmcv1.PowerState_POWER_STATE_OFF,
	}
)

// toProto is b as the API shows it: never its password.
func toProto(b *ent.BMC) *bmcv1.BMC {
	out := &bmcv1.BMC{
		MachineId:        b.MachineID.String(),
		Address:          b.Address,
		Port:             uint32(b.Port),
		Protocol:         protocolOf[b.Protocol],
		Username:         b.Username,
		HasPassword:      b.PasswordSealed != nil && len(*b.PasswordSealed) > 0,
		Mac:              b.MAC,
		PowerState:       powerOf[string(b.PowerState)],
		PowerError:       b.PowerError,
		PowerDrift:       b.PowerDrift,
		CreateTime:       timestamppb.New(b.CreateTime),
		UpdateTime:       timestamppb.New(b.UpdateTime),
		CredentialSource: credentialSourceOf[b.CredentialSource],
	}
	if b.PowerTime != nil {
		out.PowerStateTime = timestamppb.New(*b.PowerTime)
	}
	return out
}

// Reseal seals again, under the keyring's first key, every stored BMC
// password that another key sealed, the BMCs' own and the segments'
// defaults: the second step of a key rotation. It returns how many it
// resealed and how many are left under other keys (their key is missing
// from the keyring, or they do not open).
func (s *Service) Reseal(ctx context.Context) (resealed, left int, err error) {
	if s.keys == nil {
		return 0, 0, nil
	}
	resealed, left, err = s.resealBMCs(ctx)
	if err != nil {
		return resealed, left, err
	}
	r, l, err := s.resealSegments(ctx)
	return resealed + r, left + l, err
}

// resealBMCs reseals the BMCs' own passwords (see Reseal).
func (s *Service) resealBMCs(ctx context.Context) (resealed, left int, err error) {
	bs, err := s.store.Client.BMC.Query().
		Where(entbmc.PasswordSealedNotNil(), entbmc.PasswordKeyIDNEQ(s.keys.PrimaryID())).All(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read BMCs to reseal: %w", err)
	}
	for _, b := range bs {
		sl, changed, err := s.keys.Reseal(secrets.Sealed{KeyID: b.PasswordKeyID, Ciphertext: *b.PasswordSealed}, passwordAAD(b.MachineID))
		if err != nil {
			s.logger.ErrorContext(ctx, "BMC password not resealed", "machine", b.MachineID, "error", err)
			left++
			continue
		}
		if !changed {
			continue
		}
		// Only if no one changed it meanwhile.
		n, err := s.store.Client.BMC.Update().
			Where(entbmc.ID(b.ID), entbmc.PasswordKeyID(b.PasswordKeyID)).
			SetPasswordSealed(sl.Ciphertext).SetPasswordKeyID(sl.KeyID).Save(ctx)
		if err != nil {
			return resealed, left, fmt.Errorf("reseal BMC password: %w", err)
		}
		resealed += n
	}
	return resealed, left, nil
}

// resealSegments reseals the segments' default passwords (see Reseal).
func (s *Service) resealSegments(ctx context.Context) (resealed, left int, err error) {
	cs, err := s.store.Client.SegmentCredentials.Query().
		Where(segmentcredentials.PasswordKeyIDNEQ(s.keys.PrimaryID())).All(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read segment credentials to reseal: %w", err)
	}
	for _, c := range cs {
		sl, changed, err := s.keys.Reseal(secrets.Sealed{KeyID: c.PasswordKeyID, Ciphertext: c.PasswordSealed}, segmentPasswordAAD(c.SegmentID))
		if err != nil {
			s.logger.ErrorContext(ctx, "segment BMC password not resealed", "segment", c.SegmentID, "error", err)
			left++
			continue
		}
		if !changed {
			continue
		}
		// Only if no one changed it meanwhile.
		n, err := s.store.Client.SegmentCredentials.Update().
			Where(segmentcredentials.ID(c.ID), segmentcredentials.PasswordKeyID(c.PasswordKeyID)).
			SetPasswordSealed(sl.Ciphertext).SetPasswordKeyID(sl.KeyID).Save(ctx)
		if err != nil {
			return resealed, left, fmt.Errorf("reseal segment BMC password: %w", err)
		}
		resealed += n
	}
	return resealed, left, nil
}
