package apiserver

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// rack1 is a valid segment for tests to start from.
func rack1() *networkv1.Segment {
	return &networkv1.Segment{
		Name:           "rack1",
		Prefix:         "10.0.0.0/24",
		Gateway:        "10.0.0.1",
		DnsServers:     []string{"10.0.0.2", "10.0.0.3"},
		Domain:         "rack1.example.net",
		Ranges:         []*networkv1.AddressRange{{Start: "10.0.0.10", End: "10.0.0.20"}},
		Reservations:   []*networkv1.Reservation{{Mac: "02:aa:00:00:00:01", Address: "10.0.0.5"}},
		RelayAddresses: []string{"192.168.1.1"},
		NtpServers:     []string{"10.0.0.4"},
	}
}

// withSegment returns rack1 changed by fn, for create requests.
func withSegment(fn func(s *networkv1.Segment)) *networkv1.Segment {
	s := rack1()
	s.Name = "new"
	s.Prefix = "10.9.0.0/24"
	s.Gateway = "10.9.0.1"
	s.Ranges = []*networkv1.AddressRange{{Start: "10.9.0.10", End: "10.9.0.20"}}
	s.Reservations = nil
	s.RelayAddresses = nil
	fn(s)
	return s
}

func TestSegmentBadRequests(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		existing := createSegment(t, e, rack1())
		second := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24"})
		unknown := uuid.NewString()

		create := func(seg *networkv1.Segment) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: seg}))
				return err
			}
		}
		update := func(seg *networkv1.Segment, paths ...string) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
					Segment: seg, UpdateMask: mask(paths...),
				}))
				return err
			}
		}
		// changed is the existing segment changed by fn, for update requests.
		changed := func(fn func(s *networkv1.Segment)) *networkv1.Segment {
			s := proto.Clone(existing).(*networkv1.Segment)
			fn(s)
			return s
		}
		get := func(id string) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: id}))
				return err
			}
		}
		del := func(id string) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Segments.DeleteSegment(t.Context(), connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: id}))
				return err
			}
		}
		list := func(req *networkv1.ListSegmentsRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		invalid := connect.CodeInvalidArgument

		runBadRequests(t, map[string]badRequest{
			"create without segment": {create(nil), invalid, "segment"},
			"create with id": {create(withSegment(func(s *networkv1.Segment) { s.Id = uuid.NewString() })),
				invalid, "segment.id"},
			"create with bad name": {create(withSegment(func(s *networkv1.Segment) { s.Name = "Rack_1" })),
				invalid, "segment.name"},
			"create without name": {create(withSegment(func(s *networkv1.Segment) { s.Name = "" })),
				invalid, "segment.name"},
			"create with host bits in prefix": {create(withSegment(func(s *networkv1.Segment) { s.Prefix = "10.9.0.1/24" })),
				invalid, "prefix"},
			"create with address as prefix": {create(withSegment(func(s *networkv1.Segment) { s.Prefix = "10.9.0.0" })),
				invalid, "prefix"},
			"create with IPv6 prefix": {create(withSegment(func(s *networkv1.Segment) { s.Prefix = "fd00::/64" })),
				invalid, "prefix"},
			"create with /31 prefix": {create(withSegment(func(s *networkv1.Segment) {
				s.Prefix, s.Gateway, s.Ranges, s.Reservations = "10.9.0.0/31", "", nil, nil
			})), invalid, "prefix"},
			"create with gateway outside prefix": {create(withSegment(func(s *networkv1.Segment) { s.Gateway = "10.8.0.1" })),
				invalid, "gateway"},
			"create with broadcast gateway": {create(withSegment(func(s *networkv1.Segment) { s.Gateway = "10.9.0.255" })),
				invalid, "gateway"},
			"create with IPv6 gateway": {create(withSegment(func(s *networkv1.Segment) { s.Gateway = "fd00::1" })),
				invalid, "gateway"},
			"create with bad DNS server": {create(withSegment(func(s *networkv1.Segment) { s.DnsServers = []string{"10.0.0.2", "dns"} })),
				invalid, "dns_servers[1]"},
			"create with mtu below 576": {create(withSegment(func(s *networkv1.Segment) { s.Mtu = 100 })),
				invalid, "mtu"},
			"create with lease under a minute": {create(withSegment(func(s *networkv1.Segment) { s.LeaseDuration = seconds(10) })),
				invalid, "lease_duration"},
			"create with range outside prefix": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "10.8.0.10", End: "10.8.0.20"}}
			})), invalid, "ranges[0]"},
			"create with range ending outside prefix": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "10.9.0.10", End: "10.9.1.20"}}
			})), invalid, "ranges[0].end"},
			"create with range covering broadcast": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "10.9.0.10", End: "10.9.0.255"}}
			})), invalid, "ranges[0].end"},
			"create with range end before start": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "10.9.0.20", End: "10.9.0.10"}}
			})), invalid, "ranges[0]"},
			"create with overlapping ranges": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "10.9.0.10", End: "10.9.0.20"}, {Start: "10.9.0.20", End: "10.9.0.30"}}
			})), invalid, "ranges[1]"},
			"create with range not an address": {create(withSegment(func(s *networkv1.Segment) {
				s.Ranges = []*networkv1.AddressRange{{Start: "ten", End: "10.9.0.20"}}
			})), invalid, "ranges[0].start"},
			"create with reservation outside prefix": {create(withSegment(func(s *networkv1.Segment) {
				s.Reservations = []*networkv1.Reservation{{Mac: testMAC(1), Address: "10.8.0.5"}}
			})), invalid, "reservations[0].address"},
			"create with reservation on the gateway": {create(withSegment(func(s *networkv1.Segment) {
				s.Reservations = []*networkv1.Reservation{{Mac: testMAC(1), Address: "10.9.0.1"}}
			})), invalid, "reservations[0].address"},
			"create with reservation MAC twice": {create(withSegment(func(s *networkv1.Segment) {
				s.Reservations = []*networkv1.Reservation{
					{Mac: "02:AA:BB:CC:DD:EE", Address: "10.9.0.5"},
					{Mac: "02:aa:bb:cc:dd:ee", Address: "10.9.0.6"},
				}
			})), invalid, "reservations[1].mac"},
			"create with reservation address twice": {create(withSegment(func(s *networkv1.Segment) {
				s.Reservations = []*networkv1.Reservation{{Mac: testMAC(1), Address: "10.9.0.5"}, {Mac: testMAC(2), Address: "10.9.0.5"}}
			})), invalid, "reservations[1].address"},
			"create with malformed reservation MAC": {create(withSegment(func(s *networkv1.Segment) {
				s.Reservations = []*networkv1.Reservation{{Mac: "02:aa:bb:cc:dd", Address: "10.9.0.5"}}
			})), invalid, "reservations[0].mac"},
			"create overlapping another segment": {create(withSegment(func(s *networkv1.Segment) {
				s.Prefix, s.Gateway, s.Ranges = "10.0.0.128/25", "", nil
			})), connect.CodeFailedPrecondition, "prefix"},
			"create containing another segment": {create(withSegment(func(s *networkv1.Segment) {
				s.Prefix, s.Gateway, s.Ranges = "10.0.0.0/8", "", nil
			})), connect.CodeFailedPrecondition, "prefix"},
			"create with another segment's relay": {create(withSegment(func(s *networkv1.Segment) {
				s.RelayAddresses = []string{"192.168.1.1"}
			})), connect.CodeFailedPrecondition, "relay_addresses"},
			"create same name other settings": {create(func() *networkv1.Segment {
				s := rack1()
				s.Mtu = 9000
				return s
			}()), connect.CodeAlreadyExists, "name"},

			"get unknown id":     {get(unknown), connect.CodeNotFound, unknown},
			"get malformed id":   {get("rack1"), invalid, "id"},
			"get empty id":       {get(""), invalid, "id"},
			"delete unknown id":  {del(unknown), connect.CodeNotFound, unknown},
			"delete malformed":   {del("not-a-uuid"), invalid, "id"},
			"list bad token":     {list(&networkv1.ListSegmentsRequest{PageToken: "garbage!"}), invalid, "page_token"},
			"list huge page":     {list(&networkv1.ListSegmentsRequest{PageSize: 1001}), invalid, "page_size"},
			"list negative page": {list(&networkv1.ListSegmentsRequest{PageSize: -1}), invalid, "page_size"},

			"update unknown id": {update(changed(func(s *networkv1.Segment) { s.Id = unknown }), "mtu"),
				connect.CodeNotFound, unknown},
			"update malformed id": {update(changed(func(s *networkv1.Segment) { s.Id = "rack1" }), "mtu"),
				invalid, "segment.id"},
			"update without id": {update(changed(func(s *networkv1.Segment) { s.Id = "" }), "mtu"),
				invalid, "segment.id"},
			"update without segment": {update(nil, "mtu"), invalid, "segment"},
			"update without mask":    {update(existing), invalid, "update_mask"},
			"update prefix": {update(changed(func(s *networkv1.Segment) { s.Prefix = "10.0.0.0/23" }), "prefix"),
				invalid, "update_mask"},
			"update unknown path": {update(existing, "mtu", "create_time"), invalid, "update_mask"},
			"update gateway outside prefix": {update(changed(func(s *networkv1.Segment) { s.Gateway = "10.1.0.1" }), "gateway"),
				invalid, "gateway"},
			"update range outside prefix": {update(changed(func(s *networkv1.Segment) {
				s.Ranges = append(s.Ranges, &networkv1.AddressRange{Start: "10.1.0.10", End: "10.1.0.20"})
			}), "ranges"), invalid, "ranges[1]"},
			"update masked name invalid": {update(&networkv1.Segment{Id: existing.GetId(), Name: "Not_Valid"}, "name"),
				invalid, "segment.name"},
			"update masked name empty": {update(&networkv1.Segment{Id: existing.GetId()}, "name"),
				invalid, "segment.name"},
			"update masked mtu too small": {update(&networkv1.Segment{Id: existing.GetId(), Mtu: 100}, "mtu"),
				invalid, "segment.mtu"},
			"update to a taken name": {update(changed(func(s *networkv1.Segment) { s.Name = second.GetName() }), "name"),
				connect.CodeAlreadyExists, "name"},
			"update to another segment's relay": {update(func() *networkv1.Segment {
				s := proto.Clone(second).(*networkv1.Segment)
				s.RelayAddresses = []string{"192.168.1.1"}
				return s
			}(), "relay_addresses"), connect.CodeFailedPrecondition, "relay_addresses"},
		})
	})
}

func TestCreateSegmentDefaults(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		in := rack1()
		got := createSegment(t, e, in)
		if _, err := uuid.Parse(got.GetId()); err != nil {
			t.Errorf("id %q is not a UUID", got.GetId())
		}
		want := proto.Clone(in).(*networkv1.Segment)
		want.Mtu = 1500
		want.LeaseDuration = seconds(3600)
		if diff := cmp.Diff(want, got, protocmp.Transform(),
			protocmp.IgnoreFields(&networkv1.Segment{}, "id", "create_time", "update_time")); diff != "" {
			t.Errorf("created segment (-want +got):\n%s", diff)
		}
		if got.GetCreateTime() == nil || !got.GetCreateTime().AsTime().Equal(got.GetUpdateTime().AsTime()) {
			t.Errorf("create_time %v, update_time %v: want both set and equal", got.GetCreateTime(), got.GetUpdateTime())
		}

		read, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: got.GetId()}))
		if err != nil {
			t.Fatalf("GetSegment: %v", err)
		}
		if diff := cmp.Diff(got, read.Msg.GetSegment(), protocmp.Transform()); diff != "" {
			t.Errorf("GetSegment differs from CreateSegment (-create +get):\n%s", diff)
		}
	})
}

func TestCreateSegmentIsIdempotent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		first := createSegment(t, e, rack1())
		tests := map[string]func(s *networkv1.Segment){
			"identical":              func(*networkv1.Segment) {},
			"default mtu spelled":    func(s *networkv1.Segment) { s.Mtu = 1500 },
			"default lease spelled":  func(s *networkv1.Segment) { s.LeaseDuration = seconds(3600) },
			"reservation upper case": func(s *networkv1.Segment) { s.Reservations[0].Mac = "02:AA:00:00:00:01" },
		}
		for name, change := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				in := rack1()
				change(in)
				again := createSegment(t, e, in)
				if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
					t.Errorf("second create returned another segment (-first +second):\n%s", diff)
				}
			})
		}
	})
}

func TestListSegments(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		names := []string{"echo", "alpha", "delta", "charlie", "bravo"}
		for i, n := range names {
			createSegment(t, e, &networkv1.Segment{Name: n, Prefix: fmt.Sprintf("10.20.%d.0/24", i)})
		}
		want := slices.Sorted(slices.Values(names))

		t.Run("all at once", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{}))
			if err != nil {
				t.Fatalf("ListSegments: %v", err)
			}
			if diff := cmp.Diff(want, segmentNames(resp.Msg.GetSegments())); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if resp.Msg.GetNextPageToken() != "" {
				t.Errorf("next_page_token = %q on the only page", resp.Msg.GetNextPageToken())
			}
		})
		t.Run("two per page", func(t *testing.T) {
			t.Parallel()
			var got []string
			var sizes []int
			token := ""
			for range 10 {
				resp, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{
					PageSize: 2, PageToken: token,
				}))
				if err != nil {
					t.Fatalf("ListSegments: %v", err)
				}
				got = append(got, segmentNames(resp.Msg.GetSegments())...)
				sizes = append(sizes, len(resp.Msg.GetSegments()))
				if token = resp.Msg.GetNextPageToken(); token == "" {
					break
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("names over all pages (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]int{2, 2, 1}, sizes); diff != "" {
				t.Errorf("page sizes (-want +got):\n%s", diff)
			}
		})
		t.Run("by name", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{Name: "delta"}))
			if err != nil {
				t.Fatalf("ListSegments: %v", err)
			}
			if diff := cmp.Diff([]string{"delta"}, segmentNames(resp.Msg.GetSegments())); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
		t.Run("token with other filter", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{PageSize: 2}))
			if err != nil {
				t.Fatalf("ListSegments: %v", err)
			}
			_, err = e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{
				PageSize: 2, PageToken: resp.Msg.GetNextPageToken(), Name: "delta",
			}))
			wantError(t, err, connect.CodeInvalidArgument, "page_token")
		})
	})
}

func segmentNames(segs []*networkv1.Segment) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.GetName()
	}
	return out
}

// numbered is a valid segment of its own: name seg-<i>, prefix 10.<100+i>.0.0/24.
func numbered(i int) *networkv1.Segment {
	p := fmt.Sprintf("10.%d.0.", 100+i)
	return &networkv1.Segment{
		Name:         fmt.Sprintf("seg-%d", i),
		Prefix:       p + "0/24",
		Gateway:      p + "1",
		DnsServers:   []string{p + "2"},
		Domain:       "example.net",
		Ranges:       []*networkv1.AddressRange{{Start: p + "10", End: p + "20"}},
		Reservations: []*networkv1.Reservation{{Mac: testMAC(i), Address: p + "5"}},
		NtpServers:   []string{p + "4"},
	}
}

func TestUpdateSegment(t *testing.T) {
	t.Parallel()
	// Every case sends its segment with all of these changes and a mask
	// naming some of them: exactly the masked fields must change.
	changes := map[string]func(s *networkv1.Segment, i int){
		"name":        func(s *networkv1.Segment, i int) { s.Name = fmt.Sprintf("renamed-%d", i) },
		"gateway":     func(s *networkv1.Segment, i int) { s.Gateway = fmt.Sprintf("10.%d.0.254", 100+i) },
		"dns_servers": func(s *networkv1.Segment, i int) { s.DnsServers = []string{"1.1.1.1", "8.8.8.8"} },
		"domain":      func(s *networkv1.Segment, i int) { s.Domain = "other.example.net" },
		"mtu":         func(s *networkv1.Segment, i int) { s.Mtu = 9000 },
		"ranges": func(s *networkv1.Segment, i int) {
			p := fmt.Sprintf("10.%d.0.", 100+i)
			s.Ranges = []*networkv1.AddressRange{{Start: p + "100", End: p + "200"}, {Start: p + "30", End: p + "40"}}
		},
		"reservations": func(s *networkv1.Segment, i int) {
			s.Reservations = []*networkv1.Reservation{{Mac: testMAC(1000 + i), Address: fmt.Sprintf("10.%d.0.6", 100+i)}}
		},
		"relay_addresses": func(s *networkv1.Segment, i int) { s.RelayAddresses = []string{fmt.Sprintf("192.168.50.%d", i)} },
		"ntp_servers":     func(s *networkv1.Segment, i int) { s.NtpServers = nil },
		"lease_duration":  func(s *networkv1.Segment, i int) { s.LeaseDuration = seconds(600) },
	}
	tests := map[string]struct {
		i     int
		paths []string
	}{
		"mtu only":           {1, []string{"mtu"}},
		"name only":          {2, []string{"name"}},
		"ranges and gateway": {3, []string{"ranges", "gateway"}},
		"reservations":       {4, []string{"reservations"}},
		"lease and ntp":      {5, []string{"lease_duration", "ntp_servers"}},
		"dns domain relays":  {6, []string{"dns_servers", "domain", "relay_addresses"}},
		"every field":        {7, slices.Sorted(maps.Keys(changes))},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				created := createSegment(t, e, numbered(tc.i))

				req := proto.Clone(created).(*networkv1.Segment)
				req.Prefix = "10.0.0.0/8" // never applied: the prefix cannot change
				for _, change := range changes {
					change(req, tc.i)
				}
				want := proto.Clone(created).(*networkv1.Segment)
				for _, p := range tc.paths {
					changes[p](want, tc.i)
				}

				resp, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
					Segment: req, UpdateMask: mask(tc.paths...),
				}))
				if err != nil {
					t.Fatalf("UpdateSegment: %v", err)
				}
				got := resp.Msg.GetSegment()
				if diff := cmp.Diff(want, got, protocmp.Transform(),
					protocmp.IgnoreFields(&networkv1.Segment{}, "update_time")); diff != "" {
					t.Errorf("updated segment (-want +got):\n%s", diff)
				}
				if got.GetUpdateTime().AsTime().Before(created.GetUpdateTime().AsTime()) {
					t.Errorf("update_time went back from %v to %v", created.GetUpdateTime().AsTime(), got.GetUpdateTime().AsTime())
				}
				read, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: created.GetId()}))
				if err != nil {
					t.Fatalf("GetSegment: %v", err)
				}
				if diff := cmp.Diff(got, read.Msg.GetSegment(), protocmp.Transform()); diff != "" {
					t.Errorf("GetSegment differs from UpdateSegment (-update +get):\n%s", diff)
				}
			})
		}
	})
}

// TestUpdateSegmentPartial sends only the id and the masked fields, as the
// proto documents ("with id set and the fields named in update_mask");
// fields outside the mask are ignored, valid or not.
func TestUpdateSegmentPartial(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in    *networkv1.Segment
		paths []string
		want  func(s *networkv1.Segment)
	}{
		"mtu": {&networkv1.Segment{Mtu: 9000}, []string{"mtu"},
			func(s *networkv1.Segment) { s.Mtu = 9000 }},
		"name": {&networkv1.Segment{Name: "renamed"}, []string{"name"},
			func(s *networkv1.Segment) { s.Name = "renamed" }},
		"clear gateway": {&networkv1.Segment{}, []string{"gateway"},
			func(s *networkv1.Segment) { s.Gateway = "" }},
		"unmasked invalid fields ignored": {&networkv1.Segment{Name: "Not_Valid", Prefix: "x", Mtu: 1, Domain: "example.org"},
			[]string{"domain"}, func(s *networkv1.Segment) { s.Domain = "example.org" }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, e *env) {
				created := createSegment(t, e, rack1())
				in := proto.Clone(tc.in).(*networkv1.Segment)
				in.Id = created.GetId()
				resp, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
					Segment: in, UpdateMask: mask(tc.paths...),
				}))
				if err != nil {
					t.Fatalf("UpdateSegment: %v", err)
				}
				want := proto.Clone(created).(*networkv1.Segment)
				tc.want(want)
				if diff := cmp.Diff(want, resp.Msg.GetSegment(), protocmp.Transform(),
					protocmp.IgnoreFields(&networkv1.Segment{}, "update_time")); diff != "" {
					t.Errorf("updated segment (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestUpdateSegmentUnchangedKeepsUpdateTime(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		created := createSegment(t, e, rack1())
		resp, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
			Segment: created, UpdateMask: mask("mtu", "ranges", "reservations"),
		}))
		if err != nil {
			t.Fatalf("UpdateSegment: %v", err)
		}
		if diff := cmp.Diff(created, resp.Msg.GetSegment(), protocmp.Transform()); diff != "" {
			t.Errorf("a no-op update changed the segment (-before +after):\n%s", diff)
		}
	})
}

func TestDeleteSegment(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		id := seg.GetId()
		del := func() error {
			_, err := e.Segments.DeleteSegment(t.Context(), connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: id}))
			return err
		}
		mac := testMAC(7)
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: id, Mac: mac})
		wantError(t, del(), connect.CodeFailedPrecondition, "lease")

		release(t, e, id, mac)
		if err := del(); err != nil {
			t.Fatalf("DeleteSegment after release: %v", err)
		}
		_, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: id}))
		wantError(t, err, connect.CodeNotFound, id)
		wantError(t, del(), connect.CodeNotFound, id)

		// The name and prefix are free again.
		again := createSegment(t, e, rack1())
		if again.GetId() == id {
			t.Errorf("re-created segment has the deleted segment's id %s", id)
		}
	})
}

func TestDeleteSegmentWithExpiredLease(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: testMAC(1)})
		expireLease(t, e, seg.GetId(), l.GetMac(), time.Now().Add(-time.Minute))
		if _, err := e.Segments.DeleteSegment(t.Context(), connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: seg.GetId()})); err != nil {
			t.Fatalf("DeleteSegment with only an expired lease: %v", err)
		}
	})
}
