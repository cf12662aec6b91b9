package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/store"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/uuid"
)

// The segment of BenchmarkAllocateFullSegment: a /16 whose one range holds
// all of it but the network, gateway and broadcast addresses.
const (
	fullPrefix     = "10.0.0.0/16"
	fullGateway    = "10.0.0.1"
	fullRangeStart = "10.0.0.2"
	fullRangeEnd   = "10.0.255.254"
)

// BenchmarkAllocateFullSegment measures AllocateAddress for new MACs on a
// /16 (65,533 leasable addresses) that already holds leases on 10, 50, 90
// and 99% of them, placed where allocation would have put them (each
// filling MAC takes the first free address of its pool walk). Near full,
// most new MACs find all the candidates they look at first taken, and
// allocation searches on from there. b.N calls from one client, one after
// the other; keep b.N small next to the free addresses (-benchtime 20x) so
// that the fill level stays what the name says.
func BenchmarkAllocateFullSegment(b *testing.B) {
	for _, kind := range stores {
		for _, fill := range []int{10, 50, 90, 99} {
			b.Run(fmt.Sprintf("store=%s/fill=%d", kind, fill), func(b *testing.B) {
				e := newEnv(b, kind, "grpc")
				resp, err := e.Segments.CreateSegment(context.Background(), connect.NewRequest(&networkv1.CreateSegmentRequest{
					Segment: &networkv1.Segment{Name: "full", Prefix: fullPrefix, Gateway: fullGateway,
						Ranges: []*networkv1.AddressRange{{Start: fullRangeStart, End: fullRangeEnd}}},
				}))
				if err != nil {
					b.Fatalf("CreateSegment: %v", err)
				}
				seg := resp.Msg.GetSegment().GetId()
				pool := &ipam.Pool{
					Prefix:  netip.MustParsePrefix(fullPrefix),
					Gateway: netip.MustParseAddr(fullGateway),
					Ranges:  []ipam.Range{{Start: netip.MustParseAddr(fullRangeStart), End: netip.MustParseAddr(fullRangeEnd)}},
				}
				leased := int(pool.Size()) * fill / 100
				if free := int(pool.Size()) - leased; b.N > free/4 {
					b.Fatalf("b.N = %d would change the fill level: the segment has %d free addresses; run with -benchtime Nx, N <= %d", b.N, free, free/4)
				}
				fillByWalk(b, e, uuid.MustParse(seg), pool, leased)
				c := dhcpClient(b, e, seg)
				warmPool(b, e, 1)
				ctx := context.Background()
				lat := make([]time.Duration, b.N)
				stats := leaseStatements(b, e)
				self0, _ := cpuNow(b)
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					mac := fmt.Sprintf("02:ee:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
					if _, err := c.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: seg, Mac: mac})); err != nil {
						b.Fatalf("AllocateAddress: %v", err)
					}
					lat[i] = time.Since(start)
				}
				b.StopTimer()
				self1, _ := cpuNow(b)
				reportRate(b, "allocations/s", lat)
				b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N)/1000, "api-cpu-ms/op")
				stats.report(b)
			})
		}
	}
}

// fillByWalk writes n leases on segment seg with one INSERT: the i-th for
// MAC 02:dd:<i> on the first address of its walk that an earlier one did
// not take, as allocation would have placed them.
func fillByWalk(b *testing.B, e *env, seg uuid.UUID, pool *ipam.Pool, n int) {
	b.Helper()
	taken := make(map[netip.Addr]bool, n)
	var q strings.Builder
	q.WriteString(`INSERT INTO leases (segment_id, mac, address, address_num, reserved, create_time, renew_time, expire_time) VALUES `)
	for i := range n {
		mac := fmt.Sprintf("02:dd:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
		for a := range pool.Walk(mac) {
			if taken[a] {
				continue
			}
			taken[a] = true
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "($1, '%s', '%s', %d, false, $2, $2, $3)", mac, a, store.AddressNum(a))
			break
		}
	}
	now := store.Now()
	if _, err := e.Store.DB().ExecContext(context.Background(), e.Store.SQL(q.String()), seg, now, now.Add(24*time.Hour)); err != nil {
		b.Fatalf("fill the segment: %v", err)
	}
	// The table as autovacuum leaves it after such an insert on a server
	// that has been running: statistics, and (PostgreSQL) the visibility
	// map that lets index-only scans skip the table.
	maintain := "ANALYZE"
	if e.Store.Dialect == dialect.Postgres {
		maintain = "VACUUM ANALYZE leases"
	}
	if _, err := e.Store.DB().ExecContext(context.Background(), maintain); err != nil {
		b.Fatalf("%s: %v", maintain, err)
	}
}

// leaseStats reads what PostgreSQL's pg_stat_statements counts for the
// statements that name the leases table, when the server loads it
// (shared_preload_libraries=pg_stat_statements): figures that, unlike
// time, do not depend on what else the machine is doing.
type leaseStats struct {
	e *env
}

// leaseStatements resets the statement statistics of e's database and
// returns a reader for them, or nil on the embedded store or when the
// server does not load pg_stat_statements (which it logs).
func leaseStatements(b *testing.B, e *env) *leaseStats {
	b.Helper()
	if e.Store.Dialect != dialect.Postgres {
		return nil
	}
	ctx := context.Background()
	if _, err := e.Store.DB().ExecContext(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		b.Logf("no statement statistics: %v", err)
		return nil
	}
	if _, err := e.Store.DB().ExecContext(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		b.Logf("no statement statistics (start the server with shared_preload_libraries=pg_stat_statements): %v", err)
		return nil
	}
	return &leaseStats{e: e}
}

// report adds per-call figures of the statements on leases since the
// reset: statements run, rows they returned or wrote, and the shared
// buffer pages they touched (hit or read).
func (s *leaseStats) report(b *testing.B) {
	if s == nil {
		return
	}
	var calls, rows, blocks float64
	err := s.e.Store.DB().QueryRowContext(context.Background(), `SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0),
		coalesce(sum(shared_blks_hit + shared_blks_read), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query ILIKE '%leases%'`).Scan(&calls, &rows, &blocks)
	if err != nil {
		b.Fatalf("read pg_stat_statements: %v", err)
	}
	n := float64(b.N)
	b.ReportMetric(calls/n, "lease-stmts/op")
	b.ReportMetric(rows/n, "lease-rows/op")
	b.ReportMetric(blocks/n, "lease-pages/op")
}
