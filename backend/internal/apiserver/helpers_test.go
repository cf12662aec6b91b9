package apiserver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/ent/lease"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// badRequest is one case of a table of requests the API must reject.
type badRequest struct {
	call func(t *testing.T) error
	code connect.Code
	// field must appear in the error message: the field (or, for
	// NotFound, the id) the client has to fix.
	field string
}

// runBadRequests runs each case as a parallel subtest.
func runBadRequests(t *testing.T, tests map[string]badRequest) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wantError(t, tc.call(t), tc.code, tc.field)
		})
	}
}

// wantError fails t unless err carries code and a message that mentions
// field.
func wantError(t testing.TB, err error, code connect.Code, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %s naming %q", code, field)
	}
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != code {
		t.Fatalf("error = %v (code %s), want code %s", err, codeOf(err), code)
	}
	if !strings.Contains(cerr.Message(), field) {
		t.Errorf("message %q does not mention %q", cerr.Message(), field)
	}
}

// testMAC returns a distinct MAC address for each i.
func testMAC(i int) string {
	return fmt.Sprintf("02:00:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

// createSegment creates a segment and fails t if that does not work.
func createSegment(t testing.TB, e *env, seg *networkv1.Segment) *networkv1.Segment {
	t.Helper()
	resp, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: seg}))
	if err != nil {
		t.Fatalf("CreateSegment(%s): %v", seg.GetName(), err)
	}
	return resp.Msg.GetSegment()
}

// createMachine registers a machine and fails t if that does not work.
func createMachine(t testing.TB, e *env, req *machinev1.CreateMachineRequest) *machinev1.Machine {
	t.Helper()
	resp, err := e.Machines.CreateMachine(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateMachine(%v): %v", req.GetMacs(), err)
	}
	return resp.Msg.GetMachine()
}

// getMachine reads a machine and fails t if that does not work.
func getMachine(t testing.TB, e *env, id string) *machinev1.Machine {
	t.Helper()
	resp, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
	if err != nil {
		t.Fatalf("GetMachine(%s): %v", id, err)
	}
	return resp.Msg.GetMachine()
}

// allocate leases an address and fails t if that does not work.
func allocate(t testing.TB, e *env, req *networkv1.AllocateAddressRequest) *networkv1.Lease {
	t.Helper()
	resp, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("AllocateAddress(%s, %s): %v", req.GetMac(), req.GetRequestedAddress(), err)
	}
	return resp.Msg.GetLease()
}

// release ends a lease and fails t if that does not work.
func release(t testing.TB, e *env, segmentID, mac string) {
	t.Helper()
	if _, err := e.Address.ReleaseAddress(t.Context(), connect.NewRequest(&networkv1.ReleaseAddressRequest{
		SegmentId: segmentID, Mac: mac,
	})); err != nil {
		t.Fatalf("ReleaseAddress(%s): %v", mac, err)
	}
}

// listAllLeases pages through a segment's leases, pageSize at a time.
func listAllLeases(t testing.TB, e *env, segmentID string, pageSize int32, includeExpired bool) []*networkv1.Lease {
	t.Helper()
	var out []*networkv1.Lease
	token := ""
	for range 1000 {
		resp, err := e.Address.ListLeases(t.Context(), connect.NewRequest(&networkv1.ListLeasesRequest{
			SegmentId: segmentID, PageSize: pageSize, PageToken: token, IncludeExpired: includeExpired,
		}))
		if err != nil {
			t.Fatalf("ListLeases: %v", err)
		}
		if pageSize > 0 && len(resp.Msg.GetLeases()) > int(pageSize) {
			t.Fatalf("ListLeases returned %d leases, more than page_size %d", len(resp.Msg.GetLeases()), pageSize)
		}
		out = append(out, resp.Msg.GetLeases()...)
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return out
		}
	}
	t.Fatal("ListLeases never returned an empty next_page_token")
	return nil
}

// mask builds a FieldMask.
func mask(paths ...string) *fieldmaskpb.FieldMask {
	return &fieldmaskpb.FieldMask{Paths: paths}
}

// seconds is a proto Duration.
func seconds(n int64) *durationpb.Duration {
	return durationpb.New(time.Duration(n) * time.Second)
}

// addr parses an address and fails t if it is not IPv4.
func addr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		t.Fatalf("%q is not an IPv4 address", s)
	}
	return a
}

// addrRange lists the addresses from start to end inclusive.
func addrRange(t testing.TB, start, end string) []string {
	t.Helper()
	var out []string
	for a := addr(t, start); a.Compare(addr(t, end)) <= 0; a = a.Next() {
		out = append(out, a.String())
	}
	return out
}

// sortedAddrs returns addresses sorted numerically.
func sortedAddrs(t testing.TB, as []string) []string {
	t.Helper()
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b string) int { return addr(t, a).Compare(addr(t, b)) })
	return out
}

// expireLease moves the expire_time of a MAC's lease, straight in the
// database, to make it expired (or not) without waiting.
func expireLease(t testing.TB, e *env, segmentID, mac string, at time.Time) {
	t.Helper()
	n, err := e.Store.Client.Lease.Update().
		Where(lease.SegmentID(uuid.MustParse(segmentID)), lease.MAC(mac)).
		SetExpireTime(at.UTC()).Save(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("set expire_time of the lease of %s: %d rows, %v", mac, n, err)
	}
}
