package dnsd

import (
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// recorder is a dns.ResponseWriter that keeps what was written.
type recorder struct {
	dns.ResponseWriter
	remote net.Addr
	msg    *dns.Msg
}

func (r *recorder) RemoteAddr() net.Addr        { return r.remote }
func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }

func fuzzHandler(t testing.TB) *Handler {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(testParams(), discard())
	s.Load(testSnapshot(100))
	return NewHandler(s, m, discard(), 1232, 0, 0)
}

// FuzzQuery feeds arbitrary bytes to both query paths: neither panics
// (the handler's recover would hide it, so the test checks the panic
// counter), and every answer packs and parses again.
func FuzzQuery(f *testing.F) {
	for _, m := range []*dns.Msg{
		q("web1.lab.example.com.", dns.TypeA),
		q("WWW.lab.example.com.", dns.TypeA),
		q("70.64-127.3.0.10.in-addr.arpa.", dns.TypePTR),
		q("lab.example.com.", dns.TypeANY),
		q("example.org.", dns.TypeA),
		q("lab.example.com.", dns.TypeAXFR),
	} {
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(4096, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 0x78, 0, 0, 1})
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, key, ok := parsePlain(b, nil); ok {
			if c := h.fill(b, key); c != nil {
				if err := new(dns.Msg).Unpack(c.resp); err != nil {
					t.Fatalf("cached answer does not parse: %v", err)
				}
			}
		}
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5353}}
		h.ServeDNS(w, req)
		if got := counterValue(t, h.metrics.drops.WithLabelValues(reasonPanic)); got != 0 {
			t.Fatalf("answering %v panicked", req.Question)
		}
		if w.msg == nil {
			return
		}
		out, err := w.msg.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, w.msg)
		}
		if err := new(dns.Msg).Unpack(out); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
	})
}
