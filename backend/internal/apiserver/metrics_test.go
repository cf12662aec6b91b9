package apiserver

import (
	"context"
	"io"
	"strings"
	"testing"

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

	resp, err := e.HTTP.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`carbide_rpc_requests_total{code="ok",procedure="/carbide.network.v1.SegmentService/ListSegments"} 1`,
		`carbide_rpc_requests_total{code="invalid_argument",procedure="/carbide.network.v1.SegmentService/GetSegment"} 1`,
		`carbide_rpc_duration_seconds_count{procedure="/carbide.network.v1.SegmentService/ListSegments"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
