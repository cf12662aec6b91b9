package store_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/segment"
	"github.com/google/uuid"
)

// TestChain checks, on both stores, that a chain writes rows that
// reference rows an earlier statement of it writes, with each statement's
// parameters numbered from $1, returns the rows of its last statement, and
// that a failing statement writes nothing at all.
func TestChain(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T) *store.Store{
		"postgres": openPostgres,
		"embedded": func(t *testing.T) *store.Store {
			st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			ctx := t.Context()
			now := store.Now()
			newSegment := func(id uuid.UUID, name, prefix string) store.Stmt {
				return store.Stmt{SQL: `INSERT INTO segments (id, name, prefix, gateway, dns_servers, domain, mtu, ranges,
					relay_addresses, ntp_servers, lease_seconds, create_time, update_time)
					VALUES ($1, $2, $3, '', '[]', '', 1500, '[]', '[]', '[]', 3600, $4, $4)`,
					Args: []any{id, name, prefix, now}}
			}
			lease := func(seg uuid.UUID, mac, addr string) store.Stmt {
				return store.Stmt{SQL: `INSERT INTO leases (segment_id, mac, address, address_num, reserved, create_time, renew_time, expire_time)
					VALUES ($1, $2, $3, 0, false, $4, $4, $4) RETURNING address`, Args: []any{seg, mac, addr, now}}
			}
			a, b := uuid.New(), uuid.New()
			var got []string
			var addr string
			err := st.InTx(ctx, func(tx *ent.Tx) error {
				return st.Chain(ctx, tx, []store.Stmt{
					newSegment(a, "a", "10.1.0.0/24"),
					newSegment(b, "b", "10.2.0.0/24"),
					lease(b, "52:54:00:00:00:01", "10.2.0.9"),
				}, []any{&addr}, func() error { got = append(got, addr); return nil })
			})
			if err != nil {
				t.Fatalf("Chain: %v", err)
			}
			if len(got) != 1 || got[0] != "10.2.0.9" {
				t.Errorf("rows of the last statement = %v, want [10.2.0.9]", got)
			}
			if n := st.Client.Segment.Query().CountX(ctx); n != 2 {
				t.Errorf("%d segments, want 2", n)
			}
			if l := st.Client.Lease.Query().OnlyX(ctx); l.SegmentID != b || l.MAC != "52:54:00:00:00:01" || !l.CreateTime.Equal(now) {
				t.Errorf("lease = %+v", l)
			}

			// The second segment's name is taken: nothing is written.
			c := uuid.New()
			err = st.InTx(ctx, func(tx *ent.Tx) error {
				return st.Chain(ctx, tx, []store.Stmt{newSegment(c, "c", "10.3.0.0/24"), newSegment(uuid.New(), "a", "10.4.0.0/24")}, nil, nil)
			})
			if err == nil {
				t.Fatal("Chain with a duplicate segment name succeeded")
			}
			if st.Client.Segment.Query().Where(segment.ID(c)).ExistX(ctx) {
				t.Error("the failed chain wrote its first statement's row")
			}
		})
	}
}
