package bmc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/machine"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/uuid"
)

// Enrollment is a BMC user that a machine's discovery agent created, or
// reset, in band: the BMC's LAN address and MAC, and the user's
// credentials.
type Enrollment struct {
	MachineID uuid.UUID
	// Address is the IPv4 address of the BMC's LAN channel.
	Address string
	// MAC is the LAN channel's MAC address; "" when the BMC did not say.
	MAC      string
	Username string
	// Password is write-only: sealed at rest, never returned or logged.
	Password string
}

// enrolRefusal says why an agent may not store credentials over b's, or
// "" if it may: there are none, or an agent stored them. An operator's
// credentials win: a password set with SetBMC, or the default
// credentials of the segment holding a BMC registered without its own.
func enrolRefusal(b *ent.BMC, d defaults) string {
	switch {
	case b == nil || b.CredentialSource == entbmc.CredentialSourceAgent:
		return ""
	case d.forBMC(b) != nil:
		return fmt.Sprintf("machine %s's BMC uses the default credentials of segment %s; an agent does not replace them; give the BMC no address in that segment, or delete it (DeleteBMC), to let the agent enrol it",
			b.MachineID, d.forBMC(b).SegmentID)
	case b.PasswordSealed != nil && len(*b.PasswordSealed) > 0:
		return fmt.Sprintf("machine %s has BMC credentials an operator set; an agent does not replace them; delete the BMC (DeleteBMC) to let the agent enrol it", b.MachineID)
	}
	return ""
}

// MayEnroll reports whether the discovery agent of a machine may enrol its
// BMC in band: the machine has no BMC credentials, or only ones an agent
// enrolled before (see enrolRefusal). Without a keyring no agent is asked: it would change a
// BMC password the API cannot store.
func (s *Service) MayEnroll(ctx context.Context, machineID uuid.UUID) (bool, error) {
	if s.keys.PrimaryID() == "" {
		return false, nil
	}
	b, err := s.store.Client.BMC.Query().Where(entbmc.MachineID(machineID)).Only(ctx)
	if ent.IsNotFound(err) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("read BMC: %w", err)
	}
	d, err := loadDefaults(ctx, s.store.Client.SegmentCredentials)
	if err != nil {
		return false, err
	}
	return enrolRefusal(b, d) == "", nil
}

// Enroll stores the BMC user an agent created in band, with its password
// sealed as SetBMC seals it, and marks the credentials as the agent's. A
// machine whose BMC has an operator's credentials keeps them: Enroll then
// fails with FailedPrecondition. A new BMC is reached over IPMI on its
// default port; an existing one keeps its port and protocol.
func (s *Service) Enroll(ctx context.Context, e Enrollment) (*bmcv1.BMC, error) {
	// Without a keyring Seal fails with secrets.ErrNoKeyring, which
	// reaches the caller as FailedPrecondition saying what to set.
	sealed, err := s.keys.Seal([]byte(e.Password), passwordAAD(e.MachineID))
	if err != nil {
		return nil, fmt.Errorf("seal BMC password: %w", err)
	}
	var out *bmcv1.BMC
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if _, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.ID(e.MachineID))).Only(ctx); ent.IsNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("machine_id: no machine %s", e.MachineID))
		} else if err != nil {
			return fmt.Errorf("read machine: %w", err)
		}
		cur, err := store.ForUpdate(s.store, tx.BMC.Query().Where(entbmc.MachineID(e.MachineID))).Only(ctx)
		if ent.IsNotFound(err) {
			cur = nil
		} else if err != nil {
			return fmt.Errorf("read BMC: %w", err)
		}
		d, err := loadDefaults(ctx, tx.SegmentCredentials)
		if err != nil {
			return err
		}
		if why := enrolRefusal(cur, d); why != "" {
			return connect.NewError(connect.CodeFailedPrecondition, errors.New(why))
		}
		now := store.Now()
		var b *ent.BMC
		typ := store.Updated
		if cur == nil {
			typ = store.Created
			b, err = tx.BMC.Create().SetMachineID(e.MachineID).SetAddress(e.Address).SetProtocol(entbmc.ProtocolIpmi).
				SetUsername(e.Username).SetMAC(e.MAC).SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).
				SetCredentialSource(entbmc.CredentialSourceAgent).SetCreateTime(now).SetUpdateTime(now).Save(ctx)
		} else {
			b, err = cur.Update().SetAddress(e.Address).SetUsername(e.Username).SetMAC(e.MAC).
				SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).
				SetCredentialSource(entbmc.CredentialSourceAgent).SetUpdateTime(now).Save(ctx)
		}
		if err != nil {
			return fmt.Errorf("write BMC: %w", err)
		}
		out = toProto(b)
		return s.store.RecordChange(ctx, tx, store.KindBMC, typ, e.MachineID.String(), out)
	})
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "BMC enrolled in band by the discovery agent", "machine", e.MachineID.String(),
		"address", e.Address, "mac", e.MAC, "username", e.Username)
	return out, nil
}
