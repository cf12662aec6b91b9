package dhcp

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/interceptor"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/nic"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The lease decision. Lease and LeaseBatch run the same path; a Lease is a
// batch of one. For each request, as RFC 2131 section 4.3.1 has a server
// choose an address:
//
//  1. select the segment its origin names (selectSegment);
//  2. read what the store holds for its MAC there: machine, interface and
//     lease (read, one query for all the MACs of a segment);
//  3. decide (choose): a MAC that belongs to no machine is enrolled; an
//     unexpired lease the MAC may keep is handed out again as it is
//     stored, or renewed; any other MAC is given a free address. A
//     request with offer (a DHCPDISCOVER) that would enrol, renew or
//     lease is offered an address instead;
//  4. write, all the requests of a step together: the enrolments (with
//     their first leases) and relay-id changes in one transaction with the
//     call's audit record (writeMachines), the renewals in one statement
//     (renew), the first leases of known machines in one transaction
//     (leaseFirst), the other leases one by one through ipam (allocate);
//     the offers write nothing (offer): each gets the address the write
//     would give it (the one its lease row holds, else its reservation,
//     the address it asks for if free, or a free one of its pool walk),
//     read with one query for all the offers of a segment and held in
//     this process's memory for the MAC for a few seconds (holds).
//
// A request whose write lost a race to a concurrent call (another replica
// enrolling the same MAC, or taking the same address) goes round again
// from step 2 with fresh reads, as does one whose machine the round
// enrolled or whose relay ids it recorded, and an offer that found no
// free address among its first candidates (it is then written, as without
// offer); a MAC's second request in a batch waits for its first.
// PostgreSQL's unique indexes decide every race.
//
// An offer is tentative: the DHCPREQUEST that accepts it comes as a
// request without offer for the offered address, which enrols the MAC
// and leases it that address if it is still free, or another one if a
// concurrent call (another replica's) took it meanwhile, whereupon the
// daemon refuses the client (DHCPNAK) and it starts again. Within one
// process the holds keep two MACs from being offered one address, and
// the writes of other MACs from taking a held address while others are
// free.

// reuseFraction sets when a lease is handed out again as it is stored,
// without a write: while less than 1/reuseFraction of the segment's lease
// time has passed since it was last renewed (Kea calls this the cache
// threshold). A client that reboots, or asks twice, then costs the
// database one read. A client renewing its lease (LeaseRequest.extend)
// always extends it.
const reuseFraction = 4

// maxAttempts bounds how often one request goes round again.
const maxAttempts = 8

// Lease enrols the MAC if needed and leases it an address on the segment
// its origin selects; with offer, it offers one without a write.
func (s *Service) Lease(ctx context.Context, req *connect.Request[dhcpv1.LeaseRequest]) (*connect.Response[dhcpv1.LeaseResponse], error) {
	done, err := s.admission.admit(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	b := s.decide(ctx, []*dhcpv1.LeaseRequest{req.Msg})
	if err := b.out[0].err; err != nil {
		audit.Resources(ctx, b.audited)
		return nil, err
	}
	b.audit(ctx, false)
	return connect.NewResponse(b.out[0].resp), nil
}

// LeaseBatch decides the lease of each request as Lease would, together:
// each step of the path reads and writes for all of them at once. A
// request that fails fails alone.
func (s *Service) LeaseBatch(ctx context.Context, req *connect.Request[dhcpv1.LeaseBatchRequest]) (*connect.Response[dhcpv1.LeaseBatchResponse], error) {
	done, err := s.admission.admit(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	b := s.decide(ctx, req.Msg.GetRequests())
	results := make([]*dhcpv1.LeaseResult, len(b.out))
	failed := false
	for i, o := range b.out {
		if o.err == nil {
			results[i] = &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Lease{Lease: o.resp}}
			continue
		}
		// A refused enrolment changed nothing and is counted in a
		// metric: on its own it leaves no audit record, so that a flood
		// of new MACs costs no write.
		failed = failed || !errors.Is(o.err, errEnrolRefused)
		cerr := interceptor.Translate(ctx, s.logger, req.Spec().Procedure, o.err)
		results[i] = &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Error{Error: &dhcpv1.LeaseError{
			Code: cerr.Code().String(), Message: cerr.Message()}}}
	}
	b.audit(ctx, failed)
	return connect.NewResponse(&dhcpv1.LeaseBatchResponse{Results: results}), nil
}

// batch is what the path decided for the requests of a call.
type batch struct {
	out []outcome
	// audited are the machines the call enrolled or whose relay ids it
	// recorded: the changes its audit record names.
	audited []string
}

type outcome struct {
	resp *dhcpv1.LeaseResponse
	err  error
}

// audit tells the audit log what the call changed. A call that only
// leased, renewed or handed out leases, and had no request fail for
// another reason than the enrolment limit, leaves no record:
// carbide_dhcp_lease_writes_total counts its writes.
func (b *batch) audit(ctx context.Context, failed bool) {
	if len(b.audited) == 0 && !failed {
		audit.Unchanged(ctx)
		return
	}
	audit.Resources(ctx, b.audited)
}

// request is one request on its way down the path.
type request struct {
	i        int // in the batch
	msg      *dhcpv1.LeaseRequest
	mac      string // canonical
	seg      *ipam.Segment
	cur      *current // what step 2 read
	attempts int
	admitted bool      // the enrolment limit let its MAC be enrolled
	noOffer  bool      // an offer that found no free candidate: written instead
	alone    bool      // is written in a transaction of its own: its batch's failed
	newID    uuid.UUID // of the machine it enrols, chosen before the transaction
}

// decide runs the lease path for each of msgs.
func (s *Service) decide(ctx context.Context, msgs []*dhcpv1.LeaseRequest) *batch {
	b := &batch{out: make([]outcome, len(msgs))}
	var todo []*request
	for i, m := range msgs {
		seg, err := s.selectSegment(ctx, m.GetOrigin())
		if err != nil {
			b.out[i].err = err
			continue
		}
		todo = append(todo, &request{i: i, msg: m, mac: machines.CanonicalMAC(m.GetMac()), seg: seg})
	}
	// A MAC leased an address holds no offer any more.
	defer func(all []*request) {
		for _, r := range all {
			if resp := b.out[r.i].resp; resp != nil && !resp.GetTentative() {
				s.holds.drop(r.seg.ID, r.mac)
			}
		}
	}(todo)
	for len(todo) > 0 {
		var now, later []*request
		seen := make(map[string]bool, len(todo))
		for _, r := range todo {
			if seen[r.mac] {
				later = append(later, r)
				continue
			}
			seen[r.mac] = true
			now = append(now, r)
		}
		for _, r := range s.round(ctx, b, now) {
			if r.attempts++; r.attempts >= maxAttempts {
				b.out[r.i].err = connect.NewError(connect.CodeAborted, fmt.Errorf(
					"mac %s: gave up after %d attempts that lost races to concurrent requests; retry", r.mac, maxAttempts))
				continue
			}
			later = append(later, r)
		}
		slices.SortFunc(later, func(a, b *request) int { return cmp.Compare(a.i, b.i) })
		todo = later
	}
	return b
}

// round takes requests for distinct MACs from step 2 to the end of the
// path, and returns those that go round again.
func (s *Service) round(ctx context.Context, b *batch, rs []*request) []*request {
	now := store.Now()
	var w writes
	for _, group := range bySegment(rs) {
		seg := group[0].seg
		macs := make([]string, len(group))
		for k, r := range group {
			macs[k] = r.mac
		}
		curs, err := s.read(ctx, seg.ID, macs)
		if err != nil {
			for _, r := range group {
				b.out[r.i].err = err
			}
			continue
		}
		for _, r := range group {
			r.cur = curs[r.mac]
			s.choose(b, &w, r, now)
		}
	}
	var again []*request
	again = append(again, s.writeMachines(ctx, b, w.machines)...)
	again = append(again, s.renew(ctx, b, w.renewals, now)...)
	again = append(again, s.leaseFirst(ctx, b, w.firsts)...)
	again = append(again, s.allocate(ctx, b, w.allocations)...)
	again = append(again, s.offer(ctx, b, w.offers, now)...)
	return again
}

// writes are the requests of a round by the write they need.
type writes struct {
	machines    []*request // enrol, or record relay ids
	renewals    []*request
	firsts      []*request // known machines without a lease on the segment
	allocations []*request
	offers      []*request // offered an address without a write
}

// choose decides, from what the store holds, what a request needs: an
// answer at once, or a write.
func (s *Service) choose(b *batch, w *writes, r *request, now time.Time) {
	cur, o := r.cur, r.msg.GetOrigin()
	// A DHCPDISCOVER that would enrol, renew or lease is offered an address
	// instead, without a write: the DHCPREQUEST accepting it writes.
	offer := r.msg.GetOffer() && !r.noOffer

	// A MAC that belongs to no machine is enrolled first.
	if !cur.machineID.Valid {
		if offer {
			// The REQUEST enrols, within the limit; a relay over it
			// gets no offer either.
			if !s.enrolments.allows(r.seg, o) {
				b.out[r.i].err = s.enrolments.refusedError(r.seg, o, r.mac)
				return
			}
			w.offers = append(w.offers, r)
			return
		}
		if !r.admitted {
			if s.enrolments.take(r.seg, o, 1) == 0 {
				b.out[r.i].err = s.enrolments.refusedError(r.seg, o, r.mac)
				return
			}
			r.admitted = true
		}
		w.machines = append(w.machines, r)
		return
	}

	// Only a relayed request says which relay port the NIC is behind; a
	// unicast renewal straight to the daemon says nothing about it.
	if o.GetRelayAddress() != "" && (cur.circuitID.String != string(o.GetCircuitId()) || cur.remoteID.String != string(o.GetRemoteId())) {
		w.machines = append(w.machines, r)
		return
	}

	// The MAC holds an unexpired lease it may keep, on the segment its
	// interface is on: hand it out again, or extend it in place.
	addr, requested := cur.address.String, r.msg.GetRequestedAddress()
	_, reserved := r.seg.Reservations[r.mac]
	if cur.leaseID.Valid && cur.expireTime.Time.After(now) && cur.nicSegment.UUID == r.seg.ID &&
		r.seg.MayKeep(r.mac, addr) && cur.reserved.Bool == reserved && (requested == "" || requested == addr) {
		if !r.msg.GetExtend() && now.Sub(cur.renewTime.Time) < r.seg.LeaseDuration()/reuseFraction {
			// A lease held for an instance lasts one lease time for
			// the client.
			d := min(cur.expireTime.Time.Sub(now), r.seg.LeaseDuration())
			b.out[r.i].resp = r.response(cur.machineID.UUID, cur.hostname.String, addr, d.Truncate(time.Second))
			return
		}
		if offer {
			w.offers = append(w.offers, r)
			return
		}
		w.renewals = append(w.renewals, r)
		return
	}

	if offer {
		w.offers = append(w.offers, r)
		return
	}
	if !cur.leaseID.Valid && !r.alone {
		w.firsts = append(w.firsts, r)
		return
	}
	w.allocations = append(w.allocations, r)
}

// bySegment groups requests by segment, in the order of their first.
func bySegment(rs []*request) [][]*request {
	var groups [][]*request
	at := make(map[uuid.UUID]int)
	for _, r := range rs {
		k, ok := at[r.seg.ID]
		if !ok {
			k = len(groups)
			at[r.seg.ID] = k
			groups = append(groups, nil)
		}
		groups[k] = append(groups[k], r)
	}
	return groups
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

// readQuery reads, for each MAC of the list $2, its interface, machine
// and lease on segment $1: on PostgreSQL, as one lookup per MAC on the
// unique indexes of nics (mac) and leases (segment_id, mac). The LIMIT 1
// keeps each lateral lookup a lookup: PostgreSQL then cannot flatten it
// into a join it might plan as a scan of the whole table, which is what
// it chose for a plain join while the tables were empty (a new database),
// and kept in the cached plan of the prepared statement as they grew.
const readQuery = `SELECT q.mac, n.machine_id, n.segment_id, n.circuit_id, n.remote_id, n.hostname,
		l.id, l.address, l.reserved, l.renew_time, l.expire_time
	FROM unnest(CAST($2 AS TEXT[])) AS q(mac)
	LEFT JOIN LATERAL (SELECT n.machine_id, n.segment_id, n.circuit_id, n.remote_id, m.hostname
		FROM nics AS n JOIN machines AS m ON m.id = n.machine_id WHERE n.mac = q.mac LIMIT 1) AS n ON true
	LEFT JOIN LATERAL (SELECT l.id, l.address, l.reserved, l.renew_time, l.expire_time
		FROM leases AS l WHERE l.segment_id = $1 AND l.mac = q.mac LIMIT 1) AS l ON true`

// readQuerySQLite is readQuery for SQLite, which has neither arrays nor
// lateral joins, and plans each join as lookups on the unique indexes.
const readQuerySQLite = `WITH q(mac) AS (VALUES %s)
	SELECT q.mac, n.machine_id, n.segment_id, n.circuit_id, n.remote_id, m.hostname,
		l.id, l.address, l.reserved, l.renew_time, l.expire_time
	FROM q
	LEFT JOIN nics AS n ON n.mac = q.mac
	LEFT JOIN machines AS m ON m.id = n.machine_id
	LEFT JOIN leases AS l ON l.segment_id = $1 AND l.mac = q.mac`

// read reads what the store holds for each of macs (distinct) on segment
// seg, in one query.
func (s *Service) read(ctx context.Context, seg uuid.UUID, macs []string) (map[string]*current, error) {
	query, args := readQuery, []any{seg, macs}
	if s.store.Dialect != dialect.Postgres {
		var list strings.Builder
		args = []any{seg}
		for i, mac := range macs {
			if i > 0 {
				list.WriteString(", ")
			}
			fmt.Fprintf(&list, "($%d)", i+2)
			args = append(args, mac)
		}
		query = fmt.Sprintf(readQuerySQLite, list.String())
	}
	found := make(map[string]*current, len(macs))
	var c current
	var mac string
	dest := []any{&mac, &c.machineID, &c.nicSegment, &c.circuitID, &c.remoteID, &c.hostname,
		&c.leaseID, &c.address, &c.reserved, &c.renewTime, &c.expireTime}
	err := s.store.Query(ctx, query, args, dest, func() error {
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

// writeMachines enrols the MACs of rs that belong to no machine, with a
// first lease for those that hold none, and records the relay ids of the
// others, in one transaction that also holds the call's audit record: a
// discovered machine with that interface, its first state, its lease and
// its entry in the change log, each one statement for all the MACs of a
// segment. Requests whose MAC held a lease already, and those whose relay
// ids it recorded, go round again to be leased. When a transaction of
// several requests fails (it lost a race to another replica, or the pool
// ran out), each goes round again to be written in a transaction of its
// own, so that one that cannot be leased fails alone.
func (s *Service) writeMachines(ctx context.Context, b *batch, rs []*request) (again []*request) {
	var groups [][]*request
	var together []*request
	for _, r := range rs {
		if r.alone {
			groups = append(groups, []*request{r})
		} else {
			together = append(together, r)
		}
	}
	if len(together) > 0 {
		groups = append([][]*request{together}, groups...)
	}
	for _, g := range groups {
		// The audit record written in the transaction names the
		// machines it changes, up front.
		named := slices.Clone(b.audited)
		for _, r := range g {
			if r.cur.machineID.Valid {
				named = append(named, r.cur.machineID.UUID.String())
			} else {
				r.newID = uuid.New()
				named = append(named, r.newID.String())
			}
		}
		audit.Resources(ctx, named)
		var resps []*dhcpv1.LeaseResponse
		var counts []count
		err := s.store.InTx(ctx, func(tx *ent.Tx) error {
			var err error
			resps, counts, err = s.writeMachinesTx(ctx, tx, g)
			return err
		})
		switch {
		case err == nil:
			b.audited = named
			s.count(ctx, counts)
			for k, r := range g {
				if resps[k] != nil {
					b.out[r.i].resp = resps[k]
				} else {
					again = append(again, r)
				}
			}
		case len(g) > 1:
			for _, r := range g {
				r.alone = true
			}
			again = append(again, g...)
		case ipam.IsRace(err) || ent.IsConstraintError(err) || store.IsConflict(err):
			again = append(again, g...)
		default:
			b.out[g[0].i].err = err
		}
	}
	return again
}

// writeMachinesTx is the transaction of writeMachines; resps[i] is the
// answer of rs[i], or nil when it goes round again.
func (s *Service) writeMachinesTx(ctx context.Context, tx *ent.Tx, rs []*request) (resps []*dhcpv1.LeaseResponse, counts []count, err error) {
	resps = make([]*dhcpv1.LeaseResponse, len(rs))
	at := make(map[*request]int, len(rs))
	for k, r := range rs {
		at[r] = k
	}
	var changed []store.Changed
	now := store.Now()
	for _, group := range bySegment(rs) {
		seg := group[0].seg
		var news []newMachine
		var leases []ipam.NewLease
		var enrolled []*request
		for _, r := range group {
			if r.cur.machineID.Valid {
				o := r.msg.GetOrigin()
				if err := tx.NIC.Update().Where(nic.MAC(r.mac)).
					SetCircuitID(string(o.GetCircuitId())).SetRemoteID(string(o.GetRemoteId())).SetUpdateTime(now).
					Exec(ctx); err != nil {
					return nil, nil, fmt.Errorf("record relay agent ids: %w", err)
				}
				counts = append(counts, count{seg, "relay_ids", 1})
				continue
			}
			enrolled = append(enrolled, r)
			news = append(news, newMachine{id: r.newID, mac: r.mac, origin: r.msg.GetOrigin(), clientHostname: r.msg.GetClientHostname()})
			if !r.cur.leaseID.Valid {
				leases = append(leases, ipam.NewLease{MAC: r.mac, Requested: r.msg.GetRequestedAddress(), Avoid: s.holds.avoid(seg.ID, r.mac, now)})
			}
		}
		if len(enrolled) == 0 {
			continue
		}
		// The machines, their interfaces and first states are written
		// with the leases, in one statement on PostgreSQL.
		ms, ns, enrol := s.enrolStatements(ctx, seg.ID, news)
		leased, err := s.ipam.LeaseNewMany(ctx, tx, seg, leases, enrol...)
		if err != nil {
			return nil, nil, err
		}
		counts = append(counts, count{seg, "enrol", len(ms)}, count{seg, "lease", len(leased)})
		byMAC := make(map[string]*ent.Lease, len(leased))
		for _, l := range leased {
			byMAC[l.MAC] = l
		}
		for k, m := range ms {
			r := enrolled[k]
			m.Edges.Nics = []*ent.NIC{ns[k]}
			addrs := map[machines.AddressKey]string{}
			if l := byMAC[r.mac]; l != nil {
				addrs[machines.AddressKey{Segment: seg.ID, MAC: r.mac}] = l.Address
				resps[at[r]] = r.response(m.ID, m.Hostname, l.Address, l.ExpireTime.Sub(l.RenewTime))
			} else if r.cur.expireTime.Time.After(now) {
				addrs[machines.AddressKey{Segment: seg.ID, MAC: r.mac}] = r.cur.address.String
			}
			pm, err := machines.ToProto(m, addrs)
			if err != nil {
				return nil, nil, err
			}
			changed = append(changed, store.Changed{ID: m.ID.String(), Resource: pm})
		}
	}
	if len(changed) > 0 {
		if err := s.store.RecordChanges(ctx, tx, store.KindMachine, store.Created, changed); err != nil {
			return nil, nil, err
		}
	}
	return resps, counts, nil
}

// renewQuery extends the leases of a list (id, mac, address, expiry) that
// still hold those addresses, to renew time $1, and clears expiry_noted
// (ipam.NoteExpiries notes the new expiry). A lease held for an
// instance (expiring at $2, ipam.HeldUntil, or later) keeps its expiry:
// the installed system uses its address without DHCP.
const renewQuery = `UPDATE leases SET renew_time = $1, expiry_noted = false,
		expire_time = CASE WHEN leases.expire_time >= $2 THEN leases.expire_time ELSE v.column4 END
	FROM (VALUES %s) AS v
	WHERE leases.id = v.column1 AND leases.mac = v.column2 AND leases.address = v.column3
	RETURNING leases.id`

// renew extends the leases of rs in place, in one statement; a lease that
// changed since it was read goes round again. A renewal writes no audit
// record (see carbide_dhcp_lease_writes_total).
func (s *Service) renew(ctx context.Context, b *batch, rs []*request, now time.Time) (again []*request) {
	if len(rs) == 0 {
		return nil
	}
	expiry := "$%d"
	if s.store.Dialect == dialect.Postgres {
		expiry = "CAST($%d AS TIMESTAMPTZ)" // a parameter in VALUES is text otherwise
	}
	var rows strings.Builder
	args := []any{now, ipam.HeldUntil}
	for k, r := range rs {
		if k > 0 {
			rows.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&rows, "(CAST($%d AS BIGINT), $%d, $%d, "+expiry+")", n+1, n+2, n+3, n+4)
		args = append(args, r.cur.leaseID.Int64, r.mac, r.cur.address.String, now.Add(r.seg.LeaseDuration()))
	}
	renewed := make(map[int64]bool, len(rs))
	var id int64
	err := s.store.Query(ctx, fmt.Sprintf(renewQuery, rows.String()), args, []any{&id}, func() error {
		renewed[id] = true
		return nil
	})
	switch {
	case store.IsConflict(err):
		return rs // a deadlock with a concurrent renewal
	case err != nil:
		for _, r := range rs {
			b.out[r.i].err = fmt.Errorf("renew leases: %w", err)
		}
		return nil
	}
	var counts []count
	for _, r := range rs {
		if !renewed[r.cur.leaseID.Int64] {
			again = append(again, r) // changed under us
			continue
		}
		b.out[r.i].resp = r.response(r.cur.machineID.UUID, r.cur.hostname.String, r.cur.address.String, r.seg.LeaseDuration())
		counts = append(counts, count{r.seg, "renew", 1})
	}
	s.count(ctx, counts)
	return again
}

// leaseFirst gives the MACs of known machines that hold no lease on their
// segment (machines created with CreateMachine, booting for the first
// time) their first lease, together, in one transaction: one query for
// free addresses and one insert for all of them (ipam.LeaseNewMany), one
// update that moves their interfaces to the segment, and the machines'
// entries in the change log. It writes no audit record. When it fails
// (another replica took an address, or the pool ran out), each request
// goes round again to be leased on its own (allocate).
func (s *Service) leaseFirst(ctx context.Context, b *batch, rs []*request) (again []*request) {
	if len(rs) <= 1 {
		return s.allocate(ctx, b, rs)
	}
	resps := make([]*dhcpv1.LeaseResponse, len(rs))
	var counts []count
	err := s.store.InTx(unaudited(ctx), func(tx *ent.Tx) error {
		counts = counts[:0]
		var ids []uuid.UUID
		k := 0
		for _, group := range bySegment(rs) {
			seg := group[0].seg
			reqs := make([]ipam.NewLease, len(group))
			macs := make([]string, len(group))
			now := store.Now()
			for j, r := range group {
				reqs[j] = ipam.NewLease{MAC: r.mac, Requested: r.msg.GetRequestedAddress(), Avoid: s.holds.avoid(seg.ID, r.mac, now)}
				macs[j] = r.mac
			}
			leased, err := s.ipam.LeaseNewMany(ctx, tx, seg, reqs)
			if err != nil {
				return err
			}
			if err := tx.NIC.Update().Where(nic.MACIn(macs...), nic.Or(nic.SegmentIDIsNil(), nic.SegmentIDNEQ(seg.ID))).
				SetSegmentID(seg.ID).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
				return fmt.Errorf("update interfaces: %w", err)
			}
			for j, r := range group {
				l := leased[j]
				resps[k] = r.response(r.cur.machineID.UUID, r.cur.hostname.String, l.Address, l.ExpireTime.Sub(l.RenewTime))
				k++
				if !slices.Contains(ids, r.cur.machineID.UUID) {
					ids = append(ids, r.cur.machineID.UUID)
				}
			}
			counts = append(counts, count{seg, "lease", len(leased)})
		}
		return machines.RecordChanges(ctx, s.store, tx, ids, store.Updated)
	})
	if err != nil {
		for _, r := range rs {
			r.alone = true
		}
		return rs
	}
	k := 0
	for _, group := range bySegment(rs) {
		for _, r := range group {
			b.out[r.i].resp = resps[k]
			k++
		}
	}
	s.count(ctx, counts)
	return nil
}

// allocate leases each of rs a free address through ipam (or its
// reservation), which writes it with the machine's entry in the change
// log; a request that lost a race goes round again. These writes leave no
// audit record.
func (s *Service) allocate(ctx context.Context, b *batch, rs []*request) (again []*request) {
	for _, r := range rs {
		l, err := s.ipam.Allocate(unaudited(ctx), ipam.Request{Segment: r.seg.ID, MAC: r.mac, Requested: r.msg.GetRequestedAddress(),
			Avoid: s.holds.avoid(r.seg.ID, r.mac, store.Now())})
		switch {
		case ipam.IsRace(err) || ent.IsConstraintError(err) || store.IsConflict(err):
			again = append(again, r)
		case err != nil:
			b.out[r.i].err = err
		default:
			// A renewed lease held for an instance lasts one lease time
			// for the client.
			d := min(l.ExpireTime.Sub(l.RenewTime), r.seg.LeaseDuration())
			b.out[r.i].resp = r.response(r.cur.machineID.UUID, r.cur.hostname.String, l.Address, d)
			s.count(ctx, []count{{r.seg, "lease", 1}})
		}
	}
	return again
}

// offer answers each of rs with the address a write would lease it, and
// writes nothing: the address its lease row holds, if it may keep it (the
// write would renew that lease in place); else its reservation, the
// address it asks for, or the next of its pool walk, the first of those
// that no lease holds, no decline holds back (one query for all the
// requests of a segment, ipam.Candidates) and no other MAC holds in this
// process. It holds that address for the MAC (holds) and marks the answer
// tentative. A request whose candidates are all taken (the pool is
// nearly full) goes round again to be written, as without offer.
func (s *Service) offer(ctx context.Context, b *batch, rs []*request, now time.Time) (again []*request) {
	for _, group := range bySegment(rs) {
		seg := group[0].seg
		var ask []*request
		var reqs []ipam.NewLease
		for _, r := range group {
			if r.cur.leaseID.Valid && seg.MayKeep(r.mac, r.cur.address.String) {
				b.out[r.i].resp = r.offered(r.cur.address.String)
				continue
			}
			// A MAC asking again is offered what it was offered.
			requested := r.msg.GetRequestedAddress()
			if a, ok := s.holds.held(seg.ID, r.mac, now); ok {
				requested = a
			}
			ask = append(ask, r)
			reqs = append(reqs, ipam.NewLease{MAC: r.mac, Requested: requested})
		}
		if len(ask) == 0 {
			continue
		}
		cands, err := s.ipam.Candidates(ctx, seg, reqs)
		if err != nil {
			for _, r := range ask {
				b.out[r.i].err = err
			}
			continue
		}
		held := 0
		for k, r := range ask {
			for _, a := range cands[k] {
				if s.holds.claim(seg.ID, r.mac, a, now) {
					b.out[r.i].resp = r.offered(a)
					held++
					break
				}
			}
			if b.out[r.i].resp == nil {
				r.noOffer = true
				again = append(again, r)
			}
		}
		if held > 0 {
			s.offers.WithLabelValues(seg.Name).Add(float64(held))
		}
	}
	return again
}

// unaudited is ctx for the transactions of the lease path that write no
// audit record: the leases, which carbide_dhcp_lease_writes_total counts.
func unaudited(ctx context.Context) context.Context { return store.WithTxHook(ctx, nil) }

// count is a number of writes of one kind on a segment.
type count struct {
	seg  *ipam.Segment
	kind string
	n    int
}

// count adds the writes to carbide_dhcp_lease_writes_total.
func (s *Service) count(ctx context.Context, counts []count) {
	who := principal.From(ctx)
	for _, c := range counts {
		if c.n > 0 {
			s.writes.WithLabelValues(c.seg.Name, who, c.kind).Add(float64(c.n))
		}
	}
}

// offered is the tentative answer of an offer of addr: what the lease
// would answer, but for the machine id of a MAC that is not enrolled yet.
func (r *request) offered(addr string) *dhcpv1.LeaseResponse {
	resp := &dhcpv1.LeaseResponse{
		Address:       addr,
		LeaseDuration: durationpb.New(r.seg.LeaseDuration()),
		Hostname:      hostnameOf(r.msg.GetClientHostname()),
		Options:       options(r.seg.Segment),
		Tentative:     true,
	}
	if r.cur.machineID.Valid {
		resp.MachineId, resp.Hostname = r.cur.machineID.UUID.String(), r.cur.hostname.String
	}
	return resp
}

func (r *request) response(machineID uuid.UUID, hostname, addr string, d time.Duration) *dhcpv1.LeaseResponse {
	return &dhcpv1.LeaseResponse{
		Address:       addr,
		LeaseDuration: durationpb.New(d),
		Hostname:      hostname,
		MachineId:     machineID.String(),
		Options:       options(r.seg.Segment),
	}
}
