package apiserver

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startSweeper runs an expiry sweeper every interval until the test ends.
func startSweeper(t *testing.T, e *env, interval time.Duration) *expirySweeper {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testOutput(t), nil))
	s := newExpirySweeper(e.Store, interval, prometheus.NewRegistry(), logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

// addressOf is the address machine event ev shows on its only interface.
func addressOf(t *testing.T, ev *watchv1.WatchResponse) string {
	t.Helper()
	ifs := ev.GetMachine().GetInterfaces()
	if len(ifs) != 1 {
		t.Fatalf("machine %s has %d interfaces, want 1", ev.GetId(), len(ifs))
	}
	return ifs[0].GetAddress()
}

// TestLeaseExpiryIsAChange: a lease that expires by the clock puts its
// machine in the change log, once, within the sweep interval; a renewal
// makes its next expiry count again; a release and a decline record the
// change themselves.
func TestLeaseExpiryIsAChange(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		const interval = 100 * time.Millisecond
		sweeper := startSweeper(t, e, interval)
		seg := createSegment(t, e, rack1())
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: "n1", Macs: []string{testMAC(1)}})
		first := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(1)})

		w := openWatch(t, e, &watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{machineKind}})
		evs := w.expect(t, event{Type: existingEv, Kind: machineKind, ID: m.GetId()}, event{Type: syncedEv})
		if got := addressOf(t, evs[0]); got != first.GetAddress() {
			t.Fatalf("snapshot shows address %q, want %q", got, first.GetAddress())
		}

		// The lease runs out a moment from now, with no write at expiry.
		expiry := time.Now().Add(500 * time.Millisecond)
		expireLease(t, e, seg.GetId(), testMAC(1), expiry)
		ev := w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]
		if got := addressOf(t, ev); got != "" {
			t.Errorf("after expiry the machine shows address %q, want none", got)
		}
		if time.Now().Before(expiry) {
			t.Errorf("the expiry was reported before the lease expired at %s", expiry)
		}
		// The counter moves once the transaction committed, just after
		// the watch may have shown it.
		for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(sweeper.noted) != 1 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := testutil.ToFloat64(sweeper.noted); n != 1 {
			t.Errorf("carbide_lease_expiries_noted_total = %v, want 1", n)
		}

		// Renewed, the address shows again; its next expiry is noted too.
		again := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(1)})
		ev = w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]
		if got := addressOf(t, ev); got != again.GetAddress() {
			t.Errorf("after renewal the machine shows address %q, want %q", got, again.GetAddress())
		}
		expireLease(t, e, seg.GetId(), testMAC(1), time.Now().Add(-time.Second))
		ev = w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]
		if got := addressOf(t, ev); got != "" {
			t.Errorf("after the second expiry the machine shows address %q, want none", got)
		}

		// A release records the change at once; the sweeper adds none.
		third := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(1)})
		if got := addressOf(t, w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]); got != third.GetAddress() {
			t.Errorf("after a new lease the machine shows address %q, want %q", got, third.GetAddress())
		}
		release(t, e, seg.GetId(), testMAC(1))
		if got := addressOf(t, w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]); got != "" {
			t.Errorf("after release the machine shows address %q, want none", got)
		}

		// So does a decline.
		fourth := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(1)})
		if got := addressOf(t, w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]); got != fourth.GetAddress() {
			t.Errorf("after a new lease the machine shows address %q, want %q", got, fourth.GetAddress())
		}
		if _, err := e.as(t, "dhcp").DHCP.Decline(t.Context(), connect.NewRequest(&dhcpv1.DeclineRequest{Mac: testMAC(1), Address: fourth.GetAddress()})); err != nil {
			t.Fatalf("Decline: %v", err)
		}
		if got := addressOf(t, w.expect(t, event{Type: updatedEv, Kind: machineKind, ID: m.GetId()})[0]); got != "" {
			t.Errorf("after decline the machine shows address %q, want none", got)
		}

		// Several sweeps later, nothing more was noted: the two clock
		// expiries only.
		time.Sleep(5 * interval)
		if n := testutil.ToFloat64(sweeper.noted); n != 2 {
			t.Errorf("carbide_lease_expiries_noted_total = %v, want 2 (the release and decline record their own change)", n)
		}
	})
}

// TestLeaseExpiryReplicas: sweepers of several replicas at once note each
// expiry exactly once.
func TestLeaseExpiryReplicas(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		const leases = 8
		for i := range leases {
			createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(i)}})
			allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(i)})
			expireLease(t, e, seg.GetId(), testMAC(i), time.Now().Add(-time.Minute))
		}
		logger := slog.New(slog.NewTextHandler(testOutput(t), nil))
		sweepers := make([]*expirySweeper, 4)
		done := make(chan struct{})
		for i := range sweepers {
			sweepers[i] = newExpirySweeper(e.Store, time.Second, prometheus.NewRegistry(), logger)
			go func() {
				defer func() { done <- struct{}{} }()
				for range 5 {
					sweepers[i].once(t.Context())
				}
			}()
		}
		for range sweepers {
			<-done
		}
		var total float64
		for _, s := range sweepers {
			total += testutil.ToFloat64(s.noted)
		}
		if total != leases {
			t.Errorf("the replicas noted %v expiries in all, want %d, one per lease", total, leases)
		}
	})
}
