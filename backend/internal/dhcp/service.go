// Package dhcp implements carbide.dhcp.v1.DHCPService: the lease decisions
// of the stateless DHCP daemons. It selects the segment a request belongs
// to, enrols unknown MACs as discovered machines, and leases through ipam.
package dhcp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/interceptor"
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
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Service serves DHCPService.
type Service struct {
	store      *store.Store
	ipam       *ipam.Service
	logger     *slog.Logger
	enrolments *enrolLimiter
}

var _ dhcpv1connect.DHCPServiceHandler = (*Service)(nil)

// NewService returns a DHCPService over st that leases through addresses
// and enrols new MACs no faster than limit allows; logger gets the
// internal errors of single requests of a LeaseBatch, reg the metric of
// refused enrolments.
func NewService(st *store.Store, addresses *ipam.Service, logger *slog.Logger, limit EnrolLimit, reg prometheus.Registerer) (*Service, error) {
	enrolments, err := newEnrolLimiter(limit, reg)
	if err != nil {
		return nil, err
	}
	return &Service{store: st, ipam: addresses, logger: logger, enrolments: enrolments}, nil
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
	resp, wrote, err := s.leaseRetrying(ctx, seg, mac, req.Msg, nil)
	if err != nil {
		return nil, err
	}
	if !wrote {
		audit.Unchanged(ctx)
	}
	return connect.NewResponse(resp), nil
}

// leaseRetrying decides a lease, starting over with what the store holds
// when an attempt loses a race to a concurrent call. cur, if not nil, is
// what a batch read for the MAC, for the first attempt. wrote says whether
// anything was written.
func (s *Service) leaseRetrying(ctx context.Context, seg *ipam.Segment, mac string, req *dhcpv1.LeaseRequest, cur *current) (*dhcpv1.LeaseResponse, bool, error) {
	for range maxAttempts {
		if cur == nil {
			var err error
			if cur, err = s.lookup(ctx, seg.ID, mac); err != nil {
				return nil, false, err
			}
		}
		resp, wrote, err := s.lease(ctx, seg, mac, req, cur)
		cur = nil
		if ipam.IsRace(err) || ent.IsConstraintError(err) {
			continue
		}
		return resp, wrote, err
	}
	return nil, false, connect.NewError(connect.CodeAborted, fmt.Errorf("mac %s: gave up after %d attempts that lost races to concurrent requests; retry", mac, maxAttempts))
}

// LeaseBatch decides the lease of each request as Lease would. It reads
// what the store holds for all the MACs of a segment in one query, hands
// out the leases that need no write at once, and enrols and leases the
// MACs it has never seen in one transaction. Every other request (and a
// MAC's second request in the batch) is decided on its own, after them.
func (s *Service) LeaseBatch(ctx context.Context, req *connect.Request[dhcpv1.LeaseBatchRequest]) (*connect.Response[dhcpv1.LeaseBatchResponse], error) {
	reqs := req.Msg.GetRequests()
	results := make([]*dhcpv1.LeaseResult, len(reqs))
	var written []string // machines whose leases were written
	failed := false
	done := func(i int, resp *dhcpv1.LeaseResponse, wrote bool, err error) {
		if err != nil {
			// A refused enrolment changed nothing and is counted in a
			// metric: on its own it leaves no audit record, so that a
			// flood of new MACs costs no write.
			failed = failed || !errors.Is(err, errEnrolRefused)
			cerr := interceptor.Translate(ctx, s.logger, req.Spec().Procedure, err)
			results[i] = &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Error{Error: &dhcpv1.LeaseError{
				Code: cerr.Code().String(), Message: cerr.Message()}}}
			return
		}
		results[i] = &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Lease{Lease: resp}}
		if wrote && !slices.Contains(written, resp.GetMachineId()) {
			written = append(written, resp.GetMachineId())
		}
	}
	decide := func(i int, seg *ipam.Segment, mac string, cur *current) {
		resp, wrote, err := s.leaseRetrying(ctx, seg, mac, reqs[i], cur)
		done(i, resp, wrote, err)
	}

	// Group the requests by segment; a MAC asking twice waits.
	type pending struct {
		i   int
		mac string
		seg *ipam.Segment
	}
	var segs []*ipam.Segment
	bySegment := make(map[uuid.UUID][]pending)
	var again []pending
	seen := make(map[string]bool, len(reqs))
	for i, r := range reqs {
		seg, err := s.selectSegment(ctx, r.GetOrigin())
		if err != nil {
			done(i, nil, false, err)
			continue
		}
		p := pending{i: i, mac: machines.CanonicalMAC(r.GetMac()), seg: seg}
		if seen[p.mac] {
			again = append(again, p)
			continue
		}
		seen[p.mac] = true
		if bySegment[seg.ID] == nil {
			segs = append(segs, seg)
		}
		bySegment[seg.ID] = append(bySegment[seg.ID], p)
	}

	for _, seg := range segs {
		ps := bySegment[seg.ID]
		macs := make([]string, len(ps))
		for k, p := range ps {
			macs[k] = p.mac
		}
		curs, err := s.lookupMany(ctx, seg.ID, macs)
		if err != nil {
			for _, p := range ps {
				done(p.i, nil, false, err)
			}
			continue
		}
		var fresh []pending
		var es []enrolment
		for _, p := range ps {
			if cur := curs[p.mac]; cur.machineID.Valid || cur.leaseID.Valid {
				decide(p.i, seg, p.mac, cur)
				continue
			}
			if o := reqs[p.i].GetOrigin(); s.enrolments.take(seg, o, 1) == 0 {
				done(p.i, nil, false, s.enrolments.refusedError(seg, o, p.mac))
				continue
			}
			fresh = append(fresh, p)
			es = append(es, enrolment{mac: p.mac, req: reqs[p.i]})
		}
		if len(es) == 0 {
			continue
		}
		resps, err := s.enrolAndLease(ctx, seg, es)
		if err != nil {
			// Another call enrolled or leased one of them first, or
			// one cannot be leased: each on its own, from fresh data.
			again = append(again, fresh...)
			continue
		}
		for k, p := range fresh {
			done(p.i, resps[k], true, nil)
		}
	}
	for _, p := range again {
		decide(p.i, p.seg, p.mac, nil)
	}

	if len(written) == 0 && !failed {
		audit.Unchanged(ctx)
	} else {
		audit.Resources(ctx, written)
	}
	return connect.NewResponse(&dhcpv1.LeaseBatchResponse{Results: results}), nil
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

// lookupQuery reads, for each MAC of the list q, its interface, machine
// and lease on segment $1. lookup and lookupMany give it the list.
const lookupQuery = `WITH q(mac) AS (VALUES %s)
	SELECT q.mac, n.machine_id, n.segment_id, n.circuit_id, n.remote_id, m.hostname,
		l.id, l.address, l.reserved, l.renew_time, l.expire_time
	FROM q
	LEFT JOIN nics AS n ON n.mac = q.mac
	LEFT JOIN machines AS m ON m.id = n.machine_id
	LEFT JOIN leases AS l ON l.segment_id = $1 AND l.mac = q.mac`

// lookup reads what the store holds for mac on segment seg, in one query.
func (s *Service) lookup(ctx context.Context, seg uuid.UUID, mac string) (*current, error) {
	found, err := s.lookupMany(ctx, seg, []string{mac})
	if err != nil {
		return nil, err
	}
	return found[mac], nil
}

// lookupMany reads what the store holds for each of macs (distinct) on
// segment seg, in one query.
func (s *Service) lookupMany(ctx context.Context, seg uuid.UUID, macs []string) (map[string]*current, error) {
	var list strings.Builder
	args := []any{seg}
	for i, mac := range macs {
		if i > 0 {
			list.WriteString(", ")
		}
		fmt.Fprintf(&list, "($%d)", i+2)
		args = append(args, mac)
	}
	found := make(map[string]*current, len(macs))
	var c current
	var mac string
	err := s.store.Query(ctx, fmt.Sprintf(lookupQuery, list.String()), args, c.dest(&mac), func() error {
		row := c
		found[mac] = &row
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read interfaces and leases: %w", err)
	}
	for _, mac := range macs {
		if found[mac] == nil {
			return nil, fmt.Errorf("read interfaces and leases: no row for %s", mac)
		}
	}
	return found, nil
}

// dest lists where a row of lookupQuery goes; mac gets its first column.
func (c *current) dest(mac *string) []any {
	return []any{mac, &c.machineID, &c.nicSegment, &c.circuitID, &c.remoteID, &c.hostname,
		&c.leaseID, &c.address, &c.reserved, &c.renewTime, &c.expireTime}
}

// lease makes one attempt at a Lease call, given what the store holds for
// the MAC; wrote says whether it wrote anything.
func (s *Service) lease(ctx context.Context, seg *ipam.Segment, mac string, req *dhcpv1.LeaseRequest, cur *current) (*dhcpv1.LeaseResponse, bool, error) {
	o := req.GetOrigin()
	if !cur.machineID.Valid {
		if s.enrolments.take(seg, o, 1) == 0 {
			return nil, false, s.enrolments.refusedError(seg, o, mac)
		}
		if !cur.leaseID.Valid {
			resps, err := s.enrolAndLease(ctx, seg, []enrolment{{mac: mac, req: req}})
			if err != nil {
				return nil, false, err
			}
			return resps[0], true, nil
		}
		// The MAC holds a lease but belongs to no machine (leased with
		// AddressService): enrol it, then lease as for any known MAC.
		if err := s.enrol(ctx, seg.ID, mac, o, req.GetClientHostname()); err != nil {
			return nil, false, err
		}
		cur, err := s.lookup(ctx, seg.ID, mac)
		if err != nil {
			return nil, false, err
		}
		resp, _, err := s.lease(ctx, seg, mac, req, cur)
		return resp, true, err
	}

	// Only a relayed request says which relay port the NIC is behind; a
	// unicast renewal straight to the daemon says nothing about it.
	circuit, remote := string(o.GetCircuitId()), string(o.GetRemoteId())
	changed := false
	if o.GetRelayAddress() != "" && (cur.circuitID.String != circuit || cur.remoteID.String != remote) {
		audit.Resources(ctx, []string{cur.machineID.UUID.String()})
		err := s.store.InTx(ctx, func(tx *ent.Tx) error {
			return tx.NIC.Update().Where(nic.MAC(mac)).
				SetCircuitID(circuit).SetRemoteID(remote).SetUpdateTime(store.Now()).Exec(ctx)
		})
		if err != nil {
			return nil, false, fmt.Errorf("record relay agent ids: %w", err)
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
			return s.response(seg, cur.machineID.UUID, cur.hostname.String, addr, cur.expireTime.Time.Sub(now).Truncate(time.Second)), changed, nil
		}
		expire := now.Add(seg.LeaseDuration())
		// The renewal and its audit record commit together.
		audit.Resources(ctx, []string{cur.machineID.UUID.String()})
		var n int
		err := s.store.InTx(ctx, func(tx *ent.Tx) error {
			var err error
			n, err = tx.Lease.Update().
				Where(lease.ID(cur.leaseID.Int64), lease.MAC(mac), lease.Address(addr)).
				SetRenewTime(now).SetExpireTime(expire).Save(ctx)
			return err
		})
		if err != nil {
			return nil, false, fmt.Errorf("renew lease: %w", err)
		}
		if n == 1 {
			return s.response(seg, cur.machineID.UUID, cur.hostname.String, addr, expire.Sub(now)), true, nil
		}
		// Changed under us: take the general path.
	}
	l, err := s.ipam.Allocate(ctx, ipam.Request{Segment: seg.ID, MAC: mac, Requested: requested})
	if err != nil {
		return nil, false, err
	}
	return s.response(seg, cur.machineID.UUID, cur.hostname.String, l.Address, l.ExpireTime.Sub(l.RenewTime)), true, nil
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

// enrolment is a MAC the store has never seen, and its request.
type enrolment struct {
	mac string
	req *dhcpv1.LeaseRequest
}

// enrolAndLease enrols MACs the store has never seen and leases each an
// address, in one transaction: a discovered machine with that interface,
// its first state, its lease, and its entry in the change log, built from
// what the transaction wrote (nothing else can see the machine yet). Each
// of those is one statement for all the MACs.
func (s *Service) enrolAndLease(ctx context.Context, seg *ipam.Segment, es []enrolment) ([]*dhcpv1.LeaseResponse, error) {
	resps := make([]*dhcpv1.LeaseResponse, len(es))
	err := s.store.InTx(ctx, func(tx *ent.Tx) error {
		news := make([]newMachine, len(es))
		reqs := make([]ipam.NewLease, len(es))
		for i, e := range es {
			news[i] = newMachine{mac: e.mac, origin: e.req.GetOrigin(), clientHostname: e.req.GetClientHostname()}
			reqs[i] = ipam.NewLease{MAC: e.mac, Requested: e.req.GetRequestedAddress()}
		}
		ms, ns, err := createMachines(ctx, tx, seg.ID, news)
		if err != nil {
			return err
		}
		leases, err := s.ipam.LeaseNewMany(ctx, tx, seg, reqs)
		if err != nil {
			return err
		}
		changed := make([]store.Changed, len(es))
		for i, m := range ms {
			m.Edges.Nics = []*ent.NIC{ns[i]}
			l := leases[i]
			pm, err := machines.ToProto(m, map[machines.AddressKey]string{{Segment: seg.ID, MAC: l.MAC}: l.Address})
			if err != nil {
				return err
			}
			changed[i] = store.Changed{ID: m.ID.String(), Resource: pm}
			resps[i] = s.response(seg, m.ID, m.Hostname, l.Address, l.ExpireTime.Sub(l.RenewTime))
		}
		return s.store.RecordChanges(ctx, tx, store.KindMachine, store.Created, changed)
	})
	if err != nil {
		return nil, err
	}
	return resps, nil
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
		ms, _, err := createMachines(ctx, tx, segID, []newMachine{{mac: mac, origin: o, clientHostname: clientHostname}})
		if err != nil {
			return err
		}
		return machines.RecordChange(ctx, s.store, tx, ms[0].ID, store.Created)
	})
}

// newMachine is a MAC to enrol: where its request came from, and the host
// name its client sent.
type newMachine struct {
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
		mcs[i] = tx.Machine.Create().
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
