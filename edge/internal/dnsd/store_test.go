package dnsd

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

func testParams() ZoneParams {
	return ZoneParams{
		PrimaryNS: "ns1.example.net.", Contact: "hostmaster.example.net.", NS: []string{"ns1.example.net."},
		TTL: 300, Refresh: 3600, Retry: 600, Expire: 604800, Minimum: 60, JournalLen: 3,
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testSnapshot: segment a (10.0.2.0/24, lab.example.com), segment b
// (10.0.3.64/26, rack.example.com, RFC 2317), segment c (10.1.0.0/20, no
// domain), two machines, one instance.
func testSnapshot(rev int64) Snapshot {
	return Snapshot{
		Revision: rev,
		Segments: []*Segment{
			{ID: "a", Domain: "lab.example.com.", Prefix: netip.MustParsePrefix("10.0.2.0/24"), Records: []StaticRecord{
				{Name: "www", Type: "CNAME", Value: "web1.lab.example.com."},
				{Name: "", Type: "TXT", Value: `"v=spf1 -all"`},
				{Name: "_http._tcp", Type: "SRV", TTL: 60, Value: "10 5 80 web1.lab.example.com."},
				{Name: "ext", Type: "CNAME", Value: "www.example.org."},
			}},
			{ID: "b", Domain: "rack.example.com.", Prefix: netip.MustParsePrefix("10.0.3.64/26")},
			{ID: "c", Prefix: netip.MustParsePrefix("10.1.0.0/20")},
		},
		Machines: []*Machine{
			{ID: "m1", Hostname: "web1", Interfaces: []Interface{{SegmentID: "a", Address: netip.MustParseAddr("10.0.2.10")}}},
			{ID: "m2", Hostname: "db1", Interfaces: []Interface{
				{SegmentID: "b", Address: netip.MustParseAddr("10.0.3.70")},
				{SegmentID: "c", Address: netip.MustParseAddr("10.1.1.5")},
			}},
			{ID: "m3", Hostname: "", Interfaces: []Interface{{SegmentID: "a", Address: netip.MustParseAddr("10.0.2.11")}}},
		},
		Instances: []*Instance{
			{ID: "i1", Hostname: "tenant-a.app", Address: netip.MustParseAddr("10.0.2.10"), Active: true},
		},
	}
}

func loaded(t *testing.T) *Store {
	t.Helper()
	s := NewStore(testParams(), discard())
	s.Load(testSnapshot(100))
	return s
}

func query(s *Store, name string, t uint16) *dns.Msg {
	req := new(dns.Msg)
	req.SetQuestion(name, t)
	m, _, _, _ := s.answer(req, 1232)
	return m
}

func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	slices.Sort(out)
	return out
}

func TestZones(t *testing.T) {
	t.Parallel()
	s := loaded(t)
	var got []string
	for o := range s.zones {
		got = append(got, o)
	}
	slices.Sort(got)
	want := []string{"0.1.10.in-addr.arpa.", "1.1.10.in-addr.arpa.", "10.1.10.in-addr.arpa.", "11.1.10.in-addr.arpa.",
		"12.1.10.in-addr.arpa.", "13.1.10.in-addr.arpa.", "14.1.10.in-addr.arpa.", "15.1.10.in-addr.arpa.",
		"2.0.10.in-addr.arpa.", "2.1.10.in-addr.arpa.", "3.1.10.in-addr.arpa.", "4.1.10.in-addr.arpa.",
		"5.1.10.in-addr.arpa.", "6.1.10.in-addr.arpa.", "64-127.3.0.10.in-addr.arpa.", "7.1.10.in-addr.arpa.",
		"8.1.10.in-addr.arpa.", "9.1.10.in-addr.arpa.", "lab.example.com.", "rack.example.com."}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("zones (-want +got):\n%s", diff)
	}
	for _, z := range s.zones {
		if z.soa.Serial != 100 {
			t.Errorf("zone %s serial %d, want 100", z.origin, z.soa.Serial)
		}
	}
}

func TestReverseZones(t *testing.T) {
	t.Parallel()
	for prefix, want := range map[string][]string{
		"10.0.0.0/8":      {"10.in-addr.arpa."},
		"10.0.0.0/16":     {"0.10.in-addr.arpa."},
		"10.0.2.0/24":     {"2.0.10.in-addr.arpa."},
		"10.0.2.0/23":     {"2.0.10.in-addr.arpa.", "3.0.10.in-addr.arpa."},
		"10.0.2.64/26":    {"64-127.2.0.10.in-addr.arpa."},
		"10.0.2.128/25":   {"128-255.2.0.10.in-addr.arpa."},
		"10.0.2.7/32":     {"7-7.2.0.10.in-addr.arpa."},
		"10.64.0.0/15":    {"64.10.in-addr.arpa.", "65.10.in-addr.arpa."},
		"2001:db8::/32":   {"8.b.d.0.1.0.0.2.ip6.arpa."},
		"2001:db8:a::/50": {"a.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."},
	} {
		if diff := cmp.Diff(want, reverseZones(netip.MustParsePrefix(prefix))); diff != "" {
			t.Errorf("%s (-want +got):\n%s", prefix, diff)
		}
	}
	if got := ptrName(netip.MustParseAddr("10.0.2.70"), netip.MustParsePrefix("10.0.2.64/26")); got != "70.64-127.2.0.10.in-addr.arpa." {
		t.Errorf("RFC 2317 PTR name = %s", got)
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	s := loaded(t)
	for name, tc := range map[string]struct {
		qname  string
		qtype  uint16
		rcode  int
		answer []string
		soa    bool
	}{
		"A":               {"web1.lab.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"web1.lab.example.com.\t300\tIN\tA\t10.0.2.10"}, false},
		"case kept":       {"WeB1.Lab.Example.COM.", dns.TypeA, dns.RcodeSuccess, []string{"WeB1.Lab.Example.COM.\t300\tIN\tA\t10.0.2.10"}, false},
		"instance":        {"tenant-a.app.lab.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"tenant-a.app.lab.example.com.\t300\tIN\tA\t10.0.2.10"}, false},
		"PTR instance":    {"10.2.0.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"10.2.0.10.in-addr.arpa.\t300\tIN\tPTR\ttenant-a.app.lab.example.com."}, false},
		"PTR RFC 2317":    {"70.64-127.3.0.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"70.64-127.3.0.10.in-addr.arpa.\t300\tIN\tPTR\tdb1.rack.example.com."}, false},
		"no domain":       {"5.1.1.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil, true},
		"NODATA":          {"web1.lab.example.com.", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
		"NXDOMAIN":        {"nope.lab.example.com.", dns.TypeA, dns.RcodeNameError, nil, true},
		"empty non-term":  {"app.lab.example.com.", dns.TypeA, dns.RcodeSuccess, nil, true},
		"refused":         {"example.org.", dns.TypeA, dns.RcodeRefused, nil, false},
		"parent refused":  {"example.com.", dns.TypeSOA, dns.RcodeRefused, nil, false},
		"SOA":             {"lab.example.com.", dns.TypeSOA, dns.RcodeSuccess, []string{"lab.example.com.\t300\tIN\tSOA\tns1.example.net. hostmaster.example.net. 100 3600 600 604800 60"}, false},
		"NS":              {"lab.example.com.", dns.TypeNS, dns.RcodeSuccess, []string{"lab.example.com.\t300\tIN\tNS\tns1.example.net."}, false},
		"TXT apex":        {"lab.example.com.", dns.TypeTXT, dns.RcodeSuccess, []string{"lab.example.com.\t300\tIN\tTXT\t\"v=spf1 -all\""}, false},
		"SRV":             {"_http._tcp.lab.example.com.", dns.TypeSRV, dns.RcodeSuccess, []string{"_http._tcp.lab.example.com.\t60\tIN\tSRV\t10 5 80 web1.lab.example.com."}, false},
		"CNAME chased":    {"www.lab.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"web1.lab.example.com.\t300\tIN\tA\t10.0.2.10", "www.lab.example.com.\t300\tIN\tCNAME\tweb1.lab.example.com."}, false},
		"CNAME outside":   {"ext.lab.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"ext.lab.example.com.\t300\tIN\tCNAME\twww.example.org."}, false},
		"CNAME asked":     {"www.lab.example.com.", dns.TypeCNAME, dns.RcodeSuccess, []string{"www.lab.example.com.\t300\tIN\tCNAME\tweb1.lab.example.com."}, false},
		"ANY one RRset":   {"lab.example.com.", dns.TypeANY, dns.RcodeSuccess, []string{"lab.example.com.\t300\tIN\tNS\tns1.example.net."}, false},
		"no hostname":     {"11.2.0.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil, true},
		"machine PTR":     {"5.1.1.10.in-addr.arpa.", dns.TypeA, dns.RcodeNameError, nil, true},
		"reverse apex NS": {"64-127.3.0.10.in-addr.arpa.", dns.TypeNS, dns.RcodeSuccess, []string{"64-127.3.0.10.in-addr.arpa.\t300\tIN\tNS\tns1.example.net."}, false},
	} {
		t.Run(name, func(t *testing.T) {
			m := query(s, tc.qname, tc.qtype)
			if m.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			if diff := cmp.Diff(tc.answer, rrStrings(m.Answer)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if tc.soa {
				if len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA || m.Ns[0].Header().Ttl != 60 {
					t.Errorf("authority %v, want the zone's SOA with TTL 60", m.Ns)
				}
			} else if len(m.Ns) != 0 {
				t.Errorf("authority %v, want none", m.Ns)
			}
			if m.Authoritative != (tc.rcode != dns.RcodeRefused) || m.RecursionAvailable {
				t.Errorf("AA %v RA %v", m.Authoritative, m.RecursionAvailable)
			}
		})
	}
}

// TestIncremental checks that a machine's change touches only its own
// records, journals the diff, and moves the serial of only the zones it
// changed.
func TestIncremental(t *testing.T) {
	t.Parallel()
	s := loaded(t)
	s.PutMachine(101, &Machine{ID: "m1", Hostname: "web2", Interfaces: []Interface{{SegmentID: "a", Address: netip.MustParseAddr("10.0.2.10")}}})
	if m := query(s, "web1.lab.example.com.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("old name: rcode %s", dns.RcodeToString[m.Rcode])
	}
	if m := query(s, "web2.lab.example.com.", dns.TypeA); len(m.Answer) != 1 {
		t.Errorf("new name: answer %v", m.Answer)
	}
	// The PTR is the instance's: unchanged, so the reverse zone keeps
	// its serial.
	if z := s.zones["2.0.10.in-addr.arpa."]; z.soa.Serial != 100 || len(z.journal) != 0 {
		t.Errorf("reverse zone serial %d, journal %d; want 100 and none", z.soa.Serial, len(z.journal))
	}
	z := s.zones["lab.example.com."]
	if z.soa.Serial != 101 || len(z.journal) != 1 {
		t.Fatalf("forward zone serial %d journal %d", z.soa.Serial, len(z.journal))
	}
	d := z.journal[0]
	if d.From != 100 || d.To != 101 {
		t.Errorf("diff %d -> %d", d.From, d.To)
	}
	if diff := cmp.Diff([]string{"web1.lab.example.com.\t300\tIN\tA\t10.0.2.10"}, rrStrings(d.Removed)); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"web2.lab.example.com.\t300\tIN\tA\t10.0.2.10"}, rrStrings(d.Added)); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	// Releasing the instance gives the PTR back to the machine.
	s.PutInstance(102, &Instance{ID: "i1", Hostname: "tenant-a.app", Address: netip.MustParseAddr("10.0.2.10")})
	if m := query(s, "10.2.0.10.in-addr.arpa.", dns.TypePTR); len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != "web2.lab.example.com." {
		t.Errorf("PTR after release: %v", m.Answer)
	}
	if m := query(s, "tenant-a.app.lab.example.com.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("released instance still answers")
	}
	// ENT "app" went away with it.
	if m := query(s, "app.lab.example.com.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("app after release: %s", dns.RcodeToString[m.Rcode])
	}
	// An unchanged machine changes nothing.
	before := s.zones["lab.example.com."].soa.Serial
	s.PutMachine(103, &Machine{ID: "m1", Hostname: "web2", Interfaces: []Interface{{SegmentID: "a", Address: netip.MustParseAddr("10.0.2.10")}}})
	if got := s.zones["lab.example.com."].soa.Serial; got != before {
		t.Errorf("serial moved from %d to %d without a change", before, got)
	}
}

func TestJournal(t *testing.T) {
	t.Parallel()
	s := loaded(t)
	for i := range 5 {
		s.PutMachine(int64(101+i), &Machine{ID: "m9", Hostname: "h" + string(rune('a'+i)), Interfaces: []Interface{{SegmentID: "a", Address: netip.MustParseAddr("10.0.2.99")}}})
	}
	soa, diffs, ok := s.Changes("LAB.example.com.", 102)
	if !ok || soa.Serial != 105 || len(diffs) != 3 || diffs[0].From != 102 || diffs[2].To != 105 {
		t.Fatalf("Changes from 102: ok %v soa %v diffs %d", ok, soa, len(diffs))
	}
	if _, _, ok := s.Changes("lab.example.com.", 100); ok {
		t.Errorf("Changes from 100 reached past the journal of 3")
	}
	if _, diffs, ok := s.Changes("lab.example.com.", 105); !ok || len(diffs) != 0 {
		t.Errorf("Changes from the current serial: ok %v diffs %d", ok, len(diffs))
	}
	soa, rrs, ok := s.Snapshot("lab.example.com.")
	if !ok || soa.Serial != 105 {
		t.Fatalf("Snapshot: %v %v", ok, soa)
	}
	var names []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeSOA {
			t.Errorf("Snapshot holds a SOA besides the first")
		}
		names = append(names, rr.Header().Name)
	}
	if !slices.Contains(names, "he.lab.example.com.") || slices.Contains(names, "ha.lab.example.com.") {
		t.Errorf("Snapshot names %v", names)
	}
	if o, ok := s.Zone("X.He.lab.example.com."); !ok || o != "lab.example.com." {
		t.Errorf("Zone = %q %v", o, ok)
	}
	if _, ok := s.Zone("example.org."); ok {
		t.Errorf("Zone found example.org.")
	}
}

// TestResync checks that a second snapshot (the stream started over)
// journals only what differs.
func TestResync(t *testing.T) {
	t.Parallel()
	s := loaded(t)
	snap := testSnapshot(200)
	snap.Machines = snap.Machines[1:] // web1 deleted while the stream was down
	snap.Segments[1].Domain = "rack2.example.com."
	got := make(chan serialChange, 10)
	s.Subscribe(func(origin string, serial uint32) { got <- serialChange{origin, serial} })
	s.Load(snap)
	if c := <-got; c.serial != 200 {
		t.Errorf("subscriber told %+v, want serial 200", c)
	}
	if z := s.zones["lab.example.com."]; z.soa.Serial != 200 || len(z.journal) != 1 ||
		len(z.journal[0].Removed) != 1 || len(z.journal[0].Added) != 0 {
		t.Errorf("lab zone after resync: serial %d journal %+v", z.soa.Serial, z.journal)
	}
	if z := s.zones["2.0.10.in-addr.arpa."]; z.soa.Serial != 100 {
		t.Errorf("unchanged reverse zone serial %d, want 100", z.soa.Serial)
	}
	if s.zones["rack.example.com."] != nil || s.zones["rack2.example.com."] == nil {
		t.Errorf("renamed domain: zones not replaced")
	}
	if m := query(s, "db1.rack2.example.com.", dns.TypeA); len(m.Answer) != 1 {
		t.Errorf("db1 in new domain: %v", m.Answer)
	}
	if m := query(s, "70.64-127.3.0.10.in-addr.arpa.", dns.TypePTR); len(m.Answer) != 1 || !strings.HasSuffix(m.Answer[0].(*dns.PTR).Ptr, "rack2.example.com.") {
		t.Errorf("PTR after rename: %v", m.Answer)
	}
}
