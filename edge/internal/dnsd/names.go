package dnsd

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// reverseZones returns the reverse zones of a segment prefix (see
// docs/dns.md): IPv4 octet-aligned zones, a prefix between octets split
// into the zones of the next octet boundary it covers (a /20 into sixteen
// /24 zones), a prefix longer than /24 one RFC 2317 zone; IPv6 one zone
// at the prefix rounded down to a nibble.
func reverseZones(p netip.Prefix) []string {
	p = p.Masked()
	if p.Addr().Is6() {
		return []string{nibbleZone(p.Addr(), p.Bits()/4*4)}
	}
	bits := p.Bits()
	if bits > 24 {
		return []string{rfc2317Zone(p)}
	}
	zoneBits := (bits + 7) / 8 * 8
	if zoneBits == 0 {
		zoneBits = 8
	}
	n := 1 << (zoneBits - bits)
	zones := make([]string, 0, n)
	a := p.Addr().As4()
	base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	for i := range n {
		v := base + uint32(i)<<(32-zoneBits)
		addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		zones = append(zones, octetZone(addr, zoneBits/8))
	}
	return zones
}

// octetZone is the in-addr.arpa name of the first octets of a.
func octetZone(a netip.Addr, octets int) string {
	b := a.As4()
	var sb strings.Builder
	for i := octets - 1; i >= 0; i-- {
		sb.WriteString(strconv.Itoa(int(b[i])))
		sb.WriteByte('.')
	}
	sb.WriteString("in-addr.arpa.")
	return sb.String()
}

// rfc2317Zone is the RFC 2317 name of an IPv4 prefix longer than /24:
// <first>-<last>.<c>.<b>.<a>.in-addr.arpa.
func rfc2317Zone(p netip.Prefix) string {
	b := p.Masked().Addr().As4()
	first := int(b[3])
	last := first + (1 << (32 - p.Bits())) - 1
	return strconv.Itoa(first) + "-" + strconv.Itoa(last) + "." + octetZone(p.Addr(), 3)
}

// nibbleZone is the ip6.arpa name of the first bits (a multiple of 4)
// of a.
func nibbleZone(a netip.Addr, bits int) string {
	const hex = "0123456789abcdef"
	b := a.As16()
	var sb strings.Builder
	for i := bits/4 - 1; i >= 0; i-- {
		v := b[i/2]
		if i%2 == 0 {
			v >>= 4
		}
		sb.WriteByte(hex[v&0xf])
		sb.WriteByte('.')
	}
	sb.WriteString("ip6.arpa.")
	return sb.String()
}

// ptrName is the owner name of the PTR of a in the reverse zone of the
// segment prefix p that holds it: <d>.<first>-<last>.<c>.<b>.<a>.in-addr.arpa.
// in an RFC 2317 zone, the ordinary reverse name otherwise.
func ptrName(a netip.Addr, p netip.Prefix) string {
	if a.Is4() && p.Bits() > 24 {
		return strconv.Itoa(int(a.As4()[3])) + "." + rfc2317Zone(p)
	}
	name, _ := dns.ReverseAddr(a.String())
	return name
}

// fqdn returns s lower-cased and ending in a dot.
func fqdn(s string) string {
	return dns.Fqdn(strings.ToLower(s))
}
