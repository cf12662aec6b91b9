package dnsd

import (
	"encoding/binary"
	"net"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The fast path answers a plain UDP query (one question of class IN,
// opcode QUERY, no answer or authority records, at most an EDNS OPT
// record, whose options it ignores) from an answer packed before: it copies the
// bytes, sets the query's ID, RD and CD bits and writes the question's
// name over the cached one (same length, only the case differs; the
// answers' owner names point at it). Answers are cached by lower-case
// name, type and EDNS/DO flags, each with the generation of its zone: any
// change of that zone makes the answer stale. Everything else goes through
// the dns.Server and ServeDNS.

// cached is one packed answer.
type cached struct {
	resp    []byte
	zone    *zone
	gen     uint64
	counter prometheus.Counter
}

// plainQuery is what the fast path reads of a query.
type plainQuery struct {
	nameEnd int // offset after the question's name
	qtype   uint16
	edns    bool
	do      bool
	udpSize uint16
}

// parsePlain reads b as a plain query and appends its cache key (the
// lower-case name in wire form, the type, the EDNS flags) to key.
func parsePlain(b, key []byte) (plainQuery, []byte, bool) {
	var q plainQuery
	if len(b) < 17 || b[2]&0xFA != 0 || // QR, opcode, AA, TC: a plain query has none
		binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) != 0 ||
		binary.BigEndian.Uint16(b[8:]) != 0 || binary.BigEndian.Uint16(b[10:]) > 1 {
		return q, key, false
	}
	off := 12
	for {
		if off >= len(b) {
			return q, key, false
		}
		l := int(b[off])
		if l == 0 {
			key = append(key, 0)
			off++
			break
		}
		if l > 63 || off+1+l > len(b) || off+1+l-12 > 254 {
			return q, key, false
		}
		key = append(key, byte(l))
		for _, c := range b[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			key = append(key, c)
		}
		off += 1 + l
	}
	if off+4 > len(b) || binary.BigEndian.Uint16(b[off+2:]) != dns.ClassINET {
		return q, key, false
	}
	q.nameEnd = off
	q.qtype = binary.BigEndian.Uint16(b[off:])
	switch q.qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY:
		return q, key, false
	}
	off += 4
	if binary.BigEndian.Uint16(b[10:]) == 1 {
		// OPT: root name, type 41, class = payload size, TTL = extended
		// rcode, version, DO and zero bits, then options. The daemon
		// supports no option, so it ignores them (a client's COOKIE
		// too, as RFC 7873 lets a server without cookies do); the full
		// path answers the same.
		if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT ||
			b[off+5] != 0 || b[off+6] != 0 {
			return q, key, false
		}
		q.edns = true
		q.udpSize = binary.BigEndian.Uint16(b[off+3:])
		q.do = b[off+7]&0x80 != 0
		rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
		off += 11
		if off+rdlen != len(b) {
			return q, key, false
		}
		for opts := b[off : off+rdlen]; len(opts) > 0; {
			if len(opts) < 4 || 4+int(binary.BigEndian.Uint16(opts[2:])) > len(opts) {
				return q, key, false
			}
			opts = opts[4+int(binary.BigEndian.Uint16(opts[2:])):]
		}
		off += rdlen
	}
	if off != len(b) {
		return q, key, false
	}
	var flags byte
	if q.edns {
		flags |= 1
	}
	if q.do {
		flags |= 2
	}
	key = append(key, byte(q.qtype>>8), byte(q.qtype), flags)
	return q, key, true
}

// udpReader is the dns.Server's UDP reader: it answers plain queries
// itself, on the reading goroutine, and hands the server only the rest.
type udpReader struct {
	dns.Reader
	h   *Handler
	buf []byte
	out []byte
	key []byte
}

// decorate is the dns.Server's DecorateReader.
func (h *Handler) decorate(r dns.Reader) dns.Reader {
	return &udpReader{Reader: r, h: h, buf: make([]byte, 65535), out: make([]byte, 0, 65535), key: make([]byte, 0, 300)}
}

// ReadUDP implements dns.Reader. It reads without a deadline: the server
// stops it by closing the socket.
func (u *udpReader) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		n, sess, err := dns.ReadFromSessionUDP(conn, u.buf)
		if err != nil {
			return nil, nil, err
		}
		pkt := u.buf[:n]
		if u.fast(conn, sess, pkt) {
			continue
		}
		return append([]byte(nil), pkt...), sess, nil
	}
}

// fast answers pkt if it is a plain query and reports whether it did (or
// dropped it for the rate limit).
func (u *udpReader) fast(conn *net.UDPConn, sess *dns.SessionUDP, pkt []byte) (done bool) {
	h := u.h
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			h.panicked(v, nil)
			done = true
		}
	}()
	q, key, ok := parsePlain(pkt, u.key[:0])
	u.key = key
	if !ok {
		return false
	}
	if !h.rrl.allow(addrOf(sess.RemoteAddr())) {
		h.metrics.drop(reasonRateLimited)
		return true
	}
	limit := dns.MinMsgSize
	if q.edns {
		limit = int(max(dns.MinMsgSize, min(q.udpSize, h.udpSize)))
	}
	c := h.cache.get(key)
	if c == nil {
		if c = h.fill(pkt, key); c == nil {
			return false
		}
	}
	if len(c.resp) > limit {
		return false
	}
	out := append(u.out[:0], c.resp...)
	out[0], out[1] = pkt[0], pkt[1]
	out[2] = out[2]&^0x01 | pkt[2]&0x01 // RD
	out[3] = out[3]&^0x10 | pkt[3]&0x10 // CD
	copy(out[12:q.nameEnd], pkt[12:q.nameEnd])
	if _, err := dns.WriteToSessionUDP(conn, out, sess); err != nil {
		h.metrics.drop(reasonSendError)
		return true
	}
	c.counter.Inc()
	h.metrics.observe(start)
	return true
}

// get returns the cached answer of key if it is still current.
func (c *answerCache) get(key []byte) *cached {
	c.mu.RLock()
	e := c.m[string(key)]
	c.mu.RUnlock()
	if e == nil || e.zone.gen.Load() != e.gen {
		return nil
	}
	return e
}

// fill answers the plain query pkt through the full path with the name in
// lower case, packs the answer and caches it when it can be; nil when it
// cannot (the full path then answers pkt).
func (h *Handler) fill(pkt, key []byte) *cached {
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil || len(req.Question) != 1 {
		return nil
	}
	req.Question[0].Name = lower(req.Question[0].Name)
	m, z, gen, cacheable := h.store.answer(req, h.udpSize)
	if !cacheable || z == nil || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return nil
	}
	resp, err := m.Pack()
	if err != nil {
		return nil
	}
	e := &cached{resp: resp, zone: z, gen: gen, counter: h.metrics.query(req.Question[0].Qtype, m.Rcode)}
	h.cache.mu.Lock()
	if len(h.cache.m) >= h.cache.max {
		clear(h.cache.m)
	}
	h.cache.m[string(key)] = e
	h.cache.mu.Unlock()
	return e
}
