// Package boot implements carbide.boot.v1.BootService: what each machine
// network-boots, asked by the stateless PXE daemons, and the boots and
// agent tokens with which a machine's discovery agent then speaks for it.
package boot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Lifecycle says what provisioning and assigned machines boot and ends
// their boot (provision.Controller).
type Lifecycle interface {
	BootAction(ctx context.Context, client *ent.Client, m *ent.Machine) (bootv1.BootAction, *bootv1.NetbootConfig, error)
	CloudInit(ctx context.Context, client *ent.Client, m *ent.Machine, mac string) (*bootv1.CloudInit, error)
	PhoneHome(ctx context.Context, tx *ent.Tx, m *ent.Machine, instance uuid.UUID) error
}

// Service serves BootService.
type Service struct {
	store    *store.Store
	tokens   *pki.AgentTokens
	steps    Lifecycle
	withheld *prometheus.CounterVec
}

var _ bootv1connect.BootServiceHandler = (*Service)(nil)

// Why a boot or a token was withheld, the reason label of
// carbide_boot_withheld_total.
const (
	withheldNoKey   = "no_token_key"
	withheldNoLease = "no_lease"
	withheldNonce   = "nonce"
)

// NewService returns a BootService over st. tokens signs agent tokens; nil
// means the API issues none, and discovery agents cannot report. Its
// metrics are registered with reg.
func NewService(st *store.Store, tokens *pki.AgentTokens, steps Lifecycle, reg prometheus.Registerer) *Service {
	s := &Service{store: st, tokens: tokens, steps: steps, withheld: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carbide_boot_withheld_total",
		Help: "Boots not started and agent tokens not issued to the PXE daemon, by reason: no_lease (the request did not come from the MAC's leased address), nonce (not the current boot's, used or expired), no_token_key.",
	}, []string{"reason"})}
	reg.MustRegister(s.withheld)
	return s
}

// GetBootConfig says what the machine with a MAC boots (the lifecycle's
// BootAction): Ready machines (and machines an operator holds in
// maintenance) their disk, provisioning machines the discovery agent
// until their image is written and then the image, assigned machines
// their instance's image, every other one the discovery image. For the
// PXE daemon, and only for the address that holds the MAC's lease, it
// starts a boot (start_boot) or exchanges the current boot's nonce for an
// agent token (boot_nonce), and gives the instance's cloud-init data
// (cloud_init).
func (s *Service) GetBootConfig(ctx context.Context, req *connect.Request[bootv1.GetBootConfigRequest]) (*connect.Response[bootv1.GetBootConfigResponse], error) {
	start, nonce := req.Msg.GetStartBoot(), req.Msg.GetBootNonce()
	if start || nonce != "" {
		if who := principal.FromContext(ctx); who == nil || !who.Has(principal.RolePXE) {
			return nil, connect.NewError(connect.CodePermissionDenied, errors.New(
				"only the PXE daemon (role pxe) starts boots and receives agent tokens; read the boot configuration without start_boot and boot_nonce"))
		}
	}
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	m, err := s.store.Client.Machine.Query().Where(machine.HasNicsWith(nic.MAC(mac))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no machine has the interface %s; it is enrolled when it asks carbide-dhcp for an address", mac))
	} else if err != nil {
		return nil, fmt.Errorf("find the machine of %s: %w", mac, err)
	}
	act, netboot, err := s.steps.BootAction(ctx, s.store.Client, m)
	if err != nil {
		return nil, err
	}
	resp := &bootv1.GetBootConfigResponse{
		MachineId: m.ID.String(),
		Hostname:  m.Hostname,
		State:     machines.StateToProto(m.State),
		Action:    act,
		Netboot:   netboot,
	}
	if req.Msg.GetCloudInit() {
		if err := s.cloudInit(ctx, m, mac, req.Msg.GetClientAddress(), resp); err != nil {
			return nil, err
		}
	}
	if resp.Action != bootv1.BootAction_BOOT_ACTION_DISCOVERY || (!start && nonce == "") {
		audit.Unchanged(ctx)
		return connect.NewResponse(resp), nil
	}
	reason, err := s.withhold(ctx, mac, req.Msg.GetClientAddress())
	if err != nil {
		return nil, err
	}
	if reason == "" && start {
		resp.BootNonce, err = s.startBoot(ctx, m.ID)
	} else if reason == "" {
		reason, err = s.mintToken(ctx, m.ID, nonce, resp)
	}
	if err != nil {
		return nil, err
	}
	if reason != "" {
		resp.TokenWithheldReason = reason
		audit.Unchanged(ctx)
	}
	return connect.NewResponse(resp), nil
}

// cloudInit sets resp.CloudInit for the PXE daemon, when the request
// came from the address that holds mac's lease and the machine has an
// instance.
func (s *Service) cloudInit(ctx context.Context, m *ent.Machine, mac, addr string, resp *bootv1.GetBootConfigResponse) error {
	if who := principal.FromContext(ctx); who == nil || !who.Has(principal.RolePXE) {
		return connect.NewError(connect.CodePermissionDenied, errors.New(
			"only the PXE daemon (role pxe) receives cloud-init data; read the boot configuration without cloud_init"))
	}
	held, err := s.holdsLease(ctx, mac, addr)
	if err != nil || !held {
		return err
	}
	resp.CloudInit, err = s.steps.CloudInit(ctx, s.store.Client, m, mac)
	return err
}

// holdsLease reports whether addr holds mac's unexpired lease.
func (s *Service) holdsLease(ctx context.Context, mac, addr string) (bool, error) {
	if addr == "" {
		return false, nil
	}
	n, err := s.store.Client.Lease.Query().
		Where(lease.MAC(mac), lease.Address(addr), lease.ExpireTimeGT(store.Now())).
		Count(ctx)
	if err != nil {
		return false, fmt.Errorf("read the leases of %s: %w", mac, err)
	}
	return n > 0, nil
}

// PhoneHome ends the boot of an instance's installed system: the machine
// becomes Assigned and the instance Running.
func (s *Service) PhoneHome(ctx context.Context, req *connect.Request[bootv1.PhoneHomeRequest]) (*connect.Response[bootv1.PhoneHomeResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	id, err := uuid.Parse(req.Msg.GetInstanceId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("instance_id %q is not a UUID", req.Msg.GetInstanceId()))
	}
	held, err := s.holdsLease(ctx, mac, req.Msg.GetClientAddress())
	if err != nil {
		return nil, err
	}
	if !held {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"%s does not hold a lease of %s; only the machine itself phones home, from its leased address", req.Msg.GetClientAddress(), mac))
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := store.ForUpdate(s.store, tx.Machine.Query().Where(machine.HasNicsWith(nic.MAC(mac)))).Only(ctx)
		if ent.IsNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("no machine has the interface %s", mac))
		} else if err != nil {
			return fmt.Errorf("find the machine of %s: %w", mac, err)
		}
		audit.Resources(ctx, []string{m.ID.String(), id.String()})
		return s.steps.PhoneHome(ctx, tx, m, id)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bootv1.PhoneHomeResponse{}), nil
}

// withhold says why no boot may be started nor token issued for mac at
// addr, or "" if they may: addr must hold mac's unexpired lease, so that
// only the machine itself, and not any host that can name its MAC, boots
// as it or gets a token for it.
func (s *Service) withhold(ctx context.Context, mac, addr string) (string, error) {
	if s.tokens == nil {
		s.withheld.WithLabelValues(withheldNoKey).Inc()
		return "the API issues no agent tokens: start carbide-api with --agent-token-key", nil
	}
	if addr == "" {
		s.withheld.WithLabelValues(withheldNoLease).Inc()
		return "the request named no client address", nil
	}
	held, err := s.holdsLease(ctx, mac, addr)
	if err != nil {
		return "", err
	}
	if !held {
		s.withheld.WithLabelValues(withheldNoLease).Inc()
		return fmt.Sprintf("%s does not hold a lease of %s; boot it through carbide-dhcp", addr, mac), nil
	}
	return "", nil
}

// startBoot records a new boot of machine id, superseding the one before
// (whose agent tokens stop working), and returns the nonce that buys its
// agent token.
func (s *Service) startBoot(ctx context.Context, id uuid.UUID) (string, error) {
	var raw [32]byte
	rand.Read(raw[:])
	nonce := base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(nonce))
	audit.Resources(ctx, []string{id.String()})
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		return tx.Machine.UpdateOneID(id).
			SetBootID(uuid.New()).SetBootNonceHash(sum[:]).
			SetBootExpireTime(store.Now().Add(s.tokens.TTL())).
			Exec(ctx)
	})
	if err != nil {
		return "", fmt.Errorf("start a boot of machine %s: %w", id, err)
	}
	return nonce, nil
}

// mintToken exchanges nonce, once, for an agent token of machine id's
// current boot, set in resp. It returns why it issued none.
func (s *Service) mintToken(ctx context.Context, id uuid.UUID, nonce string, resp *bootv1.GetBootConfigResponse) (string, error) {
	sum := sha256.Sum256([]byte(nonce))
	now := store.Now()
	var reason string
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		// Using the nonce up and reading the boot in one transaction: a
		// boot started meanwhile cannot get this nonce's token.
		n, err := tx.Machine.Update().
			Where(machine.ID(id), machine.BootNonceHash(sum[:]), machine.BootExpireTimeGT(now)).
			ClearBootNonceHash().
			Save(ctx)
		if err != nil {
			return fmt.Errorf("use the boot nonce of machine %s: %w", id, err)
		}
		if n == 0 {
			s.withheld.WithLabelValues(withheldNonce).Inc()
			reason = fmt.Sprintf("the boot nonce is not machine %s's current one, was used already or has expired; boot the machine again", id)
			return nil
		}
		m, err := tx.Machine.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("read machine %s: %w", id, err)
		}
		tok, exp, err := s.tokens.Issue(id, *m.BootID, time.Now(), *m.BootExpireTime)
		if errors.Is(err, pki.ErrBootEnded) {
			s.withheld.WithLabelValues(withheldNonce).Inc()
			reason = fmt.Sprintf("the boot of machine %s has ended; boot the machine again", id)
			return nil
		} else if err != nil {
			return err
		}
		resp.AgentToken, resp.AgentTokenExpireTime = tok, timestamppb.New(exp)
		return nil
	})
	return reason, err
}
