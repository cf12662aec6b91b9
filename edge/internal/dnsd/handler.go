package dnsd

import (
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Handler answers queries from a Store: the full path, a dns.Handler for
// every transport, and the fast path for plain UDP queries (fast.go).
type Handler struct {
	store   *Store
	metrics *Metrics
	logger  *slog.Logger
	rrl     *rateLimiter
	// udpSize is the largest EDNS payload the daemon sends (--udp-size).
	udpSize uint16
	// transfer answers AXFR and IXFR; nil when Config.NewTransfers is
	// (a Store served without package xfr), and then those queries are
	// answered NOTIMP.
	transfer func(w dns.ResponseWriter, r *dns.Msg)
	// notify answers NOTIFY; nil: NOTIMP.
	notify func(w dns.ResponseWriter, r *dns.Msg)

	cache *answerCache
}

var _ dns.Handler = (*Handler)(nil)

// NewHandler returns the query handler of store.
func NewHandler(store *Store, metrics *Metrics, logger *slog.Logger, udpSize uint16, rrlRate, rrlBurst int) *Handler {
	return &Handler{
		store: store, metrics: metrics, logger: logger, udpSize: udpSize,
		rrl:   newRateLimiter(rrlRate, rrlBurst, 1<<16),
		cache: newAnswerCache(1 << 18),
	}
}

// SetTransfers sets what answers AXFR and IXFR queries and NOTIFY
// messages.
func (h *Handler) SetTransfers(t Transfers) { h.transfer, h.notify = t.ServeTransfer, t.ServeNotify }

// ServeDNS answers one query on any transport.
func (h *Handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	start := time.Now()
	defer h.recoverQuery(r)
	if !h.rrl.allow(addrOf(w.RemoteAddr())) {
		h.metrics.drop(reasonRateLimited)
		return
	}
	var qtype uint16
	if len(r.Question) == 1 {
		qtype = r.Question[0].Qtype
	}
	var m *dns.Msg
	switch {
	case r.Opcode == dns.OpcodeNotify && h.notify != nil:
		h.notify(w, r)
		return
	case r.Opcode != dns.OpcodeQuery:
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeNotImplemented)
	case len(r.Question) == 1 && (qtype == dns.TypeAXFR || qtype == dns.TypeIXFR):
		if h.transfer != nil {
			h.transfer(w, r)
			return
		}
		// No transfers configured (Config.NewTransfers nil).
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeNotImplemented)
	default:
		m, _, _, _ = h.store.answer(r, h.udpSize)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(h.replySize(r))
	}
	signReply(w, r, m)
	if err := w.WriteMsg(m); err != nil {
		h.metrics.drop(reasonSendError)
		return
	}
	h.metrics.query(qtype, m.Rcode).Inc()
	h.metrics.observe(start)
}

// signReply signs the answer m to a TSIG-signed query r with the query's
// key, as a secondary expects of the SOA query it sends before a transfer
// (the server's TsigSecret makes WriteMsg compute the MAC). A signed query
// whose signature the server could not verify (an unknown key, a wrong
// MAC, a clock too far off) gets NOTAUTH instead, unsigned (counted in
// carbide_dns_queries_total{rcode="NOTAUTH"}).
func signReply(w dns.ResponseWriter, r, m *dns.Msg) {
	sig := r.IsTsig()
	if sig == nil {
		return
	}
	if w.TsigStatus() != nil {
		m.Answer, m.Ns, m.Extra = nil, nil, nil
		m.Rcode = dns.RcodeNotAuth
		return
	}
	m.SetTsig(sig.Hdr.Name, sig.Algorithm, sig.Fudge, time.Now().Unix())
}

// replySize is the largest UDP answer r may get: 512 without EDNS, else
// the client's size bounded by --udp-size.
func (h *Handler) replySize(r *dns.Msg) int {
	if opt := r.IsEdns0(); opt != nil {
		return int(max(dns.MinMsgSize, min(opt.UDPSize(), h.udpSize)))
	}
	return dns.MinMsgSize
}

// recoverQuery turns a panic while answering into a counted, logged drop
// instead of the end of the process.
func (h *Handler) recoverQuery(r *dns.Msg) {
	if v := recover(); v != nil {
		h.panicked(v, r)
	}
}

// panicked counts and logs a panic v while answering r (nil on the fast
// path, before the query is parsed).
func (h *Handler) panicked(v any, r *dns.Msg) {
	h.metrics.drop(reasonPanic)
	var q string
	if r != nil && len(r.Question) > 0 {
		q = r.Question[0].String()
	}
	h.logger.Error("answering a query failed", "question", q, "panic", v, "stack", string(debug.Stack()))
}

// acceptMsg decides, from the header alone, what the dns.Server does with
// a message: responses are ignored (and counted), other opcodes than
// QUERY get NOTIMP, a QUERY without exactly one question FORMERR.
func (h *Handler) acceptMsg(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		h.metrics.drop(reasonResponse)
		return dns.MsgIgnore
	}
	opcode := int(dh.Bits>>11) & 0xF
	if opcode != dns.OpcodeQuery && (opcode != dns.OpcodeNotify || h.notify == nil) {
		return dns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// invalidMsg counts a message the server could not parse.
func (h *Handler) invalidMsg(_ []byte, _ error) { h.metrics.drop(reasonMalformed) }

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// answerCache holds packed answers by question (see fast.go). When full
// it starts over: a flood of distinct names costs rebuilding, not memory.
type answerCache struct {
	max int
	mu  sync.RWMutex
	m   map[string]*cached
}

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, m: make(map[string]*cached)}
}
