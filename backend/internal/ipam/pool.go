// Package ipam leases IPv4 addresses of network segments to MACs
// (carbide.network.v1.AddressService) and holds the address arithmetic the
// segment checks share. The leases table's unique indexes, not this code,
// are what keep one address from two MACs.
package ipam

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"iter"
	"net/netip"

	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/schema"
)

// Range is an inclusive range of IPv4 addresses.
type Range struct {
	Start, End netip.Addr
}

// Size is the number of addresses in r.
func (r Range) Size() uint32 { return toUint(r.End) - toUint(r.Start) + 1 }

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// Pool is the set of addresses a segment leases dynamically: its ranges,
// less the network, broadcast and gateway addresses and the reserved ones.
type Pool struct {
	Prefix   netip.Prefix
	Gateway  netip.Addr
	Ranges   []Range
	Reserved map[netip.Addr]bool
	// Declined addresses were reported in use by a DHCP client and are
	// held back until their hold ends.
	Declined map[netip.Addr]bool
}

// PoolOf builds the pool of a stored segment, given its reserved addresses.
func PoolOf(seg *ent.Segment, reserved []string) (*Pool, error) {
	p := &Pool{Reserved: make(map[netip.Addr]bool, len(reserved))}
	var err error
	if p.Prefix, err = netip.ParsePrefix(seg.Prefix); err != nil {
		return nil, fmt.Errorf("segment %s has a bad prefix %q: %w", seg.ID, seg.Prefix, err)
	}
	if seg.Gateway != "" {
		if p.Gateway, err = netip.ParseAddr(seg.Gateway); err != nil {
			return nil, fmt.Errorf("segment %s has a bad gateway %q: %w", seg.ID, seg.Gateway, err)
		}
	}
	if p.Ranges, err = ParseRanges(seg.Ranges); err != nil {
		return nil, fmt.Errorf("segment %s: %w", seg.ID, err)
	}
	for _, r := range reserved {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return nil, fmt.Errorf("segment %s has a bad reservation %q: %w", seg.ID, r, err)
		}
		p.Reserved[a] = true
	}
	return p, nil
}

// ParseRanges parses stored ranges.
func ParseRanges(rs []schema.AddressRange) ([]Range, error) {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		s, err1 := netip.ParseAddr(r.Start)
		e, err2 := netip.ParseAddr(r.End)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad range %s-%s", r.Start, r.End)
		}
		out = append(out, Range{Start: s, End: e})
	}
	return out, nil
}

// Excluded reports whether a is never leased from the pool: the network or
// broadcast address, the gateway, a reserved or a declined address.
func (p *Pool) Excluded(a netip.Addr) bool {
	return a == p.Prefix.Addr() || a == Broadcast(p.Prefix) || a == p.Gateway || p.Reserved[a] || p.Declined[a]
}

// Leasable reports whether a may be leased dynamically.
func (p *Pool) Leasable(a netip.Addr) bool {
	if p.Excluded(a) {
		return false
	}
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Size is the number of addresses in the ranges (before exclusions).
func (p *Pool) Size() uint64 {
	var n uint64
	for _, r := range p.Ranges {
		n += uint64(r.Size())
	}
	return n
}

// Walk yields every leasable address once, starting at a position derived
// from mac and wrapping around. Concurrent allocations for different MACs
// thus start in different places and rarely race for the same address,
// and a MAC tends to get the same address each time its lease is rebuilt.
func (p *Pool) Walk(mac string) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		size := p.Size()
		if size == 0 {
			return
		}
		start := p.start(mac)
		for i := uint64(0); i < size; i++ {
			a := p.at((start + i) % size)
			if !a.IsValid() || p.Excluded(a) {
				continue
			}
			if !yield(a) {
				return
			}
		}
	}
}

// start is the offset of the concatenated ranges where mac's walk begins.
// The pool must not be empty.
func (p *Pool) start(mac string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(mac))
	return h.Sum64() % p.Size()
}

// WalkRanges is the walk of mac (see Walk) as ranges, in order: from its
// start to the end of that range, the ranges after it, the ranges before
// it, then the start of its range up to where the walk began. Unlike Walk,
// the ranges still hold the excluded addresses.
func (p *Pool) WalkRanges(mac string) []Range {
	if p.Size() == 0 {
		return nil
	}
	off := p.start(mac)
	k := 0
	for off >= uint64(p.Ranges[k].Size()) {
		off -= uint64(p.Ranges[k].Size())
		k++
	}
	first := p.Ranges[k]
	from := fromUint(toUint(first.Start) + uint32(off))
	spans := []Range{{Start: from, End: first.End}}
	spans = append(spans, p.Ranges[k+1:]...)
	spans = append(spans, p.Ranges[:k]...)
	if off > 0 {
		spans = append(spans, Range{Start: first.Start, End: from.Prev()})
	}
	return spans
}

// at returns the address at offset n of the concatenated ranges.
func (p *Pool) at(n uint64) netip.Addr {
	for _, r := range p.Ranges {
		if n < uint64(r.Size()) {
			return fromUint(toUint(r.Start) + uint32(n))
		}
		n -= uint64(r.Size())
	}
	return netip.Addr{} // not reached: callers pass n < Size()
}

// Broadcast is the last address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	host := uint32(1)<<(32-p.Bits()) - 1
	return fromUint(toUint(p.Addr()) | host)
}

func toUint(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func fromUint(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}
