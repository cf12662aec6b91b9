package apiserver

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/google/uuid"
)

// The benchmark segment: a /16 whose single range holds benchPoolSize
// addresses, so that no benchmark run exhausts it.
const (
	benchPrefix     = "10.0.0.0/16"
	benchGateway    = "10.0.0.1"
	benchRangeStart = "10.0.1.0"
	benchRangeEnd   = "10.0.240.255"
	benchPoolSize   = 240 * 256
)

// benchClients are the numbers of concurrent callers each benchmark runs with.
var benchClients = []int{1, 8, 64}

// BenchmarkAllocate measures AllocateAddress for MACs that have no lease
// yet: b.N calls for b.N distinct MACs on a fresh segment, spread over the
// given number of goroutines that share one gRPC client (one HTTP/2
// connection over TLS, with the DHCP daemon's certificate) to an in-process
// API server. Because every allocation adds a lease, the segment holds
// between 0 and b.N leases during the run, and a new allocation's cost
// grows with that number: keep -benchtime fixed (Nx) when comparing figures.
func BenchmarkAllocate(b *testing.B) {
	for _, kind := range stores {
		for _, clients := range benchClients {
			b.Run(fmt.Sprintf("store=%s/clients=%d", kind, clients), func(b *testing.B) {
				if b.N > benchPoolSize {
					b.Fatalf("b.N = %d exceeds the %d addresses of the benchmark segment; run with -benchtime Nx, N <= %d", b.N, benchPoolSize, benchPoolSize)
				}
				e := newEnv(b, kind, "grpc")
				seg := createBenchSegment(b, e)
				dhcp := dhcpClient(b, e, seg)
				warmPool(b, e, clients)
				b.ResetTimer()
				leases, lat := runCalls(b, dhcp, seg, clients, b.N, benchMAC)
				b.StopTimer()
				reportRate(b, "allocations/s", lat)
				checkAllocated(b, e, seg, leases)
			})
		}
	}
}

// BenchmarkRenew measures AllocateAddress for MACs that already hold a
// lease (the renewal path: the same address comes back with a new expiry).
// min(b.N, benchPoolSize) leases are put in the store before the timer
// starts; b.N calls then renew them in turn.
func BenchmarkRenew(b *testing.B) {
	for _, kind := range stores {
		for _, clients := range benchClients {
			b.Run(fmt.Sprintf("store=%s/clients=%d", kind, clients), func(b *testing.B) {
				e := newEnv(b, kind, "grpc")
				seg := createBenchSegment(b, e)
				held := seedLeases(b, e, seg, min(b.N, benchPoolSize))
				mac := func(i int) string { return benchMAC(i % len(held)) }
				dhcp := dhcpClient(b, e, seg)
				warmPool(b, e, clients)
				b.ResetTimer()
				leases, lat := runCalls(b, dhcp, seg, clients, b.N, mac)
				b.StopTimer()
				reportRate(b, "renewals/s", lat)
				checkRenewed(b, held, leases)
			})
		}
	}
}

// createBenchSegment creates the benchmark segment and returns its id.
func createBenchSegment(b *testing.B, e *env) string {
	b.Helper()
	resp, err := e.Segments.CreateSegment(context.Background(), connect.NewRequest(&networkv1.CreateSegmentRequest{
		Segment: &networkv1.Segment{
			Name:    "bench",
			Prefix:  benchPrefix,
			Gateway: benchGateway,
			Ranges:  []*networkv1.AddressRange{{Start: benchRangeStart, End: benchRangeEnd}},
		},
	}))
	if err != nil {
		b.Fatalf("CreateSegment: %v", err)
	}
	return resp.Msg.GetSegment().GetId()
}

// dhcpClient returns an AddressService client that presents the DHCP
// daemon's certificate, the identity that allocates addresses in
// production, with its TLS connection to the server already open.
func dhcpClient(b *testing.B, e *env, seg string) networkv1connect.AddressServiceClient {
	b.Helper()
	c := e.as(b, "dhcp").Address
	if _, err := c.ListLeases(context.Background(), connect.NewRequest(&networkv1.ListLeasesRequest{SegmentId: seg, PageSize: 1})); err != nil {
		b.Fatalf("ListLeases as dhcp: %v", err)
	}
	return c
}

// warmPool opens the database connections that clients concurrent calls
// can use (at most the pool's limit) before the timer starts, as they would
// be open in a server that has been running for a while.
func warmPool(b *testing.B, e *env, clients int) {
	b.Helper()
	ctx := context.Background()
	db := e.Store.DB()
	n := min(clients, db.Stats().MaxOpenConnections)
	conns := make([]*sql.Conn, 0, n)
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatalf("open database connection: %v", err)
		}
		if err := c.PingContext(ctx); err != nil {
			b.Fatalf("ping database: %v", err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			b.Fatalf("return database connection: %v", err)
		}
	}
}

// benchMAC is the i-th MAC of a benchmark (locally administered, distinct
// for every i below 2^32).
func benchMAC(i int) string {
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// runCalls makes n AllocateAddress calls on segment seg, for MACs mac(0)
// ... mac(n-1), from the given number of goroutines. It returns each call's
// lease and latency, indexed by i, and fails b if any call failed.
func runCalls(b *testing.B, client networkv1connect.AddressServiceClient, seg string, clients, n int, mac func(int) string) ([]*networkv1.Lease, []time.Duration) {
	b.Helper()
	ctx := context.Background()
	leases := make([]*networkv1.Lease, n)
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		failures atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				start := time.Now()
				resp, err := client.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{
					SegmentId: seg,
					Mac:       mac(i),
				}))
				lat[i] = time.Since(start)
				if err != nil {
					failures.Add(1)
					errOnce.Do(func() { firstErr = fmt.Errorf("AllocateAddress(%s): %w", mac(i), err) })
					continue
				}
				leases[i] = resp.Msg.GetLease()
			}
		})
	}
	wg.Wait()
	if f := failures.Load(); f > 0 {
		b.Fatalf("%d of %d calls failed; first: %v", f, n, firstErr)
	}
	return leases, lat
}

// reportRate reports calls per second under unit, and the mean, median and
// 99th percentile latency of one call.
func reportRate(b *testing.B, unit string, lat []time.Duration) {
	b.Helper()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(sum)/float64(len(sorted)), "mean-ms")
	b.ReportMetric(ms(sorted[len(sorted)/2]), "p50-ms")
	b.ReportMetric(ms(sorted[len(sorted)*99/100]), "p99-ms")
}

// checkAllocated fails b unless every lease went to the MAC that asked for
// it, lies in the range, and no address was handed out twice, and the store
// holds exactly one lease per call.
func checkAllocated(b *testing.B, e *env, seg string, leases []*networkv1.Lease) {
	b.Helper()
	lo, hi := netip.MustParseAddr(benchRangeStart), netip.MustParseAddr(benchRangeEnd)
	seen := make(map[string]string, len(leases))
	for i, l := range leases {
		a, err := netip.ParseAddr(l.GetAddress())
		switch {
		case l.GetMac() != benchMAC(i):
			b.Fatalf("call %d: lease for %s, want %s", i, l.GetMac(), benchMAC(i))
		case err != nil || a.Compare(lo) < 0 || a.Compare(hi) > 0:
			b.Fatalf("call %d: address %q outside %s-%s", i, l.GetAddress(), benchRangeStart, benchRangeEnd)
		case seen[l.GetAddress()] != "":
			b.Fatalf("address %s leased to both %s and %s", l.GetAddress(), seen[l.GetAddress()], l.GetMac())
		}
		seen[l.GetAddress()] = l.GetMac()
	}
	n, err := e.Store.Client.Lease.Query().Where(lease.SegmentID(uuid.MustParse(seg))).Count(context.Background())
	if err != nil {
		b.Fatalf("count leases: %v", err)
	}
	if n != len(leases) {
		b.Fatalf("segment holds %d leases after %d allocations", n, len(leases))
	}
}

// seedLeases stores n unexpired leases on segment seg, for MACs
// benchMAC(0) ... benchMAC(n-1) on consecutive addresses from the start of
// the range, and returns their addresses.
func seedLeases(b *testing.B, e *env, seg string, n int) []string {
	b.Helper()
	ctx := context.Background()
	segID := uuid.MustParse(seg)
	now := store.Now()
	addrs := make([]string, n)
	a := netip.MustParseAddr(benchRangeStart)
	for i := range addrs {
		addrs[i] = a.String()
		a = a.Next()
	}
	const batch = 1000
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		creates := make([]*ent.LeaseCreate, 0, hi-lo)
		for i := lo; i < hi; i++ {
			creates = append(creates, e.Store.Client.Lease.Create().
				SetSegmentID(segID).SetMAC(benchMAC(i)).SetAddress(addrs[i]).
				SetCreateTime(now).SetRenewTime(now).SetExpireTime(now.Add(time.Hour)))
		}
		if err := e.Store.Client.Lease.CreateBulk(creates...).Exec(ctx); err != nil {
			b.Fatalf("seed leases: %v", err)
		}
	}
	return addrs
}

// checkRenewed fails b unless every call renewed the lease its MAC held:
// the same address, with a renew time after the seeded create time.
func checkRenewed(b *testing.B, held []string, leases []*networkv1.Lease) {
	b.Helper()
	for i, l := range leases {
		j := i % len(held)
		if l.GetMac() != benchMAC(j) || l.GetAddress() != held[j] {
			b.Fatalf("call %d: got %s for %s, want the held lease %s for %s", i, l.GetAddress(), l.GetMac(), held[j], benchMAC(j))
		}
		if !l.GetRenewTime().AsTime().After(l.GetCreateTime().AsTime()) {
			b.Fatalf("call %d: lease of %s not renewed: renew_time %s, create_time %s", i, l.GetMac(),
				l.GetRenewTime().AsTime(), l.GetCreateTime().AsTime())
		}
	}
}
