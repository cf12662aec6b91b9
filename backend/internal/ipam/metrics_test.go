package ipam_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPoolMetrics leases addresses through the allocator on both stores
// and checks what a scrape reports: the leasable addresses of the ranges
// (less the gateway and a reservation inside them), and the unexpired
// dynamic leases on them, not the expired one, the reserved one or one
// outside the ranges.
func TestPoolMetrics(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"postgres", "embedded"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := store.Config{DataDir: t.TempDir()}
			if kind == "postgres" {
				cfg.DatabaseURL = pgtest.Database(t)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			st, err := store.Open(ctx, cfg, logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })

			// 10.0.0.1-20 holds the gateway and the reservation: 18
			// leasable; 10.0.0.100-109: 10 more.
			seg, err := st.Client.Segment.Create().SetName("rack1").SetPrefix("10.0.0.0/24").SetGateway("10.0.0.1").
				SetRanges([]schema.AddressRange{{Start: "10.0.0.1", End: "10.0.0.20"}, {Start: "10.0.0.100", End: "10.0.0.109"}}).
				Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Client.Reservation.Create().SetSegmentID(seg.ID).SetMAC("02:00:00:00:00:aa").SetAddress("10.0.0.5").Save(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Client.Segment.Create().SetName("empty").SetPrefix("10.1.0.0/24").Save(ctx); err != nil {
				t.Fatal(err)
			}

			svc := ipam.NewService(st)
			macs := []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:04", "02:00:00:00:00:aa"}
			for _, mac := range macs {
				if _, err := svc.Allocate(ctx, ipam.Request{Segment: seg.ID, MAC: mac, Duration: time.Hour}); err != nil {
					t.Fatalf("allocate for %s: %v", mac, err)
				}
			}
			// One lease expires; one lies outside the ranges (written
			// before they shrank, say).
			past := store.Now().Add(-time.Minute)
			if n, err := st.Client.Lease.Update().Where(lease.MAC(macs[0])).SetExpireTime(past).Save(ctx); err != nil || n != 1 {
				t.Fatalf("expire the lease of %s: %d updated, %v", macs[0], n, err)
			}
			if _, err := st.Client.Lease.Create().SetSegmentID(seg.ID).SetMAC("02:00:00:00:00:05").SetAddress("10.0.0.50").
				SetExpireTime(store.Now().Add(time.Hour)).Save(ctx); err != nil {
				t.Fatal(err)
			}

			reg := prometheus.NewPedanticRegistry()
			pools := ipam.NewPoolMetrics(svc, logger)
			reg.MustRegister(pools)
			if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
				t.Errorf("before the first read: %d series (%v), want none", n, err)
			}
			if err := pools.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			want := `
# HELP carbide_ipam_pool_addresses Addresses of the segment's ranges that may be leased dynamically: the ranges less the network, broadcast and gateway addresses and the reservations.
# TYPE carbide_ipam_pool_addresses gauge
carbide_ipam_pool_addresses{segment="empty"} 0
carbide_ipam_pool_addresses{segment="rack1"} 28
# HELP carbide_ipam_pool_leased Unexpired dynamic leases on the segment's leasable addresses (reserved leases not counted).
# TYPE carbide_ipam_pool_leased gauge
carbide_ipam_pool_leased{segment="empty"} 0
carbide_ipam_pool_leased{segment="rack1"} 3
`
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestPoolMetricsKeepLastRead checks that a read that fails (the
// database closed) returns its error and leaves the figures of the last
// read that succeeded, and that Run ends with its context.
func TestPoolMetricsKeepLastRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client.Segment.Create().SetName("rack2").SetPrefix("10.2.0.0/24").
		SetRanges([]schema.AddressRange{{Start: "10.2.0.10", End: "10.2.0.19"}}).Save(ctx); err != nil {
		t.Fatal(err)
	}
	pools := ipam.NewPoolMetrics(ipam.NewService(st), logger)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(pools)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		pools.Run(runCtx, time.Hour)
		close(done)
	}()
	want := `
# HELP carbide_ipam_pool_addresses Addresses of the segment's ranges that may be leased dynamically: the ranges less the network, broadcast and gateway addresses and the reservations.
# TYPE carbide_ipam_pool_addresses gauge
carbide_ipam_pool_addresses{segment="rack2"} 10
`
	deadline := time.Now().Add(10 * time.Second)
	for testutil.GatherAndCompare(reg, strings.NewReader(want), "carbide_ipam_pool_addresses") != nil {
		if time.Now().After(deadline) {
			t.Fatal("Run did not read the pools at once")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done

	st.Close()
	if err := pools.Refresh(ctx); err == nil {
		t.Error("Refresh with the database closed returned no error")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "carbide_ipam_pool_addresses"); err != nil {
		t.Errorf("after a failed read: %v", err)
	}
}
