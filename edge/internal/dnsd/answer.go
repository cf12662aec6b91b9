package dnsd

import (
	"github.com/miekg/dns"
)

// maxChase bounds how many CNAMEs an answer follows within the zones.
const maxChase = 8

// answer builds the authoritative reply to a standard query req (opcode
// QUERY, not a transfer) from the store, without truncating it. The reply
// keeps the question's case in the question and in the owner of the first
// answer; cacheable says whether it depends on one zone only (the fast
// path caches it with that zone's generation).
func (s *Store) answer(req *dns.Msg, udpSize uint16) (m *dns.Msg, z *zone, gen uint64, cacheable bool) {
	m = new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	m.Compress = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(udpSize, opt.Do())
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m, nil, 0, false
		}
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m, nil, 0, false
	}
	q := req.Question[0]
	switch {
	case q.Qclass != dns.ClassINET:
		m.Rcode = dns.RcodeRefused
		return m, nil, 0, false
	case q.Qtype == dns.TypeOPT || q.Qtype == dns.TypeTSIG || q.Qtype == dns.TypeTKEY:
		m.Rcode = dns.RcodeFormatError
		return m, nil, 0, false
	}
	name := lower(q.Name)

	s.mu.RLock()
	defer s.mu.RUnlock()
	z = s.zoneOf(name)
	if z == nil {
		m.Rcode = dns.RcodeRefused
		return m, nil, 0, false
	}
	first, gen := z, z.gen.Load()
	cacheable = true
	m.Authoritative = true
	owner := q.Name
	for hop := 0; ; hop++ {
		if !z.exists(name) {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{negativeSOA(z.soa)}
			break
		}
		if q.Qtype == dns.TypeANY {
			// RFC 8482: one RRset is enough.
			ts := z.types(name)
			if len(ts) == 0 {
				m.Ns = []dns.RR{negativeSOA(z.soa)}
				break
			}
			m.Answer = appendOwned(m.Answer, z.rrset(name, ts[0]), owner)
			break
		}
		if rrs := z.rrset(name, q.Qtype); len(rrs) > 0 {
			m.Answer = appendOwned(m.Answer, rrs, owner)
			break
		}
		cn := z.rrset(name, dns.TypeCNAME)
		if len(cn) == 0 {
			m.Ns = []dns.RR{negativeSOA(z.soa)}
			break
		}
		m.Answer = appendOwned(m.Answer, cn, owner)
		target := cn[0].(*dns.CNAME).Target
		next := s.zoneOf(lower(target))
		if next == nil || hop+1 >= maxChase {
			break
		}
		if next != first {
			cacheable = false
		}
		z, name, owner = next, lower(target), target
	}
	return m, first, gen, cacheable
}

// appendOwned appends rrs, renamed to owner when that differs in case.
func appendOwned(dst, rrs []dns.RR, owner string) []dns.RR {
	for _, rr := range rrs {
		if rr.Header().Name != owner {
			rr = dns.Copy(rr)
			rr.Header().Name = owner
		}
		dst = append(dst, rr)
	}
	return dst
}

// negativeSOA is the SOA of a negative answer: its TTL is the smaller of
// the SOA's TTL and its minimum (RFC 2308).
func negativeSOA(soa *dns.SOA) dns.RR {
	c := *soa
	c.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return &c
}
