// Package dhcp implements carbide.dhcp.v1.DHCPService: the lease decisions
// of the stateless DHCP daemons. It selects the segment a request belongs
// to, enrols unknown MACs as discovered machines, and leases through ipam.
package dhcp

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/declinedaddress"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
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

// reuseFraction sets when a lease is handed out again as it is stored,
// without a write: while less than 1/reuseFraction of the segment's lease
// time has passed since it was last renewed (Kea calls this the cache
// threshold). A client that reboots, or asks twice, then costs the
// database one read. A client renewing its lease (LeaseRequest.extend)
// always extends it.
const reuseFraction = 4

// maxAttempts bounds how often one call starts over after losing a race to
// a concurrent call (another replica enrolling the same MAC, or taking the
// same address).
const maxAttempts = 8

// Lease enrols the MAC if needed and leases it an address on the segment
// its origin selects.
func (s *Service) Lease(ctx context.Context, req *connect.Request[dhcpv1.LeaseRequest]) (*connect.Response[dhcpv1.LeaseResponse], error) {
	mac := machines.CanonicalMAC(req.Msg.GetMac())
	seg, err := s.selectSegment(ctx, req.Msg.GetOrigin())
	if err != nil {
		return nil, err
	}
	for range maxAttempts {
		resp, err := s.lease(ctx, seg, mac, req.Msg)
		if ipam.IsRace(err) || ent.IsConstraintError(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(resp), nil
	}
	return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("mac %s: gave up after %d attempts that lost races to concurrent requests; retry", mac, maxAttempts))
}

// current is what the store holds for a MAC on a segment: its interface
// and machine, if any, and its lease on the segment, if any.
type current struct {
	machineID  uuid.NullUUID
	nicSegment uuid.NullUUID
	circuitID  sql.NullString
	remoteID   sql.NullString
	hostname   sql.NullString
	leaseID    sql.NullInt64
	address    sql.NullString
	reserved   sql.NullBool
	renewTime  sql.NullTime
	expireTime sql.NullTime
}

// lookup reads what the store holds for mac on segment seg, in one query.
func (s *Service) lookup(ctx context.Context, seg uuid.UUID, mac string) (*current, error) {
	const q = `SELECT n.machine_id, n.segment_id, n.circuit_id, n.remote_id, m.hostname,
			l.id, l.address, l.reserved, l.renew_time, l.expire_time
		FROM (SELECT 1 AS one) AS q
		LEFT JOIN nics AS n ON n.mac = $1
		LEFT JOIN machines AS m ON m.id = n.machine_id
		LEFT JOIN leases AS l ON l.segment_id = $2 AND l.mac = $1`
	var c current
	err := s.store.QueryRow(ctx, q, []any{mac, seg},
		&c.machineID, &c.nicSegment, &c.circuitID, &c.remoteID, &c.hostname,
		&c.leaseID, &c.address, &c.reserved, &c.renewTime, &c.expireTime)
	if err != nil {
		return nil, fmt.Errorf("read interface and lease: %w", err)
	}
	return &c, nil
}

// lease makes one attempt at a Lease call.
func (s *Service) lease(ctx context.Context, seg *ipam.Segment, mac string, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
	cur, err := s.lookup(ctx, seg.ID, mac)
	if err != nil {
		return nil, err
	}
	o := req.GetOrigin()
	if !cur.machineID.Valid {
		if !cur.leaseID.Valid {
			return s.enrolAndLease(ctx, seg, mac, o, req.GetClientHostname(), req.GetRequestedAddress())
		}
		// The MAC holds a lease but belongs to no machine (leased with
		// AddressService): enrol it, then lease as for any known MAC.
		if err := s.enrol(ctx, seg.ID, mac, o, req.GetClientHostname()); err != nil {
			return nil, err
		}
		return s.lease(ctx, seg, mac, req)
	}

	// Only a relayed request says which relay port the NIC is behind; a
	// unicast renewal straight to the daemon says nothing about it.
	circuit, remote := string(o.GetCircuitId()), string(o.GetRemoteId())
	changed := false
	if o.GetRelayAddress() != "" && (cur.circuitID.String != circuit || cur.remoteID.String != remote) {
		if err := s.store.Client.NIC.Update().Where(nic.MAC(mac)).
			SetCircuitID(circuit).SetRemoteID(remote).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
			return nil, fmt.Errorf("record relay agent ids: %w", err)
		}
		changed = true
	}

	// The MAC holds an unexpired lease it may keep, on the segment its
	// interface is on: hand it out again, or extend it in place.
	now := store.Now()
	addr, requested := cur.address.String, req.GetRequestedAddress()
	_, reserved := seg.Reservations[mac]
	if cur.leaseID.Valid && cur.expireTime.Time.After(now) && cur.nicSegment.UUID == seg.ID &&
		seg.MayKeep(mac, addr) && cur.reserved.Bool == reserved && (requested == "" || requested == addr) {
		if !req.GetExtend() && now.Sub(cur.renewTime.Time) < seg.LeaseDuration()/reuseFraction {
			if !changed {
				audit.Unchanged(ctx)
			}
			return s.response(seg, cur.machineID.UUID, cur.hostname.String, addr, cur.expireTime.Time.Sub(now).Truncate(time.Second)), nil
		}
		expire := now.Add(seg.LeaseDuration())
		n, err := s.store.Client.Lease.Update().
			Where(lease.ID(cur.leaseID.Int64), lease.MAC(mac), lease.Address(addr)).
			SetRenewTime(now).SetExpireTime(expire).Save(ctx)
		if err != nil {
			return nil, fmt.Errorf("renew lease: %w", err)
		}
		if n == 1 {
			return s.response(seg, cur.machineID.UUID, cur.hostname.String, addr, expire.Sub(now)), nil
		}
		// Changed under us: take the general path.
	}
	l, err := s.ipam.Allocate(ctx, ipam.Request{Segment: seg.ID, MAC: mac, Requested: requested})
	if err != nil {
		return nil, err
	}
	return s.response(seg, cur.machineID.UUID, cur.hostname.String, l.Address, l.ExpireTime.Sub(l.RenewTime)), nil
}

func (s *Service) response(seg *ipam.Segment, machineID uuid.UUID, hostname, addr string, d time.Duration) *dhcpv1.LeaseResponse {
	return &dhcpv1.LeaseResponse{
		Address:       addr,
		LeaseDuration: durationpb.New(d),
		Hostname:      hostname,
		MachineId:     machineID.String(),
		Options:       options(seg.Segment),
	}
}

// enrolAndLease enrols a MAC the store has never seen and leases it an
// address, in one transaction: a discovered machine with that interface,
// its first state, its lease, and its entry in the change log, built from
// what the transaction wrote (nothing else can see the machine yet).
func (s *Service) enrolAndLease(ctx context.Context, seg *ipam.Segment, mac string, o *dhcpv1.Origin, clientHostname, requested string) (*dhcpv1.LeaseResponse, error) {
	var resp *dhcpv1.LeaseResponse
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, n, err := createMachine(ctx, tx, seg.ID, mac, o, clientHostname)
		if err != nil {
			return err
		}
		l, err := s.ipam.LeaseNew(ctx, tx, seg, mac, requested)
		if err != nil {
			return err
		}
		m.Edges.Nics = []*ent.NIC{n}
		pm, err := machines.ToProto(m, map[machines.AddressKey]string{{Segment: seg.ID, MAC: mac}: l.Address})
		if err != nil {
			return err
		}
		if err := s.store.RecordChange(ctx, tx, store.KindMachine, store.Created, m.ID.String(), pm); err != nil {
			return err
		}
		resp = s.response(seg, m.ID, m.Hostname, l.Address, l.ExpireTime.Sub(l.RenewTime))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
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

// enrol makes a discovered machine of a MAC that belongs to none. When
// another call enrolled the MAC first, it returns that call's constraint
// error, and Lease starts over.
func (s *Service) enrol(ctx context.Context, segID uuid.UUID, mac string, o *dhcpv1.Origin, clientHostname string) error {
	return s.store.InTx(ctx, func(tx *ent.Tx) error {
		m, _, err := createMachine(ctx, tx, segID, mac, o, clientHostname)
		if err != nil {
			return err
		}
		return machines.RecordChange(ctx, s.store, tx, m.ID, store.Created)
	})
}

// createMachine writes, in tx, a discovered machine with mac as its one
// interface, on the segment and behind the relay port o names, and its
// first state. Creating the interface fails with a constraint error when
// another call enrolled the MAC first.
func createMachine(ctx context.Context, tx *ent.Tx, segID uuid.UUID, mac string, o *dhcpv1.Origin, clientHostname string) (*ent.Machine, *ent.NIC, error) {
	now := store.Now()
	m, err := tx.Machine.Create().
		SetHostname(hostnameOf(clientHostname)).SetLabels(map[string]string{}).
		SetCreateTime(now).SetUpdateTime(now).SetStateTime(now).
		Save(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("create machine: %w", err)
	}
	n, err := tx.NIC.Create().SetMachineID(m.ID).SetMAC(mac).SetSegmentID(segID).
		SetCircuitID(string(o.GetCircuitId())).SetRemoteID(string(o.GetRemoteId())).
		Save(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := lifecycle.RecordCreation(ctx, tx, m, "enrolled by DHCP", principal.From(ctx)); err != nil {
		return nil, nil, err
	}
	return m, n, nil
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
