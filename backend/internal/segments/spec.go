package segments

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/ent/schema"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

const (
	defaultMTU   = 1500
	defaultLease = time.Hour
)

// spec is a segment's settings, checked and in canonical form.
type spec struct {
	name         string
	prefix       netip.Prefix
	gateway      string
	dnsServers   []string
	domain       string
	mtu          int
	ranges       []schema.AddressRange
	reservations []reservationSpec
	relays       []string
	ntpServers   []string
	lease        time.Duration
	dnsRecords   []schema.DNSRecord
}

type reservationSpec struct {
	mac, address string
}

// checkSpec checks what protovalidate cannot — relations between fields —
// and returns the settings in canonical form, or InvalidArgument naming the
// first offending field.
func checkSpec(in *networkv1.Segment) (*spec, error) {
	bad := func(format string, args ...any) error {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("segment."+format, args...))
	}
	prefix, err := netip.ParsePrefix(in.GetPrefix())
	if err != nil || !prefix.Addr().Is4() || prefix != prefix.Masked() {
		return nil, bad("prefix: %q is not an IPv4 network such as 10.0.0.0/24", in.GetPrefix())
	}
	if prefix.Bits() > 30 {
		return nil, bad("prefix: %s leaves no room for clients; use /30 or shorter", prefix)
	}
	network, broadcast := prefix.Addr(), ipam.Broadcast(prefix)
	host := func(field, raw string) (netip.Addr, error) {
		a, err := netip.ParseAddr(raw)
		switch {
		case err != nil || !a.Is4():
			return a, bad("%s: %q is not an IPv4 address", field, raw)
		case !prefix.Contains(a):
			return a, bad("%s: %s is outside prefix %s", field, a, prefix)
		case a == network || a == broadcast:
			return a, bad("%s: %s is the network or broadcast address of %s", field, a, prefix)
		}
		return a, nil
	}
	s := &spec{
		name:   in.GetName(),
		prefix: prefix,
		domain: in.GetDomain(),
		mtu:    int(in.GetMtu()),
		lease:  in.GetLeaseDuration().AsDuration(),
	}
	if s.mtu == 0 {
		s.mtu = defaultMTU
	}
	if s.lease == 0 {
		s.lease = defaultLease
	}
	if s.dnsRecords, err = checkDNSRecords(s.domain, in.GetDnsRecords()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("segment.%w", err))
	}
	var gateway netip.Addr
	if in.GetGateway() != "" {
		if gateway, err = host("gateway", in.GetGateway()); err != nil {
			return nil, err
		}
		s.gateway = gateway.String()
	}
	if s.dnsServers, err = canonicalAddrs("dns_servers", in.GetDnsServers()); err != nil {
		return nil, err
	}
	if s.ntpServers, err = canonicalAddrs("ntp_servers", in.GetNtpServers()); err != nil {
		return nil, err
	}
	if s.relays, err = canonicalAddrs("relay_addresses", in.GetRelayAddresses()); err != nil {
		return nil, err
	}

	var ranges []ipam.Range
	for i, r := range in.GetRanges() {
		start, err := host(fmt.Sprintf("ranges[%d].start", i), r.GetStart())
		if err != nil {
			return nil, err
		}
		end, err := host(fmt.Sprintf("ranges[%d].end", i), r.GetEnd())
		if err != nil {
			return nil, err
		}
		if end.Less(start) {
			return nil, bad("ranges[%d]: end %s is before start %s", i, end, start)
		}
		cur := ipam.Range{Start: start, End: end}
		for j, prev := range ranges {
			if cur.Overlaps(prev) {
				return nil, bad("ranges[%d]: %s-%s overlaps ranges[%d] %s-%s", i, start, end, j, prev.Start, prev.End)
			}
		}
		ranges = append(ranges, cur)
		s.ranges = append(s.ranges, schema.AddressRange{Start: start.String(), End: end.String()})
	}

	macs := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i, r := range in.GetReservations() {
		mac := machines.CanonicalMAC(r.GetMac())
		a, err := host(fmt.Sprintf("reservations[%d].address", i), r.GetAddress())
		if err != nil {
			return nil, err
		}
		if a == gateway {
			return nil, bad("reservations[%d].address: %s is the gateway", i, a)
		}
		if j, dup := macs[mac]; dup {
			return nil, bad("reservations[%d].mac: %s is already reserved by reservations[%d]", i, mac, j)
		}
		if j, dup := addrs[a]; dup {
			return nil, bad("reservations[%d].address: %s is already reserved by reservations[%d]", i, a, j)
		}
		macs[mac], addrs[a] = i, i
		s.reservations = append(s.reservations, reservationSpec{mac: mac, address: a.String()})
	}
	return s, nil
}

func canonicalAddrs(field string, raw []string) ([]string, error) {
	out := make([]string, 0, len(raw))
	for i, r := range raw {
		a, err := netip.ParseAddr(r)
		if err != nil || !a.Is4() {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("segment.%s[%d]: %q is not an IPv4 address", field, i, r))
		}
		out = append(out, a.String())
	}
	return out, nil
}

// equal reports whether two specs describe the same segment.
func (s *spec) equal(o *spec) bool {
	return s.name == o.name && s.prefix == o.prefix && s.gateway == o.gateway &&
		slices.Equal(s.dnsServers, o.dnsServers) && s.domain == o.domain && s.mtu == o.mtu &&
		slices.Equal(s.ranges, o.ranges) && slices.Equal(s.reservations, o.reservations) &&
		slices.Equal(s.relays, o.relays) && slices.Equal(s.ntpServers, o.ntpServers) && s.lease == o.lease &&
		slices.Equal(s.dnsRecords, o.dnsRecords)
}
