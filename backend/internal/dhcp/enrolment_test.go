package dhcp

import (
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/ent"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestEnrolLimiter(t *testing.T) {
	t.Parallel()
	l, err := newEnrolLimiter(EnrolLimit{Rate: 2, Burst: 3}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := &ipam.Segment{Segment: &ent.Segment{ID: uuid.New(), Name: "a"}}
	b := &ipam.Segment{Segment: &ent.Segment{ID: uuid.New(), Name: "b"}}
	relay1, relay2 := &dhcpv1.Origin{RelayAddress: "192.0.2.1"}, &dhcpv1.Origin{RelayAddress: "192.0.2.2"}
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		at     time.Duration
		seg    *ipam.Segment
		origin *dhcpv1.Origin
		ask    int
		want   int
	}{
		{0, a, relay1, 5, 3},                          // the burst
		{0, a, relay1, 1, 0},                          // spent
		{0, a, relay2, 2, 2},                          // another relay has its own
		{0, b, relay1, 3, 3},                          // another segment too
		{250 * time.Millisecond, a, relay1, 1, 0},     // half a token
		{500 * time.Millisecond, a, relay1, 2, 1},     // one token: rate 2/s
		{10 * time.Second, a, relay1, 10, 3},          // refills to the burst, no more
		{10 * time.Second, a, &dhcpv1.Origin{}, 4, 3}, // the daemon's own link is one relay
	}
	refused := 0
	for i, s := range steps {
		if got := l.takeAt(t0.Add(s.at), s.seg, s.origin, s.ask); got != s.want {
			t.Errorf("step %d: %d of %d admitted, want %d", i, got, s.ask, s.want)
		}
		if s.seg == a {
			refused += s.ask - s.want
		}
	}
	if got := testutil.ToFloat64(l.refused.WithLabelValues("a")); got != float64(refused) {
		t.Errorf("refused on segment a: metric %v, want %d", got, refused)
	}

	unlimited, err := newEnrolLimiter(EnrolLimit{}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if got := unlimited.takeAt(t0, a, relay1, 1000); got != 1000 {
		t.Errorf("rate 0 admitted %d of 1000, want all", got)
	}
}

// TestEnrolLimiterForgetsFullBuckets checks that the buckets of many
// relays do not pile up: those that have refilled are dropped.
func TestEnrolLimiterForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	l, err := newEnrolLimiter(EnrolLimit{Rate: 1, Burst: 1}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	seg := &ipam.Segment{Segment: &ent.Segment{ID: uuid.New(), Name: "a"}}
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for range maxBuckets {
		l.takeAt(t0, seg, &dhcpv1.Origin{RelayAddress: uuid.NewString()}, 1)
	}
	l.takeAt(t0.Add(time.Minute), seg, &dhcpv1.Origin{RelayAddress: "192.0.2.1"}, 1)
	if n := len(l.buckets); n != 1 {
		t.Errorf("%d buckets after the others refilled, want 1", n)
	}
}

// allows answers what take would without taking anything.
func TestEnrolLimiterAllows(t *testing.T) {
	t.Parallel()
	l, err := newEnrolLimiter(EnrolLimit{Rate: 1, Burst: 2}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	seg := &ipam.Segment{Segment: &ent.Segment{ID: uuid.New(), Name: "s"}}
	o := &dhcpv1.Origin{RelayAddress: "192.0.2.1"}
	now := time.Now()
	for range 3 {
		if !l.allowsAt(now, seg, o) {
			t.Fatal("a fresh bucket refused")
		}
	}
	if n := l.takeAt(now, seg, o, 3); n != 2 {
		t.Fatalf("took %d of 3 after asking, want the burst, 2", n)
	}
	if l.allowsAt(now, seg, o) {
		t.Error("an empty bucket allowed an enrolment")
	}
	if !l.allowsAt(now.Add(time.Second), seg, o) {
		t.Error("a bucket refilled by one token refused")
	}
}
