// Package boot implements carbide.boot.v1.BootService: what each machine
// network-boots, asked by the stateless PXE daemons, and the agent tokens
// with which a machine's discovery agent then speaks for it.
package boot

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves BootService.
type Service struct {
	store  *store.Store
	tokens *pki.AgentTokens
}

var _ bootv1connect.BootServiceHandler = (*Service)(nil)

// NewService returns a BootService over st. tokens signs agent tokens; nil
// means the API issues none, and discovery agents cannot report.
func NewService(st *store.Store, tokens *pki.AgentTokens) *Service {
	return &Service{store: st, tokens: tokens}
}

// GetBootConfig says what the machine with a MAC boots: Ready and
// Assigned machines (and machines an operator holds in maintenance) boot
// from their disk, every other one the discovery image, with an agent
// token if the request came from the MAC's leased address.
func (s *Service) GetBootConfig(ctx context.Context, req *connect.Request[bootv1.GetBootConfigRequest]) (*connect.Response[bootv1.GetBootConfigResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	m, err := s.store.Client.Machine.Query().Where(machine.HasNicsWith(nic.MAC(mac))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no machine has the interface %s; it is enrolled when it asks carbide-dhcp for an address", mac))
	} else if err != nil {
		return nil, fmt.Errorf("find the machine of %s: %w", mac, err)
	}
	resp := &bootv1.GetBootConfigResponse{
		MachineId: m.ID.String(),
		Hostname:  m.Hostname,
		State:     machines.StateToProto(m.State),
		Action:    action(m),
	}
	if resp.Action != bootv1.BootAction_BOOT_ACTION_DISCOVERY {
		return connect.NewResponse(resp), nil
	}
	reason, err := s.withholdToken(ctx, mac, req.Msg.GetClientAddress())
	if err != nil {
		return nil, err
	}
	if reason != "" {
		resp.TokenWithheldReason = reason
		return connect.NewResponse(resp), nil
	}
	tok, exp, err := s.tokens.Issue(m.ID, time.Now())
	if err != nil {
		return nil, err
	}
	resp.AgentToken, resp.AgentTokenExpireTime = tok, timestamppb.New(exp)
	return connect.NewResponse(resp), nil
}

// action is what machine m boots.
func action(m *ent.Machine) bootv1.BootAction {
	if m.Maintenance {
		return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK
	}
	switch m.State {
	case machine.StateReady, machine.StateAssigned, machine.StateMaintenance:
		return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK
	}
	return bootv1.BootAction_BOOT_ACTION_DISCOVERY
}

// withholdToken says why no agent token may go to addr for mac, or "" if
// one may: addr must hold mac's unexpired lease, so that only the machine
// itself, and not any host that can name its MAC, gets a token for it.
func (s *Service) withholdToken(ctx context.Context, mac, addr string) (string, error) {
	if s.tokens == nil {
		return "the API issues no agent tokens: start carbide-api with --agent-token-key", nil
	}
	if addr == "" {
		return "the request named no client address", nil
	}
	n, err := s.store.Client.Lease.Query().
		Where(lease.MAC(mac), lease.Address(addr), lease.ExpireTimeGT(store.Now())).
		Count(ctx)
	if err != nil {
		return "", fmt.Errorf("read the leases of %s: %w", mac, err)
	}
	if n == 0 {
		return fmt.Sprintf("%s does not hold a lease of %s; boot it through carbide-dhcp", addr, mac), nil
	}
	return "", nil
}
