package apiserver

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/lease"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestAddressBadRequests(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		other := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24",
			Ranges: []*networkv1.AddressRange{{Start: "10.1.0.10", End: "10.1.0.20"}}})
		for i := range 3 {
			allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: other.GetId(), Mac: testMAC(i)})
		}
		page, err := e.Address.ListLeases(t.Context(), connect.NewRequest(&networkv1.ListLeasesRequest{
			SegmentId: other.GetId(), PageSize: 1,
		}))
		if err != nil {
			t.Fatalf("ListLeases: %v", err)
		}
		otherToken := page.Msg.GetNextPageToken()
		if otherToken == "" {
			t.Fatal("ListLeases with page_size 1 over 3 leases returned no next_page_token")
		}
		unknown := uuid.NewString()
		invalid := connect.CodeInvalidArgument

		alloc := func(req *networkv1.AllocateAddressRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		rel := func(req *networkv1.ReleaseAddressRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Address.ReleaseAddress(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		list := func(req *networkv1.ListLeasesRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Address.ListLeases(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		id := seg.GetId()
		mac := testMAC(100)

		runBadRequests(t, map[string]badRequest{
			"allocate short MAC":         {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: "02:00:00:00:01"}), invalid, "mac"},
			"allocate dotted MAC":        {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: "0200.0000.0001"}), invalid, "mac"},
			"allocate without MAC":       {alloc(&networkv1.AllocateAddressRequest{SegmentId: id}), invalid, "mac"},
			"allocate unknown segment":   {alloc(&networkv1.AllocateAddressRequest{SegmentId: unknown, Mac: mac}), connect.CodeNotFound, unknown},
			"allocate malformed segment": {alloc(&networkv1.AllocateAddressRequest{SegmentId: "rack1", Mac: mac}), invalid, "segment_id"},
			"allocate IPv6 requested":    {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac, RequestedAddress: "fd00::5"}), invalid, "requested_address"},
			"allocate junk requested":    {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac, RequestedAddress: "10.0.0"}), invalid, "requested_address"},
			"allocate short lease":       {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac, LeaseDuration: seconds(59)}), invalid, "lease_duration"},
			"allocate long lease":        {alloc(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac, LeaseDuration: seconds(2592001)}), invalid, "lease_duration"},
			"release unknown segment":    {rel(&networkv1.ReleaseAddressRequest{SegmentId: unknown, Mac: mac}), connect.CodeNotFound, unknown},
			"release malformed segment":  {rel(&networkv1.ReleaseAddressRequest{SegmentId: "x", Mac: mac}), invalid, "segment_id"},
			"release malformed MAC":      {rel(&networkv1.ReleaseAddressRequest{SegmentId: id, Mac: "02:00:00:00:00:0g"}), invalid, "mac"},
			"list unknown segment":       {list(&networkv1.ListLeasesRequest{SegmentId: unknown}), connect.CodeNotFound, unknown},
			"list malformed segment":     {list(&networkv1.ListLeasesRequest{SegmentId: "x"}), invalid, "segment_id"},
			"list bad token":             {list(&networkv1.ListLeasesRequest{SegmentId: id, PageToken: "e30"}), invalid, "page_token"},
			"list other segment's token": {list(&networkv1.ListLeasesRequest{SegmentId: id, PageToken: otherToken}), invalid, "page_token"},
			"list token other filter":    {list(&networkv1.ListLeasesRequest{SegmentId: other.GetId(), PageToken: otherToken, IncludeExpired: true}), invalid, "page_token"},
			"list huge page":             {list(&networkv1.ListLeasesRequest{SegmentId: id, PageSize: 1001}), invalid, "page_size"},
		})
	})
}

func TestAllocateUntilExhausted(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		seg      *networkv1.Segment
		reserved *networkv1.Reservation // allocated last, after exhaustion
		want     []string               // every address handed out dynamically
	}{
		"range holding the gateway": {
			seg: &networkv1.Segment{Name: "gw-in-range", Prefix: "10.1.0.0/29", Gateway: "10.1.0.1",
				Ranges: []*networkv1.AddressRange{{Start: "10.1.0.1", End: "10.1.0.6"}}},
			want: addrRange(t, "10.1.0.2", "10.1.0.6"),
		},
		"two ranges": {
			seg: &networkv1.Segment{Name: "two-ranges", Prefix: "10.1.1.0/24", Gateway: "10.1.1.1",
				Ranges: []*networkv1.AddressRange{{Start: "10.1.1.20", End: "10.1.1.21"}, {Start: "10.1.1.10", End: "10.1.1.12"}}},
			want: []string{"10.1.1.10", "10.1.1.11", "10.1.1.12", "10.1.1.20", "10.1.1.21"},
		},
		"reservation inside the range": {
			seg: &networkv1.Segment{Name: "reserved", Prefix: "10.1.2.0/29", Gateway: "10.1.2.1",
				Ranges:       []*networkv1.AddressRange{{Start: "10.1.2.2", End: "10.1.2.6"}},
				Reservations: []*networkv1.Reservation{{Mac: "02:aa:00:00:00:01", Address: "10.1.2.4"}}},
			reserved: &networkv1.Reservation{Mac: "02:aa:00:00:00:01", Address: "10.1.2.4"},
			want:     []string{"10.1.2.2", "10.1.2.3", "10.1.2.5", "10.1.2.6"},
		},
		"smallest network": {
			seg: &networkv1.Segment{Name: "slash-30", Prefix: "10.1.3.0/30",
				Ranges: []*networkv1.AddressRange{{Start: "10.1.3.1", End: "10.1.3.2"}}},
			want: []string{"10.1.3.1", "10.1.3.2"},
		},
		"single address": {
			seg: &networkv1.Segment{Name: "single", Prefix: "10.1.4.0/24",
				Ranges: []*networkv1.AddressRange{{Start: "10.1.4.9", End: "10.1.4.9"}}},
			want: []string{"10.1.4.9"},
		},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				seg := createSegment(t, e, tc.seg)
				var got []string
				for i := range tc.want {
					l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(i)})
					if l.GetReserved() {
						t.Errorf("dynamic lease %s marked reserved", l.GetAddress())
					}
					got = append(got, l.GetAddress())
				}
				if diff := cmp.Diff(tc.want, sortedAddrs(t, got)); diff != "" {
					t.Errorf("addresses handed out (-want +got):\n%s", diff)
				}
				_, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{
					SegmentId: seg.GetId(), Mac: testMAC(len(tc.want)),
				}))
				wantError(t, err, connect.CodeResourceExhausted, seg.GetName())
				if err != nil && !strings.Contains(err.Error(), "release") {
					t.Errorf("exhaustion message %q does not say what to do", err)
				}
				if tc.reserved != nil {
					l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: tc.reserved.GetMac()})
					if l.GetAddress() != tc.reserved.GetAddress() || !l.GetReserved() {
						t.Errorf("reserved MAC got %s (reserved %v), want %s (reserved)", l.GetAddress(), l.GetReserved(), tc.reserved.GetAddress())
					}
				}
			})
		}
	})
}

func TestAllocateRenews(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		first := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:AB:00:00:00:01", LeaseDuration: seconds(120)})
		if first.GetMac() != "02:ab:00:00:00:01" {
			t.Errorf("lease MAC = %q, want it in lower case", first.GetMac())
		}
		if !first.GetExpireTime().AsTime().After(first.GetRenewTime().AsTime()) {
			t.Errorf("expire_time %v not after renew_time %v", first.GetExpireTime().AsTime(), first.GetRenewTime().AsTime())
		}
		// Renewal: another case, a requested address and the segment's
		// one-hour lease; the same address comes back for longer.
		second := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:ab:00:00:00:01", RequestedAddress: "10.0.0.19"})
		if second.GetAddress() != first.GetAddress() {
			t.Errorf("renewal returned %s, want %s", second.GetAddress(), first.GetAddress())
		}
		if !second.GetExpireTime().AsTime().After(first.GetExpireTime().AsTime()) {
			t.Errorf("renewal moved expire_time from %v to %v, want later", first.GetExpireTime().AsTime(), second.GetExpireTime().AsTime())
		}
		if got, want := second.GetExpireTime().AsTime().Sub(second.GetRenewTime().AsTime()), time.Hour; got != want {
			t.Errorf("renewed lease lasts %v, want the segment's %v", got, want)
		}
		if !second.GetCreateTime().AsTime().Equal(first.GetCreateTime().AsTime()) {
			t.Errorf("create_time changed from %v to %v on renewal", first.GetCreateTime().AsTime(), second.GetCreateTime().AsTime())
		}
		if second.GetRenewTime().AsTime().Before(first.GetRenewTime().AsTime()) {
			t.Errorf("renew_time went back from %v to %v", first.GetRenewTime().AsTime(), second.GetRenewTime().AsTime())
		}
		leases := listAllLeases(t, e, seg.GetId(), 0, true)
		if diff := cmp.Diff([]*networkv1.Lease{second}, leases, protocmp.Transform()); diff != "" {
			t.Errorf("ListLeases after renewal (-want +got):\n%s", diff)
		}
	})
}

func TestAllocateRequestedAddress(t *testing.T) {
	t.Parallel()
	// Each case has its own segment 10.2.<i>.0/24: gateway .1, range
	// .10-.20, .15 reserved for another MAC and .12 leased to another MAC.
	tests := map[string]struct {
		requested string // last octet, or a whole address
		honoured  bool
	}{
		"free in range":        {"17", true},
		"first of range":       {"10", true},
		"last of range":        {"20", true},
		"leased to another":    {"12", false},
		"reserved for another": {"15", false},
		"outside the ranges":   {"50", false},
		"the gateway":          {"1", false},
		"the network":          {"0", false},
		"the broadcast":        {"255", false},
		"outside the prefix":   {"10.99.0.17", false},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		i := 0
		for name, tc := range tests {
			i++
			p, segName := fmt.Sprintf("10.2.%d.", i), fmt.Sprintf("req-%d", i)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				seg := createSegment(t, e, &networkv1.Segment{
					Name: segName, Prefix: p + "0/24", Gateway: p + "1",
					Ranges:       []*networkv1.AddressRange{{Start: p + "10", End: p + "20"}},
					Reservations: []*networkv1.Reservation{{Mac: testMAC(1), Address: p + "15"}},
				})
				if l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(2), RequestedAddress: p + "12"}); l.GetAddress() != p+"12" {
					t.Fatalf("free requested address %s12 not honoured: got %s", p, l.GetAddress())
				}
				requested := tc.requested
				if !strings.Contains(requested, ".") {
					requested = p + requested
				}
				got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(3), RequestedAddress: requested}).GetAddress()
				switch {
				case tc.honoured && got != requested:
					t.Errorf("requested %s, got %s; want the requested address", requested, got)
				case !tc.honoured && got == requested:
					t.Errorf("requested %s was granted; want it ignored", requested)
				}
				if !slices.Contains(addrRange(t, p+"10", p+"20"), got) || got == p+"12" || got == p+"15" {
					t.Errorf("got %s, want a free, unreserved address of %s10-%s20", got, p, p)
				}
			})
		}
	})
}

func TestReservations(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "pinned", Prefix: "10.4.0.0/24", Gateway: "10.4.0.1",
			Ranges: []*networkv1.AddressRange{{Start: "10.4.0.10", End: "10.4.0.12"}},
			Reservations: []*networkv1.Reservation{
				{Mac: "02:AA:00:00:00:01", Address: "10.4.0.11"},  // inside the range
				{Mac: "02:aa:00:00:00:02", Address: "10.4.0.100"}, // outside it
			},
		})
		// Other MACs exhaust the pool, even asking for the reserved
		// addresses, without getting them.
		var dynamic []string
		for i := range 2 {
			dynamic = append(dynamic, allocate(t, e, &networkv1.AllocateAddressRequest{
				SegmentId: seg.GetId(), Mac: testMAC(i), RequestedAddress: "10.4.0.11",
			}).GetAddress())
		}
		if diff := cmp.Diff([]string{"10.4.0.10", "10.4.0.12"}, sortedAddrs(t, dynamic)); diff != "" {
			t.Errorf("dynamic addresses (-want +got):\n%s", diff)
		}
		_, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{
			SegmentId: seg.GetId(), Mac: testMAC(9), RequestedAddress: "10.4.0.100",
		}))
		wantError(t, err, connect.CodeResourceExhausted, "pinned")

		// In order: each step builds on the leases of the previous ones.
		steps := []struct {
			name, mac, requested, want string
		}{
			{"inside the range", "02:aa:00:00:00:01", "", "10.4.0.11"},
			{"outside the range", "02:AA:00:00:00:02", "10.4.0.12", "10.4.0.100"},
			{"renewed inside the range", "02:aa:00:00:00:01", "10.4.0.10", "10.4.0.11"},
		}
		for _, st := range steps {
			l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: st.mac, RequestedAddress: st.requested})
			if l.GetAddress() != st.want || !l.GetReserved() {
				t.Errorf("%s: got %s (reserved %v), want %s (reserved)", st.name, l.GetAddress(), l.GetReserved(), st.want)
			}
		}
	})
}

// TestReservationChanges changes a segment's reservations while leases
// exist: a reservation never hands its address to another MAC, and a MAC
// that gets a reservation moves to it.
func TestReservationChanges(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "changing", Prefix: "10.5.0.0/24",
			Ranges: []*networkv1.AddressRange{{Start: "10.5.0.10", End: "10.5.0.14"}},
		})
		id := seg.GetId()
		a, b, c := testMAC(1), testMAC(2), testMAC(3)
		reserve := func(rs ...*networkv1.Reservation) error {
			_, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
				Segment: &networkv1.Segment{Id: id, Reservations: rs}, UpdateMask: mask("reservations"),
			}))
			return err
		}

		// An address leased to another MAC cannot be reserved.
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: a, RequestedAddress: "10.5.0.11"})
		wantError(t, reserve(&networkv1.Reservation{Mac: b, Address: "10.5.0.11"}), connect.CodeFailedPrecondition, "reservations")

		// Once that lease is released it can; the old holder, renewing,
		// must not get it back, and the reserved MAC gets it.
		release(t, e, id, a)
		if err := reserve(&networkv1.Reservation{Mac: b, Address: "10.5.0.11"}); err != nil {
			t.Fatalf("reserve a released address: %v", err)
		}
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: a}); got.GetAddress() == "10.5.0.11" {
			t.Errorf("%s renewed 10.5.0.11, which is now reserved for %s", a, b)
		}
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: b}); got.GetAddress() != "10.5.0.11" || !got.GetReserved() {
			t.Errorf("%s got %s (reserved %v), want its reservation 10.5.0.11", b, got.GetAddress(), got.GetReserved())
		}

		// A MAC with a dynamic lease that gets a reservation moves to it,
		// and its old address is free again.
		old := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: c})
		if err := reserve(&networkv1.Reservation{Mac: b, Address: "10.5.0.11"}, &networkv1.Reservation{Mac: c, Address: "10.5.0.200"}); err != nil {
			t.Fatalf("reserve: %v", err)
		}
		moved := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: c})
		if moved.GetAddress() != "10.5.0.200" || !moved.GetReserved() {
			t.Errorf("%s got %s (reserved %v), want its new reservation 10.5.0.200", c, moved.GetAddress(), moved.GetReserved())
		}
		var held []string
		for _, l := range listAllLeases(t, e, id, 0, true) {
			if l.GetMac() == c {
				held = append(held, l.GetAddress())
			}
		}
		if diff := cmp.Diff([]string{"10.5.0.200"}, held); diff != "" {
			t.Errorf("leases of %s (-want +got):\n%s; moved from %s", c, diff, old.GetAddress())
		}
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: testMAC(4), RequestedAddress: old.GetAddress()}); got.GetAddress() != old.GetAddress() {
			t.Errorf("the address %s left is not free: a new MAC asking for it got %s", old.GetAddress(), got.GetAddress())
		}

		// A MAC whose reservation is dropped keeps a dynamic address.
		if err := reserve(&networkv1.Reservation{Mac: b, Address: "10.5.0.11"}); err != nil {
			t.Fatalf("reserve: %v", err)
		}
		after := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: c})
		if after.GetReserved() || !slices.Contains(addrRange(t, "10.5.0.10", "10.5.0.14"), after.GetAddress()) {
			t.Errorf("after its reservation went, %s got %s (reserved %v), want a dynamic address of the range", c, after.GetAddress(), after.GetReserved())
		}
	})
}

// TestRangeChanges shrinks a segment's ranges under existing leases: a
// lease whose address left the pool moves into the pool when renewed.
func TestRangeChanges(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		expired bool
		update  func(s *networkv1.Segment) []string
	}{
		"range moved, lease active": {false, func(s *networkv1.Segment) []string {
			s.Ranges = []*networkv1.AddressRange{{Start: "10.6.0.20", End: "10.6.0.22"}}
			return []string{"ranges"}
		}},
		"range moved, lease expired": {true, func(s *networkv1.Segment) []string {
			s.Ranges = []*networkv1.AddressRange{{Start: "10.6.0.20", End: "10.6.0.22"}}
			return []string{"ranges"}
		}},
		"address became the gateway": {false, func(s *networkv1.Segment) []string {
			s.Gateway = "10.6.0.10"
			return []string{"gateway"}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, e *env) {
				seg := createSegment(t, e, &networkv1.Segment{
					Name: "moving", Prefix: "10.6.0.0/24",
					Ranges: []*networkv1.AddressRange{{Start: "10.6.0.10", End: "10.6.0.12"}},
				})
				mac := testMAC(1)
				allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac, RequestedAddress: "10.6.0.10"})
				if tc.expired {
					expireLease(t, e, seg.GetId(), mac, time.Now().Add(-time.Minute))
				}
				upd := &networkv1.Segment{Id: seg.GetId()}
				paths := tc.update(upd)
				resp, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
					Segment: upd, UpdateMask: mask(paths...),
				}))
				if err != nil {
					t.Fatalf("UpdateSegment: %v", err)
				}
				got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac}).GetAddress()
				var pool []string
				for _, r := range resp.Msg.GetSegment().GetRanges() {
					pool = append(pool, addrRange(t, r.GetStart(), r.GetEnd())...)
				}
				if !slices.Contains(pool, got) || got == resp.Msg.GetSegment().GetGateway() {
					t.Errorf("renewal after the change returned %s, want an address of %v other than the gateway", got, pool)
				}
				if n := len(listAllLeases(t, e, seg.GetId(), 0, true)); n != 1 {
					t.Errorf("%d leases, want the MAC's one", n)
				}
			})
		})
	}
}

func TestReleaseAndAllocateAgain(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		id := seg.GetId()
		a, b := testMAC(1), testMAC(2)
		first := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: a})

		release(t, e, id, strings.ToUpper(a))
		if active := listAllLeases(t, e, id, 0, false); len(active) != 0 {
			t.Errorf("ListLeases lists %d leases after the only one was released", len(active))
		}
		all := listAllLeases(t, e, id, 0, true)
		if len(all) != 1 || all[0].GetAddress() != first.GetAddress() || all[0].GetExpireTime().AsTime().After(time.Now()) {
			t.Errorf("ListLeases(include_expired) = %v, want the released lease of %s, expired", all, first.GetAddress())
		}
		release(t, e, id, a) // again: nothing to release
		release(t, e, id, b) // never had a lease

		// The address stays with a while other addresses are free.
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: b, RequestedAddress: first.GetAddress()}); got.GetAddress() == first.GetAddress() {
			t.Errorf("%s got %s, released by %s, while other addresses were free", b, got.GetAddress(), a)
		}
		again := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: a})
		if again.GetAddress() != first.GetAddress() {
			t.Errorf("after release, allocate returned %s, want %s again", again.GetAddress(), first.GetAddress())
		}
		if !again.GetExpireTime().AsTime().After(again.GetRenewTime().AsTime()) {
			t.Errorf("re-allocated lease expires at %v, not after its renew_time %v", again.GetExpireTime().AsTime(), again.GetRenewTime().AsTime())
		}
	})
}

func TestExpiredLeasesAreReclaimed(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "small", Prefix: "10.7.0.0/24",
			Ranges: []*networkv1.AddressRange{{Start: "10.7.0.10", End: "10.7.0.12"}},
		})
		id := seg.GetId()
		a, b, c, d := testMAC(1), testMAC(2), testMAC(3), testMAC(4)
		addrOf := map[string]string{}
		for _, mac := range []string{a, b, c} {
			addrOf[mac] = allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac}).GetAddress()
		}
		_, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: d}))
		wantError(t, err, connect.CodeResourceExhausted, "small")

		// b expired an hour ago, c two hours ago: d takes c's address, then
		// c, back, takes b's, and b finds nothing left.
		expireLease(t, e, id, b, time.Now().Add(-time.Hour))
		expireLease(t, e, id, c, time.Now().Add(-2*time.Hour))
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: d}).GetAddress(); got != addrOf[c] {
			t.Errorf("%s got %s, want %s, the address whose lease expired longest ago", d, got, addrOf[c])
		}
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: c}).GetAddress(); got != addrOf[b] {
			t.Errorf("%s got %s, want %s, the one expired lease left", c, got, addrOf[b])
		}
		_, err = e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: id, Mac: b}))
		wantError(t, err, connect.CodeResourceExhausted, "small")

		// A released lease is reclaimed the same way.
		release(t, e, id, a)
		if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: b}).GetAddress(); got != addrOf[a] {
			t.Errorf("%s got %s, want %s, released by %s", b, got, addrOf[a], a)
		}
		var macs []string
		for _, l := range listAllLeases(t, e, id, 0, true) {
			macs = append(macs, l.GetMac())
		}
		slices.Sort(macs)
		if diff := cmp.Diff([]string{b, c, d}, macs); diff != "" {
			t.Errorf("lease holders (-want +got):\n%s", diff)
		}
	})
}

func TestMachineInterfacesShowLeases(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"02:BB:00:00:00:01", "02:bb:00:00:00:02"}})
		l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:bb:00:00:00:01"})

		want := []*machinev1.Interface{
			{Mac: "02:bb:00:00:00:01", SegmentId: seg.GetId(), Address: l.GetAddress()},
			{Mac: "02:bb:00:00:00:02"},
		}
		check := func(when string) {
			t.Helper()
			if diff := cmp.Diff(want, getMachine(t, e, m.GetId()).GetInterfaces(), protocmp.Transform()); diff != "" {
				t.Errorf("%s: GetMachine interfaces (-want +got):\n%s", when, diff)
			}
			resp, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{Mac: "02:bb:00:00:00:02"}))
			if err != nil {
				t.Fatalf("ListMachines: %v", err)
			}
			if len(resp.Msg.GetMachines()) != 1 {
				t.Fatalf("ListMachines by MAC returned %d machines, want 1", len(resp.Msg.GetMachines()))
			}
			if diff := cmp.Diff(want, resp.Msg.GetMachines()[0].GetInterfaces(), protocmp.Transform()); diff != "" {
				t.Errorf("%s: ListMachines interfaces (-want +got):\n%s", when, diff)
			}
		}
		check("after allocation")

		release(t, e, seg.GetId(), "02:bb:00:00:00:01")
		want[0].Address = "" // the segment it was seen on stays
		check("after release")

		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: "02:BB:00:00:00:01"})
		want[0].Address = l.GetAddress()
		check("after allocating again")

		expireLease(t, e, seg.GetId(), "02:bb:00:00:00:01", time.Now().Add(-time.Second))
		want[0].Address = ""
		check("after the lease expired")
	})
}

func TestListLeases(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "listed", Prefix: "10.8.0.0/24",
			Ranges: []*networkv1.AddressRange{{Start: "10.8.0.5", End: "10.8.0.200"}},
		})
		id := seg.GetId()
		// Allocated out of address order: the list is oldest first.
		requested := []string{"10.8.0.100", "10.8.0.9", "10.8.0.10", "10.8.0.20", "10.8.0.11"}
		for i, a := range requested {
			if got := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: testMAC(i), RequestedAddress: a}); got.GetAddress() != a {
				t.Fatalf("requested %s, got %s", a, got.GetAddress())
			}
		}
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: testMAC(1)}) // a renewal keeps its place
		release(t, e, id, testMAC(2))                                                     // 10.8.0.10

		tests := map[string]struct {
			includeExpired bool
			want           []string
		}{
			"active":       {false, []string{"10.8.0.100", "10.8.0.9", "10.8.0.20", "10.8.0.11"}},
			"with expired": {true, []string{"10.8.0.100", "10.8.0.9", "10.8.0.10", "10.8.0.20", "10.8.0.11"}},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				for _, size := range []int32{0, 1, 2, 4, 5} {
					var got []string
					for _, l := range listAllLeases(t, e, id, size, tc.includeExpired) {
						got = append(got, l.GetAddress())
						if l.GetSegmentId() != id {
							t.Errorf("lease of %s has segment_id %s, want %s", l.GetMac(), l.GetSegmentId(), id)
						}
					}
					if diff := cmp.Diff(tc.want, got); diff != "" {
						t.Errorf("page_size %d: addresses, oldest first (-want +got):\n%s", size, diff)
					}
				}
			})
		}
	})
}

// TestAllocateConcurrently races 50 allocations for 25 MACs (each MAC
// twice) on one segment. The database must end with one lease per MAC and
// one MAC per address, every caller of a MAC must get the same address,
// and each machine's last change-log entry must show all of its addresses.
func TestAllocateConcurrently(t *testing.T) {
	t.Parallel()
	const machines, nics, calls = 5, 5, 2
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "busy", Prefix: "10.9.0.0/24", Gateway: "10.9.0.1",
			Ranges: []*networkv1.AddressRange{{Start: "10.9.0.1", End: "10.9.0.64"}},
		})
		var macs []string
		machineIDs := map[string]string{} // MAC -> machine
		for m := range machines {
			var own []string
			for n := range nics {
				own = append(own, testMAC(m*nics+n))
			}
			id := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: own}).GetId()
			for _, mac := range own {
				machineIDs[mac] = id
			}
			macs = append(macs, own...)
		}

		type result struct {
			mac, addr string
			err       error
		}
		results := make(chan result, len(macs)*calls)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range len(macs) * calls {
			mac := macs[i%len(macs)]
			wg.Go(func() {
				<-start
				resp, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{
					SegmentId: seg.GetId(), Mac: mac,
				}))
				r := result{mac: mac, err: err}
				if err == nil {
					r.addr = resp.Msg.GetLease().GetAddress()
				}
				results <- r
			})
		}
		close(start)
		wg.Wait()
		close(results)

		got := map[string]string{} // MAC -> address
		for r := range results {
			if r.err != nil {
				t.Errorf("AllocateAddress(%s): %v", r.mac, r.err)
				continue
			}
			if prev, ok := got[r.mac]; ok && prev != r.addr {
				t.Errorf("%s got %s and %s", r.mac, prev, r.addr)
			}
			got[r.mac] = r.addr
		}
		holder := map[string]string{} // address -> MAC
		for mac, a := range got {
			if other, ok := holder[a]; ok {
				t.Errorf("%s went to both %s and %s", a, other, mac)
			}
			holder[a] = mac
			if a == "10.9.0.1" || !slices.Contains(addrRange(t, "10.9.0.2", "10.9.0.64"), a) {
				t.Errorf("%s got %s, outside the pool", mac, a)
			}
		}

		rows, err := e.Store.Client.Lease.Query().Where(lease.SegmentID(uuid.MustParse(seg.GetId()))).All(t.Context())
		if err != nil {
			t.Fatalf("read leases: %v", err)
		}
		stored := map[string]string{}
		for _, l := range rows {
			if _, dup := stored[l.MAC]; dup {
				t.Errorf("%s holds two leases", l.MAC)
			}
			stored[l.MAC] = l.Address
		}
		if diff := cmp.Diff(got, stored); diff != "" {
			t.Errorf("leases in the database differ from what the callers got (-rpc +db):\n%s", diff)
		}

		// Each machine shows its addresses, and so does the last entry the
		// change log holds for it (what a watcher ends up with).
		for _, id := range uniqueValues(machineIDs) {
			m := getMachine(t, e, id)
			for _, nic := range m.GetInterfaces() {
				if nic.GetAddress() != got[nic.GetMac()] || nic.GetSegmentId() != seg.GetId() {
					t.Errorf("machine %s interface %s shows %s on %s, want %s on %s",
						id, nic.GetMac(), nic.GetAddress(), nic.GetSegmentId(), got[nic.GetMac()], seg.GetId())
				}
			}
			last, err := e.Store.Client.Change.Query().Where(change.ResourceID(id)).Order(ent.Desc(change.FieldID)).First(t.Context())
			if err != nil {
				t.Fatalf("read change log: %v", err)
			}
			logged := &machinev1.Machine{}
			if err := proto.Unmarshal(last.Payload, logged); err != nil {
				t.Fatalf("decode change %d: %v", last.ID, err)
			}
			if diff := cmp.Diff(m, logged, protocmp.Transform()); diff != "" {
				t.Errorf("machine %s: last change-log entry differs from the machine (-machine +logged):\n%s", id, diff)
			}
		}
	})
}

func uniqueValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}
