package dnsd

import (
	"encoding/binary"
	"net"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
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
// It reads and writes in batches (recvmmsg, sendmmsg): most of a fast
// answer's cost was the two system calls of each packet.
type udpReader struct {
	dns.Reader
	h     *Handler
	key   []byte
	batch *udpBatch // set up on the first ReadUDP: the reader also serves TCP
}

// udpBatch is one socket's batch state.
type udpBatch struct {
	conn *ipv4.PacketConn // recvmmsg/sendmmsg work on either family's socket
	in   []ipv4.Message
	out  []ipv4.Message
	nout int
	slow []slowPacket // read, not answered: for the full path, in order
	next int          // slow[next] is the next to return
	// outCounters are the queries counters of out's answers.
	outCounters []prometheus.Counter
	bound       bool // bound to one address: the kernel picks the answers' source
}

// slowPacket is a query the fast path left to the full path.
type slowPacket struct {
	pkt  []byte
	sess *dns.SessionUDP
}

// batchSize is how many packets one system call reads or writes at most.
const batchSize = 64

// oobSize fits the IPv4 or IPv6 control message that tells a query's
// destination address (as the dns.Server asks for on its UDP sockets).
var oobSize = max(len(ipv4.NewControlMessage(ipv4.FlagDst|ipv4.FlagInterface)),
	len(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface)))

func newUDPBatch(conn *net.UDPConn) *udpBatch {
	b := &udpBatch{conn: ipv4.NewPacketConn(conn), in: make([]ipv4.Message, batchSize), out: make([]ipv4.Message, batchSize),
		outCounters: make([]prometheus.Counter, batchSize)}
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
		b.bound = true
	}
	for i := range b.in {
		b.in[i].Buffers = [][]byte{make([]byte, dns.MaxMsgSize)}
		b.in[i].OOB = make([]byte, oobSize)
		b.out[i].Buffers = [][]byte{nil}
	}
	return b
}

// decorate is the dns.Server's DecorateReader.
func (h *Handler) decorate(r dns.Reader) dns.Reader {
	return &udpReader{Reader: r, h: h, key: make([]byte, 0, 300)}
}

// ReadUDP implements dns.Reader: it returns the next packet the fast path
// did not answer. It reads without a deadline: the server stops it by
// closing the socket.
func (u *udpReader) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *dns.SessionUDP, error) {
	if u.batch == nil {
		u.batch = newUDPBatch(conn)
	}
	b := u.batch
	if b.next == len(b.slow) {
		b.slow, b.next = b.slow[:0], 0
	}
	for len(b.slow) == 0 {
		n, err := b.conn.ReadBatch(b.in, 0)
		if err != nil {
			return nil, nil, err
		}
		start := time.Now()
		for i := range b.in[:n] {
			m := &b.in[i]
			pkt := m.Buffers[0][:m.N]
			addr, _ := m.Addr.(*net.UDPAddr)
			if addr == nil {
				continue
			}
			if !u.fast(b, addr, m.OOB[:m.NN], pkt) {
				oob := append([]byte(nil), m.OOB[:m.NN]...)
				b.slow = append(b.slow, slowPacket{pkt: append([]byte(nil), pkt...), sess: newSessionUDP(addr, oob)})
			}
		}
		u.flush(start)
	}
	p := b.slow[b.next]
	b.slow[b.next] = slowPacket{}
	b.next++
	return p.pkt, p.sess, nil
}

// flush sends the batch's answers, counts each sent one and its time since
// start, and drops the rest.
func (u *udpReader) flush(start time.Time) {
	b, h := u.batch, u.h
	msgs := b.out[:b.nout]
	for len(msgs) > 0 {
		n, err := b.conn.WriteBatch(msgs, 0)
		if err != nil {
			// The first message failed: drop it, send the rest.
			h.metrics.drop(reasonSendError)
			n = 1
		} else {
			elapsed := time.Since(start).Seconds()
			for i := range msgs[:n] {
				h.metrics.querySeconds.Observe(elapsed)
				b.outCounters[i+b.nout-len(msgs)].Inc()
			}
		}
		msgs = msgs[n:]
	}
	for i := range b.out[:b.nout] {
		b.out[i].Addr = nil
		b.outCounters[i] = nil
	}
	b.nout = 0
}

// fast queues the answer of pkt from addr if it is a plain query and
// reports whether it did (or dropped it for the rate limit).
func (u *udpReader) fast(b *udpBatch, addr *net.UDPAddr, oob, pkt []byte) (done bool) {
	h := u.h
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
	if !h.rrl.allow(addrOf(addr)) {
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
	m := &b.out[b.nout]
	out := append(m.Buffers[0][:0], c.resp...)
	out[0], out[1] = pkt[0], pkt[1]
	out[2] = out[2]&^0x01 | pkt[2]&0x01 // RD
	out[3] = out[3]&^0x10 | pkt[3]&0x10 // CD
	copy(out[12:q.nameEnd], pkt[12:q.nameEnd])
	m.Buffers[0] = out
	m.Addr = addr
	m.OOB = nil
	if !b.bound {
		m.OOB = sourceOOB(oob)
	}
	b.outCounters[b.nout] = c.counter
	b.nout++
	return true
}

// sourceOOB is the control message that sends an answer from the address
// the query was sent to (in oob), as the dns.Server does for its answers;
// nil when oob does not tell it.
func sourceOOB(oob []byte) []byte {
	var cm4 ipv4.ControlMessage
	var cm6 ipv6.ControlMessage
	switch {
	case cm6.Parse(oob) == nil && cm6.Dst != nil:
		if cm6.Dst.To4() == nil {
			return (&ipv6.ControlMessage{Src: cm6.Dst}).Marshal()
		}
		return (&ipv4.ControlMessage{Src: cm6.Dst}).Marshal()
	case cm4.Parse(oob) == nil && cm4.Dst != nil:
		return (&ipv4.ControlMessage{Src: cm4.Dst}).Marshal()
	}
	return nil
}

// sessionUDP has the layout of dns.SessionUDP, whose fields the dns
// package keeps to itself: the full path needs a session for each packet
// the batch read, and only dns.ReadFromSessionUDP makes them. The size
// check below and TestBatchWildcardSource catch a change of that layout.
type sessionUDP struct {
	raddr   *net.UDPAddr
	context []byte
}

var _ [unsafe.Sizeof(dns.SessionUDP{}) - unsafe.Sizeof(sessionUDP{})]struct{}
var _ [unsafe.Sizeof(sessionUDP{}) - unsafe.Sizeof(dns.SessionUDP{})]struct{}

// newSessionUDP is the session of a packet from addr with the control
// message oob.
func newSessionUDP(addr *net.UDPAddr, oob []byte) *dns.SessionUDP {
	return (*dns.SessionUDP)(unsafe.Pointer(&sessionUDP{raddr: addr, context: oob}))
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
