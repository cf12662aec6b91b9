package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/declinedaddress"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/segment"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves AddressService.
type Service struct {
	store    *store.Store
	segments segmentCache
}

var _ networkv1connect.AddressServiceHandler = (*Service)(nil)

// NewService returns an AddressService over st.
func NewService(st *store.Store) *Service {
	return &Service{store: st, segments: segmentCache{store: st, maxAge: segmentCacheMaxAge}}
}

// maxAttempts bounds how often one allocation retries after losing a race
// for an address to a concurrent allocation.
const maxAttempts = 16

// errRace marks an allocation attempt that lost a race and should be retried.
var errRace = errors.New("lost a race for an address")

// AllocateAddress leases an address or renews the caller's lease.
func (s *Service) AllocateAddress(ctx context.Context, req *connect.Request[networkv1.AllocateAddressRequest]) (*connect.Response[networkv1.AllocateAddressResponse], error) {
	segID, err := ids.Parse("segment_id", req.Msg.GetSegmentId())
	if err != nil {
		return nil, err
	}
	l, err := s.Allocate(ctx, Request{
		Segment:   segID,
		MAC:       machines.CanonicalMAC(req.Msg.GetMac()),
		Requested: req.Msg.GetRequestedAddress(),
		Duration:  req.Msg.GetLeaseDuration().AsDuration(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.AllocateAddressResponse{Lease: LeaseToProto(l)}), nil
}

// Request asks for an address.
type Request struct {
	Segment   uuid.UUID
	MAC       string // canonical
	Requested string // optional
	Duration  time.Duration
	// Avoid, if set, reports the addresses a new lease should not take
	// while others are free: those offered to other MACs (see
	// Candidates). The MAC may still keep the address it holds.
	Avoid func(addr string) bool
}

// Allocate leases an address to req.MAC on req.Segment or renews its lease.
// Every decision is re-read inside a transaction; when a concurrent
// allocation (in this or another API process) takes the chosen address
// first, the unique index rejects the second insert and the allocation
// starts over with fresh data.
func (s *Service) Allocate(ctx context.Context, req Request) (*ent.Lease, error) {
	for range maxAttempts {
		// Read before the transaction: the embedded store has a single
		// connection, which the transaction holds.
		seg, err := s.Segment(ctx, req.Segment)
		if err != nil {
			return nil, err
		}
		var l *ent.Lease
		err = s.store.InTx(ctx, func(tx *ent.Tx) error {
			var err error
			l, err = s.allocate(ctx, tx, seg, req)
			return err
		})
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, errRace) || ent.IsConstraintError(err) || store.IsConflict(err):
			continue
		default:
			return nil, err
		}
	}
	return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("segment %s: gave up after %d attempts that lost races for addresses; retry", req.Segment, maxAttempts))
}

func (s *Service) allocate(ctx context.Context, tx *ent.Tx, seg *Segment, req Request) (*ent.Lease, error) {
	now := store.Now()
	d := req.Duration
	if d == 0 {
		d = seg.LeaseDuration()
	}
	expire := now.Add(d)

	existing, err := tx.Lease.Query().Where(lease.SegmentID(seg.ID), lease.MAC(req.MAC)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, fmt.Errorf("read lease: %w", err)
	}
	resv, reserved := seg.Reservations[req.MAC]

	// Renewal: the MAC keeps the address it holds while it may still hold
	// it. It moves when a reservation now points it elsewhere, or when the
	// segment changed under it (its address left the ranges, became the
	// gateway or another MAC's reservation).
	if existing != nil && seg.MayKeep(req.MAC, existing.Address) {
		if Held(existing.ExpireTime) {
			expire = existing.ExpireTime // held for an instance: never shortened
		}
		l, err := tx.Lease.UpdateOne(existing).
			SetRenewTime(now).SetExpireTime(expire).SetReserved(reserved).
			Save(ctx)
		if ent.IsNotFound(err) {
			return nil, errRace // reclaimed by another MAC meanwhile
		} else if err != nil {
			return nil, fmt.Errorf("renew lease: %w", err)
		}
		// An expired lease coming back shows on the machine again.
		if err := s.attach(ctx, tx, seg.ID, req.MAC, !existing.ExpireTime.After(now)); err != nil {
			return nil, err
		}
		return l, nil
	}

	var chosen string
	if reserved {
		if err := s.freeReserved(ctx, tx, seg, req.MAC, resv, now); err != nil {
			return nil, err
		}
		chosen = resv.String()
	} else {
		free, err := s.free(ctx, tx, seg, req.MAC, req.Requested, req.Avoid, now)
		if err != nil {
			return nil, err
		}
		chosen = free[0]
	}

	var l *ent.Lease
	if existing != nil {
		// Moving to another address: the row keeps its identity.
		l, err = tx.Lease.UpdateOne(existing).
			SetAddress(chosen).SetReserved(reserved).SetCreateTime(now).SetRenewTime(now).SetExpireTime(expire).
			Save(ctx)
	} else {
		l, err = tx.Lease.Create().
			SetSegmentID(seg.ID).SetMAC(req.MAC).SetAddress(chosen).SetReserved(reserved).
			SetCreateTime(now).SetRenewTime(now).SetExpireTime(expire).
			Save(ctx)
	}
	if err != nil {
		if ent.IsConstraintError(err) || ent.IsNotFound(err) {
			return nil, errRace
		}
		return nil, fmt.Errorf("write lease: %w", err)
	}
	if err := s.attach(ctx, tx, seg.ID, req.MAC, true); err != nil {
		return nil, err
	}
	return l, nil
}

// MayKeep reports whether mac may go on holding addr: the address is its
// reservation, or, without one, a leasable address of the pool.
func (seg *Segment) MayKeep(mac, addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	if resv, ok := seg.Reservations[mac]; ok {
		return resv == a
	}
	return seg.Pool.Leasable(a)
}

// leaseNew leases an address to a MAC that holds no lease on the segment,
// in tx, which the caller commits: the MAC's reservation, else a free
// address (see free). It leaves the MAC's machine to the caller. It
// returns errRace (see IsRace) when a concurrent allocation took the
// address or gave the MAC a lease first.
func (s *Service) leaseNew(ctx context.Context, tx *ent.Tx, seg *Segment, mac, requested string, avoid func(string) bool) (*ent.Lease, error) {
	now := store.Now()
	l := &ent.Lease{SegmentID: seg.ID, MAC: mac, CreateTime: now, RenewTime: now, ExpireTime: now.Add(seg.LeaseDuration())}
	var candidates []string
	if resv, ok := seg.Reservations[mac]; ok {
		if err := s.freeReserved(ctx, tx, seg, mac, resv, now); err != nil {
			return nil, err
		}
		candidates, l.Reserved = []string{resv.String()}, true
	} else {
		var err error
		if candidates, err = s.free(ctx, tx, seg, mac, requested, avoid, now); err != nil {
			return nil, err
		}
	}
	// Another allocation may take a free address first: the insert then
	// does nothing, and the next one is tried. A lease for the same MAC
	// is a conflict that fails the insert (and the transaction).
	const insert = `INSERT INTO leases (segment_id, mac, address, address_num, reserved, create_time, renew_time, expire_time)
		VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (segment_id, address) DO NOTHING RETURNING id, address`
	for _, a := range candidates {
		num, err := addressNum(a)
		if err != nil {
			return nil, err
		}
		inserted := false
		if err := s.chain(ctx, tx, nil, &store.Stmt{SQL: insert, Args: []any{seg.ID, mac, a, num, l.Reserved, now, l.ExpireTime}},
			func(id int64, _ string) { l.ID, inserted = id, true }); err != nil {
			return nil, err
		}
		if inserted {
			l.Address = a
			return l, nil
		}
	}
	return nil, errRace
}

// addressNum is the number of a canonical IPv4 address that the pool
// produced (see store.AddressNum).
func addressNum(a string) (int64, error) {
	addr, err := netip.ParseAddr(a)
	if err != nil || !addr.Is4() {
		return 0, fmt.Errorf("candidate address %q is not an IPv4 address", a)
	}
	return store.AddressNum(addr), nil
}

// IsRace reports whether err says an allocation lost a race and should
// start over with fresh data.
func IsRace(err error) bool { return errors.Is(err, errRace) }

// freeReserved makes the reserved address available to its MAC: an expired
// lease of another MAC on it is dropped; an unexpired one is an error.
func (s *Service) freeReserved(ctx context.Context, tx *ent.Tx, seg *Segment, mac string, resv netip.Addr, now time.Time) error {
	holder, err := tx.Lease.Query().Where(lease.SegmentID(seg.ID), lease.Address(resv.String())).Only(ctx)
	switch {
	case ent.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read lease: %w", err)
	case holder.MAC == mac:
		return nil
	case holder.ExpireTime.After(now):
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("address %s is reserved for %s but leased to %s until %s; release that lease first",
				resv, mac, holder.MAC, holder.ExpireTime.Format(time.RFC3339)))
	}
	n, err := tx.Lease.Delete().Where(lease.ID(holder.ID), lease.ExpireTimeLTE(now)).Exec(ctx)
	if err != nil {
		return fmt.Errorf("reclaim reserved address: %w", err)
	}
	if n == 0 {
		return errRace
	}
	return nil
}

// candidates is how many addresses of the pool walk free looks at in one
// query. While the pool has room, one of them is nearly always free.
const candidates = 64

// free returns addresses a MAC without a lease may take, best first: the
// requested one if it is free, then the free ones among the next
// addresses of the pool walk, those avoid reports (if set) last. When
// none of those is free (the pool is nearly full), it returns what
// pickFree finds further on.
func (s *Service) free(ctx context.Context, tx *ent.Tx, seg *Segment, mac, requested string, avoid func(string) bool, now time.Time) ([]string, error) {
	want := seg.wanted(mac, requested, candidates)
	if len(want) == 0 {
		return nil, poolFull(seg)
	}
	taken, err := s.taken(ctx, tx, seg.ID, want, now)
	if err != nil {
		return nil, err
	}
	var free, avoided []string
	for _, a := range want {
		switch {
		case taken[a]:
		case avoid != nil && avoid(a):
			avoided = append(avoided, a)
		default:
			free = append(free, a)
		}
	}
	if free = append(free, avoided...); len(free) > 0 {
		return free, nil
	}
	a, err := s.pickFree(ctx, tx, seg, mac, now)
	if err != nil {
		return nil, err
	}
	return []string{a}, nil
}

// wanted lists the addresses a MAC without a lease would like, best
// first: the requested one if it is leasable, then the next n+1 of the
// MAC's pool walk (fewer if the pool is smaller).
func (seg *Segment) wanted(mac, requested string, n int) []string {
	want := make([]string, 0, n+2)
	if a, err := netip.ParseAddr(requested); err == nil && seg.Pool.Leasable(a) {
		want = append(want, a.String())
	}
	for a := range seg.Pool.Walk(mac) {
		if len(want) > n {
			break
		}
		want = append(want, a.String())
	}
	return want
}

// takenQuery returns which addresses of the list $3 a lease of segment $1
// holds (expired or not) or a decline holds back at $2: on PostgreSQL, one
// lookup per address on the unique indexes on (segment_id, address). The
// LIMIT 1 keeps each lateral lookup a lookup (see the read query of the
// dhcp package): a plain join or an IN list may be planned, while the
// table is empty, as a scan of all the segment's leases, and the
// prepared statement keeps that plan as the table grows.
const takenQuery = `SELECT q.a FROM unnest(CAST($3 AS TEXT[])) AS q(a),
		LATERAL (SELECT 1 FROM leases WHERE segment_id = $1 AND address = q.a LIMIT 1) AS l
	UNION ALL SELECT q.a FROM unnest(CAST($3 AS TEXT[])) AS q(a),
		LATERAL (SELECT 1 FROM declined_addresses WHERE segment_id = $1 AND address = q.a AND until > $2 LIMIT 1) AS d`

// takenArgs is the query of taken for the store's dialect, and its
// arguments.
func (s *Service) takenArgs(segID uuid.UUID, addrs []string, now time.Time) (string, []any) {
	q, args := takenQuery, []any{segID, now, addrs}
	if s.store.Dialect != dialect.Postgres {
		var in strings.Builder
		args = append(args[:2:2], make([]any, 0, len(addrs))...)
		for i, a := range addrs {
			if i > 0 {
				in.WriteString(", ")
			}
			fmt.Fprintf(&in, "$%d", i+3)
			args = append(args, a)
		}
		q = fmt.Sprintf(`SELECT address FROM leases WHERE segment_id = $1 AND address IN (%[1]s)
		UNION ALL SELECT address FROM declined_addresses WHERE segment_id = $1 AND until > $2 AND address IN (%[1]s)`, in.String())
	}
	return q, args
}

// taken returns which of addrs are leased (expired or not) or held back
// after a decline, in one query.
func (s *Service) taken(ctx context.Context, tx *ent.Tx, segID uuid.UUID, addrs []string, now time.Time) (map[string]bool, error) {
	q, args := s.takenArgs(segID, addrs, now)
	rows, err := tx.QueryContext(ctx, s.store.SQL(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer rows.Close()
	taken := make(map[string]bool)
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("read leases: %w", err)
		}
		taken[a] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	return taken, nil
}

// pickFree chooses an address for mac when the first candidates of its
// walk are all taken (the pool is nearly full): the first address of the
// walk that no lease holds and no decline holds back, else the leasable
// address whose lease expired longest ago, whose lease it deletes (the old
// holder loses it). It never reads the segment's leases as a whole: its
// queries walk an index from a starting point and return a row or a page
// (see firstUnleased and reclaimOldest), so its cost follows how long the
// run of leased addresses after mac's starting point is, not how many
// leases the segment holds.
func (s *Service) pickFree(ctx context.Context, tx *ent.Tx, seg *Segment, mac string, now time.Time) (string, error) {
	for _, r := range seg.Pool.WalkRanges(mac) {
		lo, hi := store.AddressNum(r.Start), store.AddressNum(r.End)
		for lo <= hi {
			n, ok, err := s.firstUnleased(ctx, tx, seg.ID, lo, hi)
			if err != nil {
				return "", err
			}
			if !ok {
				break // every address from lo to hi is leased
			}
			// Checked by its text too: a lease that a replica of an older
			// version wrote has no address_num until the next start-up.
			a := fromUint(uint32(n))
			if !seg.Pool.Excluded(a) {
				taken, err := s.taken(ctx, tx, seg.ID, []string{a.String()}, now)
				if err != nil {
					return "", err
				}
				if !taken[a.String()] {
					return a.String(), nil
				}
			}
			lo = n + 1 // the gateway, a reservation, or declined
		}
	}
	return s.reclaimOldest(ctx, tx, seg, now)
}

// firstUnleased returns the lowest address number from lo to hi that no
// lease of the segment holds; ok is false when all of them are leased. It
// gallops: it checks whether the first 64 addresses from lo are all
// leased, then the next 128, and so on, until a stretch has a gap; then
// it halves that stretch until it finds the gap. Each check is one query
// (see nthLeased) that walks the index on (segment_id, address_num) over
// the stretch, so finding a gap after a run of r leased addresses takes
// about 2·log2(r) queries and 3·r index entries, whatever else the
// segment holds.
func (s *Service) firstUnleased(ctx context.Context, tx *ent.Tx, segID uuid.UUID, lo, hi int64) (n int64, ok bool, err error) {
	base, step, bounded := lo, int64(candidates), false
	for base <= hi {
		k := min(step, hi-base+1) // check base ... base+k-1
		last, found, err := s.nthLeased(ctx, tx, segID, base, k-1)
		if err != nil {
			return 0, false, err
		}
		if found && last == base+k-1 { // all leased
			base += k
			if !bounded {
				step *= 2
			}
			continue
		}
		if k == 1 {
			return base, true, nil
		}
		bounded, step = true, k/2
	}
	return 0, false, nil
}

// nthLeased returns the address number of the segment's n-th lease (from
// 0) at or above address number from, in address order; found is false
// when there are not that many. Addresses being unique on a segment, it is
// from+n exactly when from ... from+n are all leased.
func (s *Service) nthLeased(ctx context.Context, tx *ent.Tx, segID uuid.UUID, from, n int64) (num int64, found bool, err error) {
	rows, err := tx.QueryContext(ctx, s.store.SQL(`SELECT address_num FROM leases
		WHERE segment_id = $1 AND address_num >= $2 ORDER BY address_num LIMIT 1 OFFSET $3`), segID, from, n)
	if err != nil {
		return 0, false, fmt.Errorf("find an unleased address: %w", err)
	}
	defer rows.Close()
	found = rows.Next()
	if found {
		if err := rows.Scan(&num); err != nil {
			return 0, false, fmt.Errorf("find an unleased address: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("find an unleased address: %w", err)
	}
	return num, found, nil
}

// declined reports whether a decline holds a back now.
func (s *Service) declined(ctx context.Context, tx *ent.Tx, segID uuid.UUID, a netip.Addr, now time.Time) (bool, error) {
	held, err := tx.DeclinedAddress.Query().
		Where(declinedaddress.SegmentID(segID), declinedaddress.Address(a.String()), declinedaddress.UntilGT(now)).
		Exist(ctx)
	if err != nil {
		return false, fmt.Errorf("read declined addresses: %w", err)
	}
	return held, nil
}

// reclaimPage is how many expired leases reclaimOldest reads at a time.
const reclaimPage = 16

// reclaimOldest deletes the lease that expired longest ago on a leasable
// address no decline holds, and returns that address; the pool is full
// when there is none. It reads expired leases oldest first, a page at a
// time, from the index on (segment_id, expire_time): only leases it must
// pass over (no longer leasable, or held back) cost more than one page.
func (s *Service) reclaimOldest(ctx context.Context, tx *ent.Tx, seg *Segment, now time.Time) (string, error) {
	var last *ent.Lease
	for {
		q := tx.Lease.Query().Where(lease.SegmentID(seg.ID), lease.ExpireTimeLTE(now))
		if last != nil {
			q = q.Where(lease.Or(lease.ExpireTimeGT(last.ExpireTime),
				lease.And(lease.ExpireTime(last.ExpireTime), lease.IDGT(last.ID))))
		}
		page, err := q.Order(ent.Asc(lease.FieldExpireTime), ent.Asc(lease.FieldID)).Limit(reclaimPage).
			Select(lease.FieldID, lease.FieldAddress, lease.FieldExpireTime).All(ctx)
		if err != nil {
			return "", fmt.Errorf("read expired leases: %w", err)
		}
		if len(page) == 0 {
			return "", poolFull(seg)
		}
		for _, l := range page {
			a, err := netip.ParseAddr(l.Address)
			if err != nil || !seg.Pool.Leasable(a) {
				continue
			}
			held, err := s.declined(ctx, tx, seg.ID, a, now)
			if err != nil {
				return "", err
			}
			if held {
				continue
			}
			n, err := tx.Lease.Delete().Where(lease.ID(l.ID), lease.ExpireTimeLTE(now)).Exec(ctx)
			if err != nil {
				return "", fmt.Errorf("reclaim expired lease: %w", err)
			}
			if n == 0 {
				return "", errRace // renewed or reclaimed meanwhile
			}
			return l.Address, nil
		}
		last = page[len(page)-1]
	}
}

func poolFull(seg *Segment) error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("segment %s (%s) has no free address: all %d addresses of its ranges are leased or excluded; widen its ranges or release leases",
			seg.Name, seg.Prefix, seg.Pool.Size()))
}

// attach records that the machine owning mac, if any, is on the segment,
// and puts the machine in the change log when what it shows changed: the
// interface moved to this segment, or shown says its address changed.
func (s *Service) attach(ctx context.Context, tx *ent.Tx, segmentID uuid.UUID, mac string, shown bool) error {
	n, err := tx.NIC.Query().Where(nic.MAC(mac)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read interface: %w", err)
	}
	moved := n.SegmentID == nil || *n.SegmentID != segmentID
	if moved {
		if err := tx.NIC.UpdateOne(n).SetSegmentID(segmentID).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
			return fmt.Errorf("update interface: %w", err)
		}
	}
	if !moved && !shown {
		return nil
	}
	return machines.RecordChange(ctx, s.store, tx, n.MachineID, store.Updated)
}

// ReleaseAddress ends a MAC's lease now.
func (s *Service) ReleaseAddress(ctx context.Context, req *connect.Request[networkv1.ReleaseAddressRequest]) (*connect.Response[networkv1.ReleaseAddressResponse], error) {
	segID, err := ids.Parse("segment_id", req.Msg.GetSegmentId())
	if err != nil {
		return nil, err
	}
	if err := s.Release(ctx, segID, machines.CanonicalMAC(req.Msg.GetMac())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.ReleaseAddressResponse{}), nil
}

// Release ends mac's lease on the segment now; releasing a MAC without a
// lease, or whose lease is held for an instance (HeldUntil), succeeds and
// changes nothing.
func (s *Service) Release(ctx context.Context, segID uuid.UUID, mac string) error {
	return s.store.InTx(ctx, func(tx *ent.Tx) error {
		if ok, err := tx.Segment.Query().Where(segment.ID(segID)).Exist(ctx); err != nil {
			return fmt.Errorf("read segment: %w", err)
		} else if !ok {
			return segmentNotFound(segID)
		}
		// The lease is found by its unique key, then ended by its id: an
		// UPDATE that also filtered on the expiry was planned, while the
		// table was empty, as a walk of the segment's unexpired leases,
		// and its prepared statement kept that plan as the table grew.
		now := store.Now()
		l, err := tx.Lease.Query().Where(lease.SegmentID(segID), lease.MAC(mac)).Only(ctx)
		switch {
		case ent.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("read lease: %w", err)
		case !l.ExpireTime.After(now):
			return nil // expired already
		case Held(l.ExpireTime):
			// Held for an instance, whose system keeps using the address
			// without DHCP: only the instance gives it back
			// (instances.ReleaseAddress).
			return nil
		}
		// The change recorded below shows the release: the expiry
		// sweeper (NoteExpiries) has nothing to add.
		if err := tx.Lease.UpdateOneID(l.ID).SetExpireTime(now).SetExpiryNoted(true).Exec(ctx); err != nil {
			return fmt.Errorf("release lease: %w", err)
		}
		owner, err := tx.NIC.Query().Where(nic.MAC(mac)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read interface: %w", err)
		}
		return machines.RecordChange(ctx, s.store, tx, owner.MachineID, store.Updated)
	})
}

// ListLeases lists a segment's leases, oldest first.
func (s *Service) ListLeases(ctx context.Context, req *connect.Request[networkv1.ListLeasesRequest]) (*connect.Response[networkv1.ListLeasesResponse], error) {
	segID, err := ids.Parse("segment_id", req.Msg.GetSegmentId())
	if err != nil {
		return nil, err
	}
	if ok, err := s.store.Client.Segment.Query().Where(segment.ID(segID)).Exist(ctx); err != nil {
		return nil, fmt.Errorf("read segment: %w", err)
	} else if !ok {
		return nil, segmentNotFound(segID)
	}
	fp := pagetoken.Filter(segID.String(), strconv.FormatBool(req.Msg.GetIncludeExpired()))
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.Lease.Query().Where(lease.SegmentID(segID))
	if !req.Msg.GetIncludeExpired() {
		q = q.Where(lease.ExpireTimeGT(store.Now()))
	}
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		q = q.Where(lease.IDGT(n))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	ls, err := q.Order(ent.Asc(lease.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	resp := &networkv1.ListLeasesResponse{}
	if len(ls) > size {
		ls = ls[:size]
		resp.NextPageToken = pagetoken.Encode(strconv.FormatInt(ls[size-1].ID, 10), fp)
	}
	for _, l := range ls {
		resp.Leases = append(resp.Leases, LeaseToProto(l))
	}
	return connect.NewResponse(resp), nil
}

// LeaseToProto converts a stored lease.
func LeaseToProto(l *ent.Lease) *networkv1.Lease {
	return &networkv1.Lease{
		SegmentId:  l.SegmentID.String(),
		Mac:        l.MAC,
		Address:    l.Address,
		ExpireTime: timestamppb.New(l.ExpireTime),
		Reserved:   l.Reserved,
		CreateTime: timestamppb.New(l.CreateTime),
		RenewTime:  timestamppb.New(l.RenewTime),
	}
}

func segmentNotFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("segment %s not found", id))
}
