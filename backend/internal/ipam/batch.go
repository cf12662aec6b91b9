package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"entgo.io/ent/dialect/sql/sqlgraph"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
)

// NewLease asks for a lease for a MAC that holds none on the segment.
type NewLease struct {
	MAC string
	// Requested is the address the client asked for, or "".
	Requested string
	// Avoid, if set, reports the addresses the MAC should not take while
	// others are free: those offered to other MACs (see Candidates).
	Avoid func(addr string) bool
}

// batchCandidates is how many addresses of each MAC's pool walk
// LeaseNewMany looks at. Each MAC's walk starts at its own point (a hash
// of the MAC) and goes on address by address, so a MAC goes past as many
// leased addresses as linear probing does in a hash table: about 2.5 with
// the pool half full, 13 with it 80% full. Each candidate is one index
// lookup; a MAC left without a free one is leased on its own, as by
// leaseNew, which looks further.
const batchCandidates = 8

// LeaseNewMany leases addresses to MACs that hold no lease on the segment,
// in tx, which the caller commits; leases[i] is reqs[i]'s. It writes the
// leases of all MACs without a reservation with one query for free
// addresses and one insert, and leases the others as leaseNew does. The
// statements before, if any, run first, with the insert (see
// store.Chain): the rows the leases depend on, such as the interfaces of
// new machines. It returns errRace (see IsRace) when a concurrent
// allocation gave one of the MACs a lease first, or when one of before
// failed on a unique index (another call wrote the same row first).
func (s *Service) LeaseNewMany(ctx context.Context, tx *ent.Tx, seg *Segment, reqs []NewLease, before ...store.Stmt) ([]*ent.Lease, error) {
	if len(reqs) == 0 {
		return nil, s.chain(ctx, tx, before, nil, nil)
	}
	now := store.Now()
	expire := now.Add(seg.LeaseDuration())
	leases := make([]*ent.Lease, len(reqs))

	// Each MAC's candidates: the address it asks for, then its walk.
	want := make([][]string, len(reqs))
	var all []string
	for i, r := range reqs {
		if _, ok := seg.Reservations[r.MAC]; ok {
			continue
		}
		want[i] = seg.wanted(r.MAC, r.Requested, batchCandidates)
		all = append(all, want[i]...)
	}
	var taken map[string]bool
	if len(all) > 0 {
		var err error
		if taken, err = s.taken(ctx, tx, seg.ID, all, now); err != nil {
			return nil, err
		}
	}

	// Give each MAC its first free candidate that no earlier MAC of the
	// batch got, and insert those leases at once. An address a concurrent
	// allocation took meanwhile is skipped by the insert.
	var rows strings.Builder
	args := []any{seg.ID, now, expire}
	chosen := make(map[string]int) // address -> index into reqs
	for i, cands := range want {
		for _, a := range cands {
			if _, dup := chosen[a]; dup || taken[a] || reqs[i].Avoid != nil && reqs[i].Avoid(a) {
				continue
			}
			num, err := addressNum(a)
			if err != nil {
				return nil, err
			}
			chosen[a] = i
			if len(args) > 3 {
				rows.WriteString(", ")
			}
			fmt.Fprintf(&rows, "($1, $%d, $%d, $%d, false, $2, $2, $3)", len(args)+1, len(args)+2, len(args)+3)
			args = append(args, reqs[i].MAC, a, num)
			break
		}
	}
	var insert *store.Stmt
	if len(chosen) > 0 {
		insert = &store.Stmt{SQL: `INSERT INTO leases (segment_id, mac, address, address_num, reserved, create_time, renew_time, expire_time)
			VALUES ` + rows.String() + ` ON CONFLICT (segment_id, address) DO NOTHING RETURNING id, address`, Args: args}
	}
	if err := s.chain(ctx, tx, before, insert, func(id int64, addr string) {
		i := chosen[addr]
		leases[i] = &ent.Lease{ID: id, SegmentID: seg.ID, MAC: reqs[i].MAC, Address: addr,
			CreateTime: now, RenewTime: now, ExpireTime: expire}
	}); err != nil {
		return nil, err
	}

	// The rest: reservations, and MACs whose candidates were all taken.
	for i, r := range reqs {
		if leases[i] != nil {
			continue
		}
		l, err := s.leaseNew(ctx, tx, seg, r.MAC, r.Requested, r.Avoid)
		if err != nil {
			return nil, err
		}
		leases[i] = l
	}
	return leases, nil
}

// chain runs the statements before and then insert, an INSERT … RETURNING
// id, address of leases (either may be missing), as one (store.Chain), and
// calls got for each lease written. A unique violation (a MAC leased
// meanwhile) is errRace, and so is a deadlock with a concurrent batch that
// inserts the same rows in another order.
func (s *Service) chain(ctx context.Context, tx *ent.Tx, before []store.Stmt, insert *store.Stmt, got func(id int64, addr string)) error {
	stmts := before
	if insert != nil {
		stmts = append(slices.Clip(before), *insert)
	}
	var id int64
	var addr string
	var dest []any
	if insert != nil {
		dest = []any{&id, &addr}
	}
	err := s.store.Chain(ctx, tx, stmts, dest, func() error {
		got(id, addr)
		return nil
	})
	switch {
	case err == nil:
		return nil
	case sqlgraph.IsUniqueConstraintError(err) || store.IsConflict(err):
		return errRace
	default:
		return fmt.Errorf("write leases: %w", err)
	}
}

// Candidates returns, for each of reqs, the addresses LeaseNewMany would
// try to lease it now, best first, less those a lease holds (expired or
// not) or a decline holds back: what a DHCP offer may propose without a
// write. For a MAC with a reservation that is its reserved address, unless
// another MAC's unexpired lease holds it; for any other, the requested
// address if it is leasable, then the next addresses of the MAC's pool
// walk. A MAC whose candidates are all taken gets none: the pool is
// nearly full, and only a lease, which looks further, finds it one. It
// reads with one query (and one for each reservation) and writes nothing:
// a concurrent call may lease the addresses meanwhile.
func (s *Service) Candidates(ctx context.Context, seg *Segment, reqs []NewLease) ([][]string, error) {
	now := store.Now()
	cands := make([][]string, len(reqs))
	var all []string
	for i, r := range reqs {
		if resv, ok := seg.Reservations[r.MAC]; ok {
			free, err := s.reservationFree(ctx, seg, r.MAC, resv, now)
			if err != nil {
				return nil, err
			}
			if free {
				cands[i] = []string{resv.String()}
			}
			continue
		}
		cands[i] = seg.wanted(r.MAC, r.Requested, batchCandidates)
		all = append(all, cands[i]...)
	}
	if len(all) == 0 {
		return cands, nil
	}
	q, args := s.takenArgs(seg.ID, all, now)
	taken := make(map[string]bool)
	var a string
	if err := s.store.Query(ctx, q, args, []any{&a}, func() error {
		taken[a] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	for i, r := range reqs {
		if _, ok := seg.Reservations[r.MAC]; ok {
			continue
		}
		cands[i] = slices.DeleteFunc(cands[i], func(a string) bool { return taken[a] })
	}
	return cands, nil
}

// reservationFree reports whether mac may be leased its reserved address
// resv now: no lease holds it, mac's does, or one that has expired (which
// the lease reclaims, see freeReserved).
func (s *Service) reservationFree(ctx context.Context, seg *Segment, mac string, resv netip.Addr, now time.Time) (bool, error) {
	free := true
	var holder string
	var expire time.Time
	err := s.store.Query(ctx, `SELECT mac, expire_time FROM leases WHERE segment_id = $1 AND address = $2`,
		[]any{seg.ID, resv.String()}, []any{&holder, &expire}, func() error {
			free = holder == mac || !expire.After(now)
			return nil
		})
	if err != nil {
		return false, fmt.Errorf("read lease: %w", err)
	}
	return free, nil
}
