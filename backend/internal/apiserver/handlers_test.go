package apiserver

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/segments"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestHandlersRejectMalformedIDs calls the handlers directly, without the
// validation interceptor in front of them: a malformed id is still
// InvalidArgument naming the field, never a panic.
func TestHandlersRejectMalformedIDs(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ms, ss, as := machines.NewService(e.Store, lifecycle.DefaultTimeouts), segments.NewService(e.Store), ipam.NewService(e.Store)
		for _, bad := range []string{"", "machine-1", "123e4567-e89b-12d3-a456-42661417400"} {
			calls := map[string]struct {
				field string
				call  func(ctx context.Context) error
			}{
				"GetMachine": {"id", func(ctx context.Context) error {
					_, err := ms.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: bad}))
					return err
				}},
				"UpdateMachine": {"machine.id", func(ctx context.Context) error {
					_, err := ms.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
						Machine: &machinev1.Machine{Id: bad, Hostname: "node"}, UpdateMask: mask("hostname")}))
					return err
				}},
				"UpdateMachine without machine": {"machine.id", func(ctx context.Context) error {
					_, err := ms.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{}))
					return err
				}},
				"DeleteMachine": {"id", func(ctx context.Context) error {
					_, err := ms.DeleteMachine(ctx, connect.NewRequest(&machinev1.DeleteMachineRequest{Id: bad}))
					return err
				}},
				"ListMachineTransitions": {"machine_id", func(ctx context.Context) error {
					_, err := ms.ListMachineTransitions(ctx, connect.NewRequest(&machinev1.ListMachineTransitionsRequest{MachineId: bad}))
					return err
				}},
				"GetSegment": {"id", func(ctx context.Context) error {
					_, err := ss.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: bad}))
					return err
				}},
				"UpdateSegment": {"segment.id", func(ctx context.Context) error {
					_, err := ss.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
						Segment: &networkv1.Segment{Id: bad, Name: "lab"}, UpdateMask: mask("name")}))
					return err
				}},
				"DeleteSegment": {"id", func(ctx context.Context) error {
					_, err := ss.DeleteSegment(ctx, connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: bad}))
					return err
				}},
				"AllocateAddress": {"segment_id", func(ctx context.Context) error {
					_, err := as.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{
						SegmentId: bad, Mac: testMAC(1), LeaseDuration: durationpb.New(3600e9)}))
					return err
				}},
				"ReleaseAddress": {"segment_id", func(ctx context.Context) error {
					_, err := as.ReleaseAddress(ctx, connect.NewRequest(&networkv1.ReleaseAddressRequest{SegmentId: bad, Mac: testMAC(1)}))
					return err
				}},
				"ListLeases": {"segment_id", func(ctx context.Context) error {
					_, err := as.ListLeases(ctx, connect.NewRequest(&networkv1.ListLeasesRequest{SegmentId: bad}))
					return err
				}},
			}
			for name, c := range calls {
				t.Run(fmt.Sprintf("%s %q", name, bad), func(t *testing.T) {
					var err error
					func() {
						defer func() {
							if p := recover(); p != nil {
								t.Fatalf("%s panicked on id %q: %v", name, bad, p)
							}
						}()
						err = c.call(t.Context())
					}()
					wantError(t, err, connect.CodeInvalidArgument, c.field)
				})
			}
		}
	})
}
