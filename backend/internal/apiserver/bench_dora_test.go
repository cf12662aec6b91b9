package apiserver

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
)

// BenchmarkLeaseDORA measures what one DORA exchange of a new client costs
// the API: a Lease call with offer as for a DISCOVER (it writes nothing),
// then one asking for the offered address as for the REQUEST (which
// enrols the client and leases it), made by the DHCP daemon's identity. Besides
// rates and CPU it reports what pg_stat_statements counts per DORA, which
// does not depend on what else the machine is doing: statements, the
// writes among them (INSERT, UPDATE, DELETE) and commits.
func BenchmarkLeaseDORA(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			if b.N > benchPoolSize {
				b.Fatalf("b.N = %d exceeds the pool", b.N)
			}
			var opts envOptions
			var stats *sql.DB
			opts.databaseURL, stats = statementStats(b)
			e := newEnvWith(b, "postgres", "grpc", opts)
			createBenchSegment(b, e)
			c := e.as(b, "dhcp").DHCP
			warmPool(b, e, clients)
			if _, err := stats.ExecContext(context.Background(), "SELECT pg_stat_statements_reset()"); err != nil {
				b.Fatal(err)
			}
			origin := &dhcpv1.Origin{RelayAddress: benchGateway}
			ctx := context.Background()
			var next atomic.Int64
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			self0, pg0 := cpuNow(b)
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= b.N {
							return
						}
						start := time.Now()
						mac := benchMAC(i)
						offer, err := c.Lease(ctx, connect.NewRequest(&dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true}))
						if err != nil {
							b.Error(err)
							continue
						}
						if _, err := c.Lease(ctx, connect.NewRequest(&dhcpv1.LeaseRequest{Mac: mac, Origin: origin, RequestedAddress: offer.Msg.GetAddress()})); err != nil {
							b.Error(err)
						}
						lat[i] = time.Since(start)
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			self1, pg1 := cpuNow(b)
			reportRate(b, "dora/s", lat)
			b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N)/1000, "api-cpu-ms/dora")
			b.ReportMetric(float64((pg1-pg0).Microseconds())/float64(b.N)/1000, "pg-cpu-ms/dora")
			reportStatements(b, stats, "dora")
		})
	}
}

// cpuNow returns the CPU time this process has used, and that of every
// postgres process on the machine.
func cpuNow(b *testing.B) (self, pg time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(raw)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || s[open+1:close] != "postgres" {
			continue
		}
		fields := strings.Fields(s[close+2:])
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		pg += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return self, pg
}

// reportStatements reports the statements pg_stat_statements counted in
// this database since its reset, per b.N operations (op names them): all
// of them, the writes, and the commits.
func reportStatements(b *testing.B, stats *sql.DB, op string) {
	var all, writes, commits float64
	err := stats.QueryRowContext(context.Background(), `SELECT coalesce(sum(calls), 0),
		coalesce(sum(calls) FILTER (WHERE query ~* '^\s*(INSERT|UPDATE|DELETE)'), 0),
		coalesce(sum(calls) FILTER (WHERE query ~* '^\s*COMMIT'), 0)
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND query NOT LIKE '%pg_stat_statements%'`).Scan(&all, &writes, &commits)
	if err != nil {
		b.Fatalf("read pg_stat_statements: %v", err)
	}
	n := float64(b.N)
	b.ReportMetric(all/n, "stmts/"+op)
	b.ReportMetric(writes/n, "writes/"+op)
	b.ReportMetric(commits/n, "commits/"+op)
}

// BenchmarkLeaseRenew measures what a renewal (a REQUEST of a client in
// RENEWING state, which sets extend) costs the API, for clients holding
// leases already: one Lease call per renewal (batch=1), as a quiet DHCP
// daemon sends them, or LeaseBatch calls of 128, as a busy one does.
func BenchmarkLeaseRenew(b *testing.B) {
	const clients = 256
	for _, size := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var opts envOptions
			var stats *sql.DB
			opts.databaseURL, stats = statementStats(b)
			e := newEnvWith(b, "postgres", "grpc", opts)
			createBenchSegment(b, e)
			c := e.as(b, "dhcp").DHCP
			origin := &dhcpv1.Origin{RelayAddress: benchGateway}
			ctx := context.Background()
			reqs := make([]*dhcpv1.LeaseRequest, clients)
			for i := range reqs {
				reqs[i] = &dhcpv1.LeaseRequest{Mac: benchMAC(i), Origin: origin}
			}
			for i := 0; i < clients; i += 128 {
				if _, err := c.LeaseBatch(ctx, connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: reqs[i : i+128]})); err != nil {
					b.Fatal(err)
				}
			}
			for _, r := range reqs {
				r.Extend = true
			}
			if _, err := stats.ExecContext(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i += size {
				batch := make([]*dhcpv1.LeaseRequest, 0, size)
				for k := i; k < min(i+size, b.N); k++ {
					batch = append(batch, reqs[k%clients])
				}
				if size == 1 {
					if _, err := c.Lease(ctx, connect.NewRequest(batch[0])); err != nil {
						b.Fatal(err)
					}
					continue
				}
				resp, err := c.LeaseBatch(ctx, connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: batch}))
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range resp.Msg.GetResults() {
					if r.GetLease() == nil {
						b.Fatalf("renewal: %v", r.GetError())
					}
				}
			}
			b.StopTimer()
			reportStatements(b, stats, "renewal")
		})
	}
}
