package xfr

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carbide-dev/carbide/edge/internal/dnsd"
)

// Config configures zone transfers and NOTIFY.
type Config struct {
	// AllowTransfer lists the clients allowed to transfer (TSIG, when
	// keys are configured, is required in addition). Empty: the loopback
	// addresses only.
	AllowTransfer []netip.Prefix
	// TSIGSecrets maps key names (lower-case FQDN) to base64 secrets. The
	// dns.Server that calls ServeTransfer must have the same map as its
	// TsigSecret, so that w.TsigStatus() reports the verification. When
	// non-empty, every transfer must be signed.
	TSIGSecrets map[string]string
	// TSIGAlgorithms maps key names to their algorithm (dns.HmacSHA256,
	// dns.HmacSHA512), as ParseKeyFile returns them: a request signed with
	// a key under another algorithm gets BADKEY, and NOTIFYs are signed
	// with NotifyKey's. A key without an entry accepts any HMAC and signs
	// with hmac-sha256.
	TSIGAlgorithms map[string]string
	// NotifyTargets are the secondaries (host:port) that get a NOTIFY
	// after each zone change.
	NotifyTargets []string
	// NotifyKey names the TSIG key NOTIFYs are signed with; "" = unsigned.
	NotifyKey string
	Logger    *slog.Logger
	// Metrics is where the transfer and NOTIFY metrics are registered;
	// nil: nowhere.
	Metrics prometheus.Registerer
}

// defaultAllowTransfer is AllowTransfer when none is configured.
var defaultAllowTransfer = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// maxMessage bounds the uncompressed size of the records of one transfer
// message: many records per message, well below the 64 KiB TCP limit,
// with room for the question and the TSIG.
const maxMessage = 16 << 10

// ednsSize is the UDP payload size the answers to an EDNS request
// advertise: the DNS flag day 2020 value.
const ednsSize = 1232

// Transfers answers AXFR, IXFR and NOTIFY requests for the zones of one
// source and sends NOTIFYs to secondaries. Create it with New.
type Transfers struct {
	src     dnsd.ZoneSource
	allow   []netip.Prefix
	secrets map[string]string
	algs    map[string]string
	targets []string
	key     string
	log     *slog.Logger
	m       *metrics

	// Timings of NOTIFY; tests shorten them.
	notifyTimeout  time.Duration // first try's wait for an answer, doubled each try
	notifyTries    int
	notifyInterval time.Duration // least time between two NOTIFYs of a zone to a target
}

// New checks cfg and returns the transfers of src.
func New(src dnsd.ZoneSource, cfg Config) (*Transfers, error) {
	var errs []error
	if src == nil {
		errs = append(errs, errors.New("no zone source"))
	}
	secrets := make(map[string]string, len(cfg.TSIGSecrets))
	for name, secret := range cfg.TSIGSecrets {
		if name != dns.CanonicalName(name) {
			errs = append(errs, fmt.Errorf("TSIG key name %q is not a lower-case FQDN (write %q)", name, dns.CanonicalName(name)))
		}
		if secret == "" {
			errs = append(errs, fmt.Errorf("TSIG key %s has an empty secret", name))
		}
		secrets[name] = secret
	}
	algs := make(map[string]string, len(cfg.TSIGAlgorithms))
	for name, alg := range cfg.TSIGAlgorithms {
		a, ok := algorithm(alg)
		if !ok {
			errs = append(errs, fmt.Errorf("TSIG key %s: algorithm %q is not hmac-sha256 or hmac-sha512", name, alg))
		}
		algs[name] = a
	}
	if cfg.NotifyKey != "" {
		if _, ok := secrets[cfg.NotifyKey]; !ok {
			errs = append(errs, fmt.Errorf("notify key %q is not one of the TSIG keys", cfg.NotifyKey))
		}
	}
	for _, t := range cfg.NotifyTargets {
		if _, _, err := net.SplitHostPort(t); err != nil {
			errs = append(errs, fmt.Errorf("notify target %q: want host:port: %w", t, err))
		}
	}
	for _, p := range cfg.AllowTransfer {
		if !p.IsValid() {
			errs = append(errs, errors.New("allow-transfer holds an invalid prefix"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("zone transfers: %w", err)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	allow := cfg.AllowTransfer
	if len(allow) == 0 {
		allow = defaultAllowTransfer
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Transfers{
		src:            src,
		allow:          allow,
		secrets:        secrets,
		algs:           algs,
		targets:        cfg.NotifyTargets,
		key:            cfg.NotifyKey,
		log:            log,
		m:              m,
		notifyTimeout:  time.Second,
		notifyTries:    5,
		notifyInterval: time.Second,
	}, nil
}

// algorithm returns the canonical name of a TSIG algorithm this package
// takes (hmac-sha256, hmac-sha512, with or without the final dot).
func algorithm(s string) (string, bool) {
	switch a := dns.CanonicalName(s); a {
	case dns.HmacSHA256, dns.HmacSHA512:
		return a, true
	}
	return "", false
}

// ServeTransfer answers an AXFR or IXFR request r on w: over TCP, the
// transfer; an IXFR over UDP, a single SOA (see the package doc). It
// checks the client's address and the request's TSIG first, and answers
// REFUSED or NOTAUTH when they fail.
func (t *Transfers) ServeTransfer(w dns.ResponseWriter, r *dns.Msg) {
	typ := "axfr"
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeIXFR {
		typ = "ixfr"
	}
	result := t.serve(w, r, typ)
	t.m.transfers.WithLabelValues(typ, result).Inc()
}

func (t *Transfers) serve(w dns.ResponseWriter, r *dns.Msg, typ string) string {
	client := addrOf(w.RemoteAddr())
	if !t.allowed(client) {
		t.log.Info("zone transfer refused: client not in --allow-transfer", "client", client, "type", typ)
		t.reply(w, r, dns.RcodeRefused)
		return resultRefused
	}
	if result, ok := t.checkTSIG(w, r, typ, client); !ok {
		return result
	}
	if len(r.Question) != 1 || (r.Question[0].Qclass != dns.ClassINET && r.Question[0].Qclass != dns.ClassANY) {
		t.reply(w, r, dns.RcodeFormatError)
		return resultMalformed
	}
	q := r.Question[0]
	origin, ok := t.src.Zone(q.Name)
	if !ok || origin != dns.CanonicalName(q.Name) {
		t.log.Info("zone transfer of a name that is not a zone", "client", client, "type", typ, "zone", q.Name)
		t.reply(w, r, dns.RcodeNotAuth)
		return resultNotAuth
	}
	tcp := isTCP(w)
	switch {
	case q.Qtype == dns.TypeAXFR && !tcp:
		t.reply(w, r, dns.RcodeFormatError)
		return resultMalformed
	case q.Qtype == dns.TypeAXFR:
		return t.axfr(w, r, origin, typ)
	case q.Qtype != dns.TypeIXFR:
		// Not a transfer: the caller routes only AXFR and IXFR here.
		t.reply(w, r, dns.RcodeFormatError)
		return resultMalformed
	}
	if len(r.Ns) == 0 {
		t.reply(w, r, dns.RcodeFormatError)
		return resultMalformed
	}
	have, ok := r.Ns[0].(*dns.SOA)
	if !ok || dns.CanonicalName(have.Hdr.Name) != origin {
		t.reply(w, r, dns.RcodeFormatError)
		return resultMalformed
	}
	soa, diffs, ok := t.src.Changes(origin, have.Serial)
	if soa != nil && serialGE(have.Serial, soa.Serial) {
		t.send(w, r, []dns.RR{soa})
		return resultUpToDate
	}
	if !tcp {
		if soa == nil {
			if soa, _, ok = t.src.Snapshot(origin); !ok {
				t.reply(w, r, dns.RcodeNotAuth)
				return resultNotAuth
			}
		}
		t.send(w, r, []dns.RR{soa})
		return resultUDPSOA
	}
	if !ok || soa == nil || !chained(have.Serial, soa.Serial, diffs) {
		if ok && soa != nil {
			t.log.Warn("zone journal does not chain; sending the whole zone", "zone", origin, "from", have.Serial, "to", soa.Serial)
		}
		return t.axfr(w, r, origin, typ)
	}
	start := time.Now()
	mw := t.newWriter(w, r)
	removed, added := condense(diffs)
	mw.add(soa)
	mw.add(withSerial(soa, have.Serial))
	mw.addAll(removed)
	mw.add(soa)
	mw.addAll(added)
	mw.add(soa)
	if err := mw.flush(); err != nil {
		t.log.Info("zone transfer failed", "client", client, "type", typ, "zone", origin, "err", err)
		return resultFailed
	}
	t.m.seconds.WithLabelValues(typ).Observe(time.Since(start).Seconds())
	t.log.Debug("zone transferred", "client", client, "type", typ, "zone", origin,
		"from", have.Serial, "serial", soa.Serial, "changes", len(diffs), "messages", mw.messages)
	return resultIncremental
}

// axfr sends the whole zone origin: SOA, records, SOA.
func (t *Transfers) axfr(w dns.ResponseWriter, r *dns.Msg, origin, typ string) string {
	start := time.Now()
	soa, rrs, ok := t.src.Snapshot(origin)
	if !ok || soa == nil {
		t.reply(w, r, dns.RcodeNotAuth)
		return resultNotAuth
	}
	mw := t.newWriter(w, r)
	mw.add(soa)
	mw.addAll(rrs)
	mw.add(soa)
	if err := mw.flush(); err != nil {
		t.log.Info("zone transfer failed", "client", addrOf(w.RemoteAddr()), "type", typ, "zone", origin, "err", err)
		return resultFailed
	}
	t.m.seconds.WithLabelValues(typ).Observe(time.Since(start).Seconds())
	t.log.Debug("zone transferred", "client", addrOf(w.RemoteAddr()), "type", typ, "zone", origin,
		"serial", soa.Serial, "records", len(rrs), "messages", mw.messages)
	return resultFull
}

// allowed reports whether client may transfer.
func (t *Transfers) allowed(client netip.Addr) bool {
	for _, p := range t.allow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// checkTSIG checks the request's signature when keys are configured (and
// a signature with an unknown key when none are), and answers NOTAUTH
// with the TSIG error when it fails (RFC 8945 5.2).
func (t *Transfers) checkTSIG(w dns.ResponseWriter, r *dns.Msg, typ string, client netip.Addr) (string, bool) {
	sig := r.IsTsig()
	if sig == nil {
		if len(t.secrets) == 0 {
			return "", true
		}
		t.log.Info("zone transfer refused: request not signed", "client", client, "type", typ)
		t.reply(w, r, dns.RcodeNotAuth)
		return resultTSIGMissing, false
	}
	name := dns.CanonicalName(sig.Hdr.Name)
	tsigErr := uint16(dns.RcodeSuccess)
	_, known := t.secrets[name]
	alg, pinned := t.algs[name]
	switch err := w.TsigStatus(); {
	case !known, pinned && alg != dns.CanonicalName(sig.Algorithm):
		tsigErr = dns.RcodeBadKey
	case errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg):
		tsigErr = dns.RcodeBadKey
	case errors.Is(err, dns.ErrTime):
		tsigErr = dns.RcodeBadTime
	case err != nil:
		tsigErr = dns.RcodeBadSig
	}
	if tsigErr == dns.RcodeSuccess {
		return "", true
	}
	t.log.Info("zone transfer refused: bad TSIG", "client", client, "type", typ, "key", name, "tsig_error", dns.RcodeToString[int(tsigErr)])
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeNotAuth)
	if r.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	m.SetTsig(sig.Hdr.Name, sig.Algorithm, sig.Fudge, time.Now().Unix())
	ts := m.Extra[len(m.Extra)-1].(*dns.TSIG)
	ts.Error = tsigErr
	if tsigErr == dns.RcodeBadTime {
		// Signed, with the request's time and ours in Other Data (RFC
		// 8945 5.2.3), so that the client can tell its clock is off.
		ts.TimeSigned = sig.TimeSigned
		ts.OtherLen = 6
		ts.OtherData = fmt.Sprintf("%012x", time.Now().Unix())
	}
	_ = w.WriteMsg(m)
	return resultTSIGBad, false
}

// reply answers r with rcode and no records, signed when r was signed
// with a good signature.
func (t *Transfers) reply(w dns.ResponseWriter, r *dns.Msg, rcode int) {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	t.finish(w, r, m)
	_ = w.WriteMsg(m)
}

// send answers r with rrs in one message.
func (t *Transfers) send(w dns.ResponseWriter, r *dns.Msg, rrs []dns.RR) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer = rrs
	t.finish(w, r, m)
	_ = w.WriteMsg(m)
}

// finish completes the answer m to r: an OPT RR when r had one (RFC 6891
// 7), and a TSIG RR when r carried a valid one, which w signs when it
// writes m.
func (t *Transfers) finish(w dns.ResponseWriter, r, m *dns.Msg) {
	if r.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	if sig := r.IsTsig(); sig != nil && w.TsigStatus() == nil {
		if _, ok := t.secrets[dns.CanonicalName(sig.Hdr.Name)]; ok {
			m.SetTsig(sig.Hdr.Name, sig.Algorithm, sig.Fudge, time.Now().Unix())
		}
	}
}

// writer packs the records of a transfer into messages of at most about
// maxMessage bytes and writes each, signed when the request was.
type writer struct {
	t        *Transfers
	w        dns.ResponseWriter
	r        *dns.Msg
	rrs      []dns.RR
	size     int
	messages int
	err      error
}

func (t *Transfers) newWriter(w dns.ResponseWriter, r *dns.Msg) *writer {
	return &writer{t: t, w: w, r: r}
}

func (mw *writer) add(rr dns.RR) {
	n := dns.Len(rr)
	if len(mw.rrs) > 0 && mw.size+n > maxMessage {
		mw.write()
	}
	mw.rrs = append(mw.rrs, rr)
	mw.size += n
}

// addAll adds rrs, leaving out SOA records: the writer's caller places
// the SOAs that frame a transfer and its changes.
func (mw *writer) addAll(rrs []dns.RR) {
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeSOA {
			mw.add(rr)
		}
	}
}

func (mw *writer) write() {
	if mw.err != nil || len(mw.rrs) == 0 {
		mw.rrs, mw.size = mw.rrs[:0], 0
		return
	}
	m := new(dns.Msg)
	m.SetReply(mw.r)
	m.Authoritative = true
	m.Compress = true
	m.Answer = mw.rrs
	mw.t.finish(mw.w, mw.r, m)
	if err := mw.w.WriteMsg(m); err != nil {
		mw.err = err
	}
	// Every later message is signed over the MAC of the one before and
	// the timers only (RFC 8945 5.3.1).
	mw.w.TsigTimersOnly(true)
	mw.messages++
	mw.rrs, mw.size = make([]dns.RR, 0, cap(mw.rrs)), 0
}

func (mw *writer) flush() error {
	mw.write()
	return mw.err
}

// condense turns a chain of diffs into one (RFC 1995 4 allows it): the
// records the client has that are gone now, and the records it lacks. A
// record added and removed again within the chain, or removed and added
// back, is in neither, so that a secondary far behind a busy zone gets
// the net change, never more than the changes themselves. It relies on
// each diff removing only records that exist and adding only ones that
// do not, as a journal's diffs do.
func condense(diffs []dnsd.Diff) (removed, added []dns.RR) {
	if len(diffs) == 1 {
		return diffs[0].Removed, diffs[0].Added
	}
	type change struct {
		rr    dns.RR
		added bool // else removed
		gone  bool // cancelled by a later diff
	}
	var order []*change
	index := make(map[string]*change)
	for _, d := range diffs {
		for i, list := range [][]dns.RR{d.Removed, d.Added} {
			add := i == 1
			for _, rr := range list {
				k := rrKey(rr)
				if c, ok := index[k]; ok && c.added != add {
					// Added earlier in the chain and removed now, or
					// the other way round: the client's copy is right.
					c.gone = true
					delete(index, k)
					continue
				}
				c := &change{rr: rr, added: add}
				index[k] = c
				order = append(order, c)
			}
		}
	}
	for _, c := range order {
		switch {
		case c.gone:
		case c.added:
			added = append(added, c.rr)
		default:
			removed = append(removed, c.rr)
		}
	}
	return removed, added
}

// rrKey names a record by its owner (any case), TTL, class, type and
// data, which is how two diffs refer to the same record.
func rrKey(rr dns.RR) string {
	s := rr.String()
	name := rr.Header().Name
	if len(s) >= len(name) {
		return dns.CanonicalName(name) + s[len(name):]
	}
	return s
}

// withSerial returns a copy of soa with another serial.
func withSerial(soa *dns.SOA, serial uint32) *dns.SOA {
	c := *soa
	c.Serial = serial
	return &c
}

// chained reports whether diffs lead from serial from to serial to, one
// after the other.
func chained(from, to uint32, diffs []dnsd.Diff) bool {
	for _, d := range diffs {
		if d.From != from {
			return false
		}
		from = d.To
	}
	return len(diffs) > 0 && from == to
}

// serialGE reports a >= b in RFC 1982 serial number arithmetic.
func serialGE(a, b uint32) bool { return a == b || int32(a-b) > 0 }

// addrOf returns the IP address of a client, 4in6 unmapped.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// isTCP reports whether w answers over TCP.
func isTCP(w dns.ResponseWriter) bool {
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	return !udp && !strings.HasPrefix(w.RemoteAddr().Network(), "udp")
}
