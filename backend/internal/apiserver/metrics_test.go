package apiserver

import (
	"context"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// TestMetrics checks that /metrics counts RPCs by procedure and code.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "grpc")
	ctx := context.Background()
	if _, err := e.Segments.ListSegments(ctx, connect.NewRequest(&networkv1.ListSegmentsRequest{})); err != nil {
		t.Fatalf("ListSegments: %v", err)
	}
	_, err := e.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: "not-a-uuid"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("GetSegment with a bad id: %v, want InvalidArgument", err)
	}

	wantMetrics(t, e,
		`carbide_rpc_requests_total{code="ok",procedure="/carbide.network.v1.SegmentService/ListSegments"} 1`,
		`carbide_rpc_requests_total{code="invalid_argument",procedure="/carbide.network.v1.SegmentService/GetSegment"} 1`,
		`carbide_rpc_duration_seconds_count{procedure="/carbide.network.v1.SegmentService/ListSegments"} 1`,
	)
}

// scrape returns what the server's /metrics serves.
func scrape(t testing.TB, e *env) string {
	t.Helper()
	resp, err := e.HTTP.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// wantMetrics checks that the server's /metrics has each of the samples.
func wantMetrics(t *testing.T, e *env, samples ...string) {
	t.Helper()
	body := scrape(t, e)
	for _, want := range samples {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// metricValue reads one sample, such as name{label="value"}, from the
// server's /metrics.
func metricValue(t testing.TB, e *env, sample string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(scrape(t, e), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", sample, v)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", sample)
	return 0
}

// TestPoolMetricsServed checks that a running server reads the segments'
// pools in the background and serves them at /metrics: the leasable
// addresses of a segment's range (less its gateway) and its leases.
func TestPoolMetricsServed(t *testing.T) {
	t.Parallel()
	e := runEnv(t, "grpc", func(c *Config) { c.PoolMetricsInterval = 100 * time.Millisecond })
	seg := createSegment(t, e, &networkv1.Segment{
		Name: "pool-metrics", Prefix: "10.41.0.0/24", Gateway: "10.41.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.41.0.1", End: "10.41.0.20"}},
	})
	for i := range 3 {
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(i)})
	}
	want := []string{
		`carbide_ipam_pool_addresses{segment="pool-metrics"} 19`,
		`carbide_ipam_pool_leased{segment="pool-metrics"} 3`,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := scrape(t, e)
		if !slices.ContainsFunc(want, func(s string) bool { return !strings.Contains(body, s+"\n") }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never had %q; it has:\n%s", want, grepLines(body, "carbide_ipam_pool"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
