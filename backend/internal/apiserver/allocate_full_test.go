package apiserver

import (
	"database/sql"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/uuid"
)

// TestAllocateInNearlyFullSegment fills a segment of 4,094 addresses
// until the candidates a new MAC looks at first are all taken, so that
// allocation has to search the rest of the pool. It checks what the search
// finds (the first free address of the MAC's walk, past a declined and an
// unleased reserved address; then, with every address leased, the one
// whose lease expired longest ago) and, on PostgreSQL, that it gets there
// reading a few lease rows rather than all of the segment's leases: the
// rows that statements touching leases returned, as pg_stat_statements
// counts them.
func TestAllocateInNearlyFullSegment(t *testing.T) {
	t.Parallel()
	forEachStoreWithStatements(t, checkFullSegmentAllocation)
}

// forEachStoreWithStatements runs fn once per store, with Connect clients;
// on PostgreSQL the server has pg_stat_statements, which stats reads (nil
// on the embedded store).
func forEachStoreWithStatements(t *testing.T, fn func(t *testing.T, e *env, stats *sql.DB)) {
	t.Helper()
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var stats *sql.DB
			var opts envOptions
			if kind == "postgres" {
				opts.databaseURL, stats = statementStats(t)
			}
			fn(t, newEnvWith(t, kind, "connect", opts), stats)
		})
	}
}

// statementStats starts a PostgreSQL cluster that loads pg_stat_statements
// and returns the URL of a database on it, and a connection to that
// database for reading the statistics.
func statementStats(t testing.TB) (string, *sql.DB) {
	t.Helper()
	cluster, err := pgtest.StartCluster(t.Context(), "shared_preload_libraries=pg_stat_statements")
	if err != nil {
		t.Fatalf("start PostgreSQL with pg_stat_statements: %v", err)
	}
	t.Cleanup(func() { cluster.Stop() })
	url, err := cluster.CreateDatabase(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(t.Context(), "CREATE EXTENSION pg_stat_statements"); err != nil {
		t.Fatalf("create extension pg_stat_statements: %v", err)
	}
	return url, db
}

// statementTotals returns how many times the statements whose text
// matches the SQL condition on query (such as query ILIKE '%leases%') ran
// in this database, and the shared blocks they touched, since the last
// reset.
func statementTotals(t *testing.T, stats *sql.DB, where string) (calls, blocks int64) {
	t.Helper()
	err := stats.QueryRowContext(t.Context(), `SELECT coalesce(sum(calls), 0), coalesce(sum(shared_blks_hit + shared_blks_read), 0)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND `+where).Scan(&calls, &blocks)
	if err != nil {
		t.Fatalf("read pg_stat_statements: %v", err)
	}
	return calls, blocks
}

// leaseRowsRead returns how many rows the statements that name the leases
// table returned or changed since the last call, in this database; stats
// nil (the embedded store) returns 0.
func leaseRowsRead(t *testing.T, stats *sql.DB) int64 {
	t.Helper()
	if stats == nil {
		return 0
	}
	var n int64
	err := stats.QueryRowContext(t.Context(), `SELECT coalesce(sum(rows), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query ILIKE '%leases%'`).Scan(&n)
	if err != nil {
		t.Fatalf("read pg_stat_statements: %v", err)
	}
	if _, err := stats.ExecContext(t.Context(), "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatalf("reset pg_stat_statements: %v", err)
	}
	return n
}

func checkFullSegmentAllocation(t *testing.T, e *env, stats *sql.DB) {
	ctx := t.Context()
	const mac = "02:bb:00:00:00:01"
	seg := createSegment(t, e, &networkv1.Segment{
		Name: "full", Prefix: "10.20.0.0/20", Gateway: "10.20.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.20.0.1", End: "10.20.15.254"}},
	})
	segID := uuid.MustParse(seg.GetId())
	pool := &ipam.Pool{
		Prefix:  netip.MustParsePrefix("10.20.0.0/20"),
		Gateway: netip.MustParseAddr("10.20.0.1"),
		Ranges:  []ipam.Range{{Start: netip.MustParseAddr("10.20.0.1"), End: netip.MustParseAddr("10.20.15.254")}},
	}
	// A reservation for another MAC, unleased, on an address the walk
	// passes before the first free one.
	var walk []netip.Addr
	for a := range pool.Walk(mac) {
		walk = append(walk, a)
	}
	reserved := walk[300]
	if _, err := e.Segments.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
		Segment: &networkv1.Segment{Id: seg.GetId(), Reservations: []*networkv1.Reservation{
			{Mac: "02:bb:00:00:00:ff", Address: reserved.String()}}},
		UpdateMask: mask("reservations"),
	})); err != nil {
		t.Fatalf("add reservation: %v", err)
	}
	walk = append(walk[:300:300], walk[301:]...)
	declined, free, last := walk[700], walk[1000], walk[2500]
	if err := e.Store.Client.DeclinedAddress.Create().SetSegmentID(segID).SetAddress(declined.String()).
		SetDeclinedBy("02:bb:00:00:00:fe").SetUntil(store.Now().Add(time.Hour)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var leased []netip.Addr
	for _, a := range walk {
		if a != declined && a != free && a != last {
			leased = append(leased, a)
		}
	}
	fillSegment(t, e, segID, leased, 0, store.Now().Add(time.Hour))
	leaseRowsRead(t, stats)

	// The first free address of the walk, past the reserved and the declined one.
	got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac})
	if got.GetAddress() != free.String() {
		t.Errorf("allocated %s, want %s: the first address of the walk that is neither leased, reserved nor declined", got.GetAddress(), free)
	}
	checkRowsRead(t, stats, len(leased), "finding a free address")

	// Every address leased: the lease that expired longest ago goes.
	fillSegment(t, e, segID, []netip.Addr{last}, len(leased), store.Now().Add(time.Hour))
	expireLease(t, e, seg.GetId(), fillMAC(10), time.Now().Add(-time.Hour))
	expireLease(t, e, seg.GetId(), fillMAC(20), time.Now().Add(-2*time.Hour))
	leaseRowsRead(t, stats)
	got = allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:bb:00:00:00:02"})
	if got.GetAddress() != leased[20].String() {
		t.Errorf("allocated %s with every address leased, want %s, whose lease expired longest ago", got.GetAddress(), leased[20])
	}
	checkRowsRead(t, stats, len(leased), "reclaiming an expired lease")
	got = allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:bb:00:00:00:03"})
	if got.GetAddress() != leased[10].String() {
		t.Errorf("allocated %s, want %s, the only expired lease left", got.GetAddress(), leased[10])
	}
	_, err := e.Address.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:bb:00:00:00:04"}))
	wantError(t, err, connect.CodeResourceExhausted, "full")
}

// checkRowsRead fails t if the statements on leases since the last check
// returned more rows than the first look at the MAC's 65 candidates (all
// taken), a search that returns a row per query (a few dozen queries), and
// a page of expired leases do; reading the segment's leases returns all
// of them (total).
func checkRowsRead(t *testing.T, stats *sql.DB, total int, what string) {
	t.Helper()
	const most = 200
	if n := leaseRowsRead(t, stats); n > most {
		t.Errorf("%s: statements on leases returned %d rows (the segment holds %d leases); want at most %d", what, n, total, most)
	}
}

// fillMAC is the MAC of the i-th lease fillSegment writes.
func fillMAC(i int) string {
	return fmt.Sprintf("02:cc:00:00:%02x:%02x", byte(i>>8), byte(i))
}

// fillSegment writes leases on addrs, the i-th for fillMAC(first+i),
// expiring at expire, straight into the store.
func fillSegment(t *testing.T, e *env, segID uuid.UUID, addrs []netip.Addr, first int, expire time.Time) {
	t.Helper()
	now := store.Now()
	for lo := 0; lo < len(addrs); lo += 1000 {
		hi := min(lo+1000, len(addrs))
		creates := make([]*ent.LeaseCreate, 0, hi-lo)
		for i := lo; i < hi; i++ {
			creates = append(creates, e.Store.Client.Lease.Create().SetSegmentID(segID).
				SetMAC(fillMAC(first+i)).SetAddress(addrs[i].String()).
				SetCreateTime(now).SetRenewTime(now).SetExpireTime(expire.UTC()))
		}
		if err := e.Store.Client.Lease.CreateBulk(creates...).Exec(t.Context()); err != nil {
			t.Fatalf("fill the segment: %v", err)
		}
	}
}
