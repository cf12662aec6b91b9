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
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/declinedaddress"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
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
	offers     *prometheus.CounterVec
	holds      *holds
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
	offers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carbide_dhcp_held_offers_total",
		Help: "Addresses the DHCP lease path offered without a write (LeaseRequest.offer), held in this process for their MAC until the DHCPREQUEST " +
			"that accepts the offer leases them, by segment name. An offer that has to write (the pool nearly full) counts in carbide_dhcp_lease_writes_total instead.",
	}, []string{"segment"})
	for _, c := range []prometheus.Collector{writes, offers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register lease metrics: %w", err)
		}
	}
	return &Service{store: st, ipam: addresses, logger: logger, enrolments: enrolments, admission: admission,
		writes: writes, offers: offers, holds: newHolds()}, nil
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
		case ipam.Held(l.ExpireTime):
			// Held for an instance, whose system uses it statically:
			// the database's promise stands; a conflict is an
			// operator's to find.
			return nil
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
		if !l.ExpireTime.After(store.Now()) {
			return nil // an expired lease: the machine showed no address
		}
		// The machine no longer shows the address: watchers learn so.
		owner, err := tx.NIC.Query().Where(nic.MAC(mac)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read interface: %w", err)
		}
		return machines.RecordChange(ctx, s.store, tx, owner.MachineID, store.Updated)
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

// enrolStatements returns the statements that write a discovered machine
// for each of news, with that MAC as its one interface, on segment segID
// and behind the relay port its origin names, and its first state: one
// insert for each table, for store.Chain. It returns the machines and
// interfaces as the statements write them. Inserting the interfaces fails
// with a unique violation when another call enrolled one of the MACs
// first.
func (s *Service) enrolStatements(ctx context.Context, segID uuid.UUID, news []newMachine) ([]*ent.Machine, []*ent.NIC, []store.Stmt) {
	now := store.Now()
	ms := make([]*ent.Machine, len(news))
	ns := make([]*ent.NIC, len(news))
	var machineRows, nicRows, stateRows strings.Builder
	machineArgs := []any{now, string(machine.StateDiscovered)}
	nicArgs := []any{now, segID}
	stateArgs := []any{string(machine.StateDiscovered), EnrolReason, principal.From(ctx), now}
	for i, n := range news {
		m := &ent.Machine{ID: n.id, Hostname: hostnameOf(n.clientHostname), State: machine.StateDiscovered,
			Labels: map[string]string{}, CreateTime: now, UpdateTime: now, StateTime: now}
		o := n.origin
		nic := &ent.NIC{ID: uuid.New(), MAC: n.mac, MachineID: m.ID, SegmentID: &segID,
			CircuitID: string(o.GetCircuitId()), RemoteID: string(o.GetRemoteId()), CreateTime: now, UpdateTime: now}
		ms[i], ns[i] = m, nic
		if i > 0 {
			machineRows.WriteString(", ")
			nicRows.WriteString(", ")
			stateRows.WriteString(", ")
		}
		k := len(machineArgs)
		fmt.Fprintf(&machineRows, "($%d, $%d, $1, $1, $1, $2, '{}', false)", k+1, k+2)
		machineArgs = append(machineArgs, m.ID, m.Hostname)
		k = len(nicArgs)
		fmt.Fprintf(&nicRows, "($%d, $%d, $%d, $2, $%d, $%d, $1, $1)", k+1, k+2, k+3, k+4, k+5)
		nicArgs = append(nicArgs, nic.ID, m.ID, nic.MAC, nic.CircuitID, nic.RemoteID)
		k = len(stateArgs)
		fmt.Fprintf(&stateRows, "($%d, $1, $2, $3, $4)", k+1)
		stateArgs = append(stateArgs, m.ID)
	}
	return ms, ns, []store.Stmt{
		{SQL: `INSERT INTO machines (id, hostname, create_time, update_time, state_time, state, labels, maintenance)
			VALUES ` + machineRows.String(), Args: machineArgs},
		{SQL: `INSERT INTO nics (id, machine_id, mac, segment_id, circuit_id, remote_id, create_time, update_time)
			VALUES ` + nicRows.String(), Args: nicArgs},
		{SQL: `INSERT INTO transitions (machine_id, to_state, reason, actor, time)
			VALUES ` + stateRows.String(), Args: stateArgs},
	}
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
