package apiserver

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

func TestCreateAndGetSegment(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		created, err := e.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{
			Segment: &networkv1.Segment{Name: "rack1", Prefix: "10.0.0.0/24", Gateway: "10.0.0.1",
				Ranges: []*networkv1.AddressRange{{Start: "10.0.0.10", End: "10.0.0.20"}}},
		}))
		if err != nil {
			t.Fatalf("CreateSegment: %v", err)
		}
		got, err := e.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: created.Msg.GetSegment().GetId()}))
		if err != nil {
			t.Fatalf("GetSegment: %v", err)
		}
		if got.Msg.GetSegment().GetName() != "rack1" {
			t.Errorf("name = %q, want rack1", got.Msg.GetSegment().GetName())
		}
	})
}
