// Package dhcp implements carbide.dhcp.v1.DHCPService: the lease decisions
// of the stateless DHCP daemons. It selects the segment a request belongs
// to, enrols unknown MACs as discovered machines, and leases through ipam.
package dhcp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/declinedaddress"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/segment"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Service serves DHCPService.
type Service struct {
	store *store.Store
	ipam  *ipam.Service
}

var _ dhcpv1connect.DHCPServiceHandler = (*Service)(nil)

// NewService returns a DHCPService over st that leases through addresses.
func NewService(st *store.Store, addresses *ipam.Service) *Service {
	return &Service{store: st, ipam: addresses}
}

// Lease enrols the MAC if needed and leases it an address on the segment
// its origin selects.
func (s *Service) Lease(ctx context.Context, req *connect.Request[dhcpv1.LeaseRequest]) (*connect.Response[dhcpv1.LeaseResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	seg, err := s.selectSegment(ctx, req.Msg.GetOrigin())
	if err != nil {
		return nil, err
	}
	m, err := s.enrol(ctx, mac, seg.ID, req.Msg.GetOrigin(), req.Msg.GetClientHostname())
	if err != nil {
		return nil, err
	}
	l, err := s.ipam.Allocate(ctx, ipam.Request{Segment: seg.ID, MAC: mac, Requested: req.Msg.GetRequestedAddress()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.LeaseResponse{
		Address:       l.Address,
		LeaseDuration: durationpb.New(l.ExpireTime.Sub(l.RenewTime)),
		Hostname:      m.Hostname,
		MachineId:     m.ID.String(),
		Options:       options(seg),
	}), nil
}

// Inform returns the options of the segment the origin selects.
func (s *Service) Inform(ctx context.Context, req *connect.Request[dhcpv1.InformRequest]) (*connect.Response[dhcpv1.InformResponse], error) {
	seg, err := s.selectSegment(ctx, req.Msg.GetOrigin())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.InformResponse{Options: options(seg)}), nil
}

// Release ends the MAC's lease on the address, wherever it is.
func (s *Service) Release(ctx context.Context, req *connect.Request[dhcpv1.ReleaseRequest]) (*connect.Response[dhcpv1.ReleaseResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	l, err := s.store.Client.Lease.Query().Where(lease.MAC(mac), lease.Address(req.Msg.GetAddress())).First(ctx)
	switch {
	case ent.IsNotFound(err):
		return connect.NewResponse(&dhcpv1.ReleaseResponse{}), nil // nothing to release
	case err != nil:
		return nil, fmt.Errorf("read lease: %w", err)
	}
	if err := s.ipam.Release(ctx, l.SegmentID, mac); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.ReleaseResponse{}), nil
}

// Decline holds the address back from everyone for one lease time and
// drops the MAC's lease on it, so its next request gets another address.
func (s *Service) Decline(ctx context.Context, req *connect.Request[dhcpv1.DeclineRequest]) (*connect.Response[dhcpv1.DeclineResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	addr := req.Msg.GetAddress()
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		l, err := tx.Lease.Query().Where(lease.MAC(mac), lease.Address(addr)).WithSegment().First(ctx)
		switch {
		case ent.IsNotFound(err):
			return nil // not this MAC's address: nothing to believe
		case err != nil:
			return fmt.Errorf("read lease: %w", err)
		}
		until := store.Now().Add(time.Duration(l.Edges.Segment.LeaseSeconds) * time.Second)
		if err := tx.DeclinedAddress.Create().
			SetSegmentID(l.SegmentID).SetAddress(addr).SetDeclinedBy(mac).SetUntil(until).
			OnConflictColumns(declinedaddress.FieldSegmentID, declinedaddress.FieldAddress).
			UpdateNewValues().
			Exec(ctx); err != nil {
			return fmt.Errorf("record declined address: %w", err)
		}
		if err := tx.Lease.DeleteOne(l).Exec(ctx); err != nil {
			return fmt.Errorf("drop declined lease: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.DeclineResponse{}), nil
}

// selectSegment finds the segment of a request: the one that lists the
// link-selection or relay address among its relay addresses, else the one
// whose prefix holds it; for a request on the daemon's own link, the one
// whose prefix holds the daemon's address.
func (s *Service) selectSegment(ctx context.Context, o *dhcpv1.Origin) (*ent.Segment, error) {
	key, field := o.GetLocalAddress(), "origin.local_address"
	switch {
	case o.GetLinkSelection() != "":
		key, field = o.GetLinkSelection(), "origin.link_selection"
	case o.GetRelayAddress() != "":
		key, field = o.GetRelayAddress(), "origin.relay_address"
	}
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %q is not an IPv4 address", field, key))
	}
	segs, err := s.store.Client.Segment.Query().Order(ent.Asc(segment.FieldName)).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read segments: %w", err)
	}
	if field != "origin.local_address" {
		for _, seg := range segs {
			if slices.Contains(seg.RelayAddresses, addr.String()) {
				return seg, nil
			}
		}
	}
	for _, seg := range segs {
		if p, err := netip.ParsePrefix(seg.Prefix); err == nil && p.Contains(addr) {
			return seg, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound,
		fmt.Errorf("%s: no segment has %s as a relay address or inside its prefix; create one or add the relay address", field, addr))
}

// enrol returns the machine that owns mac, creating a discovered machine
// with that interface if there is none, and records the relay agent's ids
// on the interface.
func (s *Service) enrol(ctx context.Context, mac string, segID uuid.UUID, o *dhcpv1.Origin, clientHostname string) (*ent.Machine, error) {
	circuit, remote := string(o.GetCircuitId()), string(o.GetRemoteId())
	n, err := s.store.Client.NIC.Query().Where(nic.MAC(mac)).WithMachine().Only(ctx)
	switch {
	case err == nil:
		// Only a relayed request says which relay port the NIC is behind;
		// a unicast renewal straight to the daemon says nothing about it.
		if o.GetRelayAddress() != "" && (n.CircuitID != circuit || n.RemoteID != remote) {
			if err := n.Update().SetCircuitID(circuit).SetRemoteID(remote).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
				return nil, fmt.Errorf("record relay agent ids: %w", err)
			}
		}
		return n.Edges.Machine, nil
	case !ent.IsNotFound(err):
		return nil, fmt.Errorf("read interface: %w", err)
	}
	var m *ent.Machine
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		now := store.Now()
		m, err = tx.Machine.Create().
			SetHostname(hostnameOf(clientHostname)).SetLabels(map[string]string{}).
			SetCreateTime(now).SetUpdateTime(now).SetStateTime(now).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("create machine: %w", err)
		}
		if err := tx.NIC.Create().SetMachineID(m.ID).SetMAC(mac).SetSegmentID(segID).
			SetCircuitID(circuit).SetRemoteID(remote).Exec(ctx); err != nil {
			return err
		}
		if err := lifecycle.RecordCreation(ctx, tx, m, "enrolled by DHCP", principal.From(ctx)); err != nil {
			return err
		}
		return machines.RecordChange(ctx, s.store, tx, m.ID, store.Created)
	})
	if ent.IsConstraintError(err) {
		// Another replica enrolled the MAC first.
		n, err := s.store.Client.NIC.Query().Where(nic.MAC(mac)).WithMachine().Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("read interface: %w", err)
		}
		return n.Edges.Machine, nil
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// hostnameOf keeps a client-sent host name only if it is a valid label.
func hostnameOf(h string) string {
	if len(h) == 0 || len(h) > 63 {
		return ""
	}
	for i, c := range h {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(h)-1
		if !ok {
			return ""
		}
	}
	return h
}

func options(seg *ent.Segment) *dhcpv1.NetworkOptions {
	bits := uint32(0)
	if p, err := netip.ParsePrefix(seg.Prefix); err == nil {
		bits = uint32(p.Bits())
	}
	return &dhcpv1.NetworkOptions{
		SegmentId:    seg.ID.String(),
		PrefixLength: bits,
		Gateway:      seg.Gateway,
		DnsServers:   seg.DNSServers,
		Domain:       seg.Domain,
		Mtu:          uint32(seg.Mtu),
		NtpServers:   seg.NtpServers,
	}
}
