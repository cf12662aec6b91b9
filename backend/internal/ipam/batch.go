package ipam

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"entgo.io/ent/dialect/sql/sqlgraph"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
)

// NewLease asks for a lease for a MAC that holds none on the segment.
type NewLease struct {
	MAC string
	// Requested is the address the client asked for, or "".
	Requested string
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
			if _, dup := chosen[a]; dup || taken[a] {
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
		l, err := s.leaseNew(ctx, tx, seg, r.MAC, r.Requested)
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
// meanwhile) is errRace.
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
	case sqlgraph.IsUniqueConstraintError(err):
		return errRace
	default:
		return fmt.Errorf("write leases: %w", err)
	}
}
