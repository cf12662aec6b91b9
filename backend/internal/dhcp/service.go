// Package dhcp implements carbide.dhcp.v1.DHCPService: the lease decisions
// of the stateless DHCP daemons. It selects the segment a request belongs
// to, enrols unknown MACs as discovered machines, and leases through ipam.
package dhcp

import (
	"context"
	"fmt"
	"log/slog"
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
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Service serves DHCPService.
type Service struct {
	store      *store.Store
	ipam       *ipam.Service
	logger     *slog.Logger
	enrolments *enrolLimiter
	admission  *admission
	writes     *prometheus.CounterVec
}

var _ dhcpv1connect.DHCPServiceHandler = (*Service)(nil)

// NewService returns a DHCPService over st that leases through addresses,
// enrols new MACs no faster than limit allows and lets at most
// maxLeaseCalls Lease and LeaseBatch calls decide at once (0 means
// DefaultMaxLeaseCalls); logger gets the internal errors of single
// requests of a LeaseBatch, reg the metrics of refused enrolments, of the
// lease calls' admission and of the lease path's writes.
func NewService(st *store.Store, addresses *ipam.Service, logger *slog.Logger, limit EnrolLimit, maxLeaseCalls int, reg prometheus.Registerer) (*Service, error) {
	enrolments, err := newEnrolLimiter(limit, reg)
	if err != nil {
		return nil, err
	}
	admission, err := newAdmission(maxLeaseCalls, reg)
	if err != nil {
		return nil, err
	}
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carbide_dhcp_lease_writes_total",
		Help: "What the DHCP lease path wrote, by segment name, caller (principal) and kind: enrol (a discovered machine created), " +
			"lease (an address leased or moved), renew (a lease's expiry extended), relay_ids (an interface's relay circuit and remote ids). " +
			"Only enrol and relay_ids leave audit records.",
	}, []string{"segment", "principal", "kind"})
	if err := reg.Register(writes); err != nil {
		return nil, fmt.Errorf("register lease metrics: %w", err)
	}
	return &Service{store: st, ipam: addresses, logger: logger, enrolments: enrolments, admission: admission, writes: writes}, nil
}

// Inform returns the options of the segment the origin selects.
func (s *Service) Inform(ctx context.Context, req *connect.Request[dhcpv1.InformRequest]) (*connect.Response[dhcpv1.InformResponse], error) {
	seg, err := s.selectSegment(ctx, req.Msg.GetOrigin())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.InformResponse{Options: options(seg.Segment)}), nil
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
func (s *Service) selectSegment(ctx context.Context, o *dhcpv1.Origin) (*ipam.Segment, error) {
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
	segs, err := s.ipam.Segments(ctx)
	if err != nil {
		return nil, err
	}
	if field != "origin.local_address" {
		for _, seg := range segs.ByName {
			if slices.Contains(seg.RelayAddresses, addr.String()) {
				return seg, nil
			}
		}
	}
	for _, seg := range segs.ByName {
		if seg.Pool.Prefix.Contains(addr) {
			return seg, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound,
		fmt.Errorf("%s: no segment has %s as a relay address or inside its prefix; create one or add the relay address", field, addr))
}

// newMachine is a MAC to enrol: the id its machine gets, where its
// request came from, and the host name its client sent.
type newMachine struct {
	id             uuid.UUID
	mac            string
	origin         *dhcpv1.Origin
	clientHostname string
}

// createMachines writes, in tx, a discovered machine for each of news with
// that MAC as its one interface, on the segment and behind the relay port
// its origin names, and its first state: one insert for each table.
// Creating the interfaces fails with a constraint error when another call
// enrolled one of the MACs first.
func createMachines(ctx context.Context, tx *ent.Tx, segID uuid.UUID, news []newMachine) ([]*ent.Machine, []*ent.NIC, error) {
	now := store.Now()
	mcs := make([]*ent.MachineCreate, len(news))
	for i, n := range news {
		mcs[i] = tx.Machine.Create().SetID(n.id).
			SetHostname(hostnameOf(n.clientHostname)).SetLabels(map[string]string{}).
			SetCreateTime(now).SetUpdateTime(now).SetStateTime(now)
	}
	ms, err := tx.Machine.CreateBulk(mcs...).Save(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("create machines: %w", err)
	}
	ncs := make([]*ent.NICCreate, len(news))
	for i, n := range news {
		ncs[i] = tx.NIC.Create().SetMachineID(ms[i].ID).SetMAC(n.mac).SetSegmentID(segID).
			SetCircuitID(string(n.origin.GetCircuitId())).SetRemoteID(string(n.origin.GetRemoteId()))
	}
	ns, err := tx.NIC.CreateBulk(ncs...).Save(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := lifecycle.RecordCreation(ctx, tx, EnrolReason, principal.From(ctx), ms...); err != nil {
		return nil, nil, err
	}
	return ms, ns, nil
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
