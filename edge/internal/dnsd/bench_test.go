package dnsd

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// benchStore holds 100,000 machines in one /15 segment: 200,000 A and
// PTR records, the size of the benchmark in issue 15.
func benchStore(b *testing.B) *Store {
	b.Helper()
	snap := Snapshot{Revision: 7, Segments: []*Segment{{ID: "s", Domain: "bench.example.com.", Prefix: netip.MustParsePrefix("10.0.0.0/15")}}}
	base := netip.MustParseAddr("10.0.1.0").As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8
	for i := range 100000 {
		v := start + uint32(i)
		snap.Machines = append(snap.Machines, &Machine{ID: fmt.Sprint(i), Hostname: fmt.Sprintf("host%d", i),
			Interfaces: []Interface{{SegmentID: "s", Address: netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})}}})
	}
	s := NewStore(testParams(), discard())
	s.Load(snap)
	return s
}

// BenchmarkFastPath is the fast path's work per query without the
// socket: parse, look up the cached answer, patch a copy.
func BenchmarkFastPath(b *testing.B) {
	h := fuzzHandler(b)
	h.store = benchStore(b)
	pkt, _ := q("Host123.bench.example.com.", dns.TypeA).Pack()
	key := make([]byte, 0, 300)
	out := make([]byte, 0, 512)
	_, k, _ := parsePlain(pkt, key)
	if h.fill(pkt, k) == nil {
		b.Fatal("not cacheable")
	}
	b.ReportAllocs()
	for b.Loop() {
		pq, k, ok := parsePlain(pkt, key[:0])
		c := h.cache.get(k)
		if !ok || c == nil {
			b.Fatal("miss")
		}
		out = append(out[:0], c.resp...)
		copy(out[12:pq.nameEnd], pkt[12:pq.nameEnd])
	}
}

// BenchmarkFullPath answers through the store and packs the answer, as
// the full path does for a query the fast path cannot take.
func BenchmarkFullPath(b *testing.B) {
	s := benchStore(b)
	req := q("host123.bench.example.com.", dns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		m, _, _, _ := s.answer(req, 1232)
		if _, err := m.Pack(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMachineChange is one machine's rename in a store of 200,000
// records: it must cost that machine's records, not the zone's.
func BenchmarkMachineChange(b *testing.B) {
	s := benchStore(b)
	rev := int64(8)
	b.ReportAllocs()
	for b.Loop() {
		rev++
		s.PutMachine(rev, &Machine{ID: "5", Hostname: fmt.Sprintf("renamed%d", rev%2),
			Interfaces: []Interface{{SegmentID: "s", Address: netip.MustParseAddr("10.0.1.5")}}})
	}
}
