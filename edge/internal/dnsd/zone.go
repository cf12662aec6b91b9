package dnsd

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// zone holds one zone's records in memory: its owner names, each with its
// RRsets, plus a count of the names below every name so that an empty
// non-terminal answers NODATA, not NXDOMAIN. The SOA is kept apart (its
// serial changes with every change); the journal holds the last diffs for
// IXFR. A zone is changed only under the store's write lock.
type zone struct {
	origin string
	soa    *dns.SOA
	nodes  map[string]*node
	// below counts, for each name from a record's parent up to (not
	// including) the origin, how many record names lie under it.
	below   map[string]int
	records int
	journal []Diff
	// gen changes with every change of the zone, which invalidates the
	// answers cached from it.
	gen atomic.Uint64
	// pending is the change being applied: RR text -> (+1 added, -1
	// removed), netted out at commit.
	pending map[string]*pendingRR
}

type pendingRR struct {
	rr    dns.RR
	delta int
}

// node is one owner name: its RRsets by type, each RR with the number of
// sources that contribute it.
type node struct {
	sets map[uint16][]entry
}

type entry struct {
	rr   dns.RR
	refs int
}

func newZone(origin string) *zone {
	return &zone{origin: origin, nodes: make(map[string]*node), below: make(map[string]int)}
}

// add places rr (owner lower-case, inside the zone) and reports whether it
// is new.
func (z *zone) add(rr dns.RR) {
	name := rr.Header().Name
	n := z.nodes[name]
	if n == nil {
		n = &node{sets: make(map[uint16][]entry, 1)}
		z.nodes[name] = n
		z.walkUp(name, 1)
	}
	t := rr.Header().Rrtype
	set := n.sets[t]
	for i := range set {
		if dns.IsDuplicate(set[i].rr, rr) {
			set[i].refs++
			return
		}
	}
	n.sets[t] = append(set, entry{rr: rr, refs: 1})
	z.records++
	z.note(rr, +1)
}

// remove takes away one contribution of rr.
func (z *zone) remove(rr dns.RR) {
	name := rr.Header().Name
	n := z.nodes[name]
	if n == nil {
		return
	}
	t := rr.Header().Rrtype
	set := n.sets[t]
	for i := range set {
		if !dns.IsDuplicate(set[i].rr, rr) {
			continue
		}
		if set[i].refs--; set[i].refs > 0 {
			return
		}
		old := set[i].rr
		set = slices.Delete(set, i, i+1)
		if len(set) == 0 {
			delete(n.sets, t)
		} else {
			n.sets[t] = set
		}
		z.records--
		z.note(old, -1)
		break
	}
	if len(n.sets) == 0 {
		delete(z.nodes, name)
		z.walkUp(name, -1)
	}
}

// walkUp adds d to the count of names below each ancestor of name inside
// the zone.
func (z *zone) walkUp(name string, d int) {
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		parent := name[off:]
		if len(parent) <= len(z.origin) {
			return
		}
		if z.below[parent] += d; z.below[parent] <= 0 {
			delete(z.below, parent)
		}
	}
}

func (z *zone) note(rr dns.RR, d int) {
	if z.pending == nil {
		return
	}
	key := rr.String()
	p := z.pending[key]
	if p == nil {
		p = &pendingRR{rr: rr}
		z.pending[key] = p
	}
	p.delta += d
}

// exists reports whether name has records or names below it.
func (z *zone) exists(name string) bool {
	return z.nodes[name] != nil || z.below[name] > 0 || name == z.origin
}

// rrset returns the RRs of name and type t.
func (z *zone) rrset(name string, t uint16) []dns.RR {
	if t == dns.TypeSOA && name == z.origin {
		return []dns.RR{z.soa}
	}
	n := z.nodes[name]
	if n == nil {
		return nil
	}
	set := n.sets[t]
	rrs := make([]dns.RR, len(set))
	for i := range set {
		rrs[i] = set[i].rr
	}
	return rrs
}

// types lists the types present at name, lowest first, the SOA included
// at the apex.
func (z *zone) types(name string) []uint16 {
	var ts []uint16
	if name == z.origin {
		ts = append(ts, dns.TypeSOA)
	}
	if n := z.nodes[name]; n != nil {
		for t := range n.sets {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	return ts
}

// all returns every record but the SOA, in a stable order.
func (z *zone) all() []dns.RR {
	names := make([]string, 0, len(z.nodes))
	for name := range z.nodes {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(a, b) })
	rrs := make([]dns.RR, 0, z.records)
	for _, name := range names {
		for _, t := range z.types(name) {
			if t != dns.TypeSOA {
				rrs = append(rrs, z.rrset(name, t)...)
			}
		}
	}
	return rrs
}

// inZone reports whether name (lower-case FQDN) is origin or below it.
func inZone(name, origin string) bool {
	return dns.IsSubDomain(origin, name)
}

// lower returns s in lower case without allocating when it already is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
