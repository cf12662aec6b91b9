package xfr

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/carbide-dev/carbide/edge/internal/dnsd"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// fakeZone is one zone of fakeSource: its records now and the journal of
// its changes.
type fakeZone struct {
	soa     *dns.SOA
	rrs     []dns.RR
	journal []dnsd.Diff
}

// fakeSource is a dnsd.ZoneSource in memory, whose zones tests change.
type fakeSource struct {
	mu         sync.Mutex
	zones      map[string]*fakeZone
	journalMax int
	subs       []func(string, uint32)
}

var _ dnsd.ZoneSource = (*fakeSource)(nil)

func rr(t testing.TB, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return r
}

// newFakeSource serves zone origin at serial with its SOA and NS and the
// records rrs.
func newFakeSource(t testing.TB, origin string, serial uint32, rrs ...string) *fakeSource {
	z := &fakeZone{soa: &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns:      "ns1." + origin,
		Mbox:    "hostmaster." + origin,
		Serial:  serial,
		Refresh: 3600, Retry: 600, Expire: 604800, Minttl: 60,
	}}
	z.rrs = append(z.rrs, rr(t, origin+" 300 IN NS ns1."+origin), rr(t, "ns1."+origin+" 300 IN A 127.0.0.1"))
	for _, s := range rrs {
		z.rrs = append(z.rrs, rr(t, s))
	}
	return &fakeSource{zones: map[string]*fakeZone{origin: z}, journalMax: 1000}
}

func (f *fakeSource) Zone(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name = dns.CanonicalName(name)
	for {
		if _, ok := f.zones[name]; ok {
			return name, true
		}
		i, end := dns.NextLabel(name, 0)
		if end {
			return "", false
		}
		name = name[i:]
	}
}

func (f *fakeSource) Snapshot(origin string) (*dns.SOA, []dns.RR, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	z, ok := f.zones[origin]
	if !ok {
		return nil, nil, false
	}
	soa := *z.soa
	return &soa, append([]dns.RR(nil), z.rrs...), true
}

func (f *fakeSource) Changes(origin string, from uint32) (*dns.SOA, []dnsd.Diff, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	z, ok := f.zones[origin]
	if !ok {
		return nil, nil, false
	}
	soa := *z.soa
	if from == soa.Serial {
		return &soa, nil, true
	}
	for i, d := range z.journal {
		if d.From == from {
			return &soa, append([]dnsd.Diff(nil), z.journal[i:]...), true
		}
	}
	return &soa, nil, false
}

func (f *fakeSource) Subscribe(fn func(string, uint32)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
}

// change moves zone origin to serial, removing and adding records, and
// tells the subscribers.
func (f *fakeSource) change(t testing.TB, origin string, serial uint32, removed, added []string) {
	t.Helper()
	f.mu.Lock()
	z := f.zones[origin]
	d := dnsd.Diff{From: z.soa.Serial, To: serial}
	for _, s := range removed {
		r := rr(t, s)
		found := false
		for i, have := range z.rrs {
			if dns.IsDuplicate(have, r) {
				z.rrs = append(z.rrs[:i:i], z.rrs[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			f.mu.Unlock()
			t.Fatalf("remove %q: not in the zone", s)
		}
		d.Removed = append(d.Removed, r)
	}
	for _, s := range added {
		r := rr(t, s)
		z.rrs = append(z.rrs, r)
		d.Added = append(d.Added, r)
	}
	soa := *z.soa
	soa.Serial = serial
	z.soa = &soa
	z.journal = append(z.journal, d)
	if len(z.journal) > f.journalMax {
		z.journal = z.journal[len(z.journal)-f.journalMax:]
	}
	subs := append([]func(string, uint32){}, f.subs...)
	f.mu.Unlock()
	for _, fn := range subs {
		fn(origin, serial)
	}
}

// handler is the dns.Handler of the test servers: transfers and NOTIFY
// through tr, and the SOA of a zone for the SOA queries a secondary makes
// before it transfers, the rest REFUSED.
func handler(tr *Transfers, src *fakeSource) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Opcode == dns.OpcodeNotify {
			tr.ServeNotify(w, r)
			return
		}
		if len(r.Question) == 1 {
			switch q := r.Question[0]; q.Qtype {
			case dns.TypeAXFR, dns.TypeIXFR:
				tr.ServeTransfer(w, r)
				return
			case dns.TypeSOA:
				if origin, ok := src.Zone(q.Name); ok && origin == dns.CanonicalName(q.Name) {
					soa, _, _ := src.Snapshot(origin)
					m := new(dns.Msg)
					m.SetReply(r)
					m.Authoritative = true
					m.Answer = []dns.RR{soa}
					tr.finish(w, r, m)
					_ = w.WriteMsg(m)
					return
				}
			}
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		tr.finish(w, r, m)
		_ = w.WriteMsg(m)
	}
}

// serve starts a UDP and a TCP dns.Server on one port of ip with h and
// the TSIG secrets, stopped at the end of the test, and returns the
// address.
func serve(t testing.TB, ip string, h dns.Handler, secrets map[string]string) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen udp: %v", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		for _, s := range []*dns.Server{
			{PacketConn: pc, Handler: h, TsigSecret: secrets},
			{Listener: l, Handler: h, TsigSecret: secrets},
		} {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			go func() { _ = s.ActivateAndServe() }()
			<-started
			t.Cleanup(func() { _ = s.Shutdown() })
		}
		return pc.LocalAddr().String()
	}
	t.Fatal("no free port on both UDP and TCP")
	return ""
}

// newTransfers is New with the test's own registry, failing the test on
// error.
func newTransfers(t testing.TB, src *fakeSource, cfg Config) (*Transfers, *prometheus.Registry) {
	t.Helper()
	// make go-test fails the run when a TSIG secret shows in its output.
	testsecret.Register(t, keySecret, otherKey)
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	tr, err := New(src, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tr, reg
}

// records returns n A records in zone origin.
func records(origin string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("host-%d.%s 300 IN A 10.%d.%d.%d", i, origin, i>>16&255, i>>8&255, i&255)
	}
	return out
}

// waitCount waits until counter c reaches want (a server counts a request
// after it answered it), and fails the test when it does not within 5 s.
func waitCount(t testing.TB, c prometheus.Counter, want float64, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := testutil.ToFloat64(c)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s = %v, want %v", what, got, want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a log sink that server goroutines and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
