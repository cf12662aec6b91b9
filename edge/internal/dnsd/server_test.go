package dnsd

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// syncBuffer is a log destination tests read while the daemon writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testDaemon struct {
	addrs Addrs
	fake  *fakeWatch
	log   *syncBuffer
}

// startDaemon runs the daemon against fake with cfg changed by edit.
func startDaemon(t *testing.T, fake *fakeWatch, edit func(*Config)) *testDaemon {
	t.Helper()
	cfg := DefaultConfig()
	cfg.APIURL = serveFake(t, fake)
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.UDPSockets = 2
	cfg.PrimaryNS = "ns1.example.net."
	cfg.Contact = "hostmaster@example.net"
	if edit != nil {
		edit(&cfg)
	}
	td := &testDaemon{fake: fake, log: &syncBuffer{}}
	logger, _ := newTestLogger(td.log)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- cfg.run(ctx, logger, func(a Addrs) { ready <- a }) }()
	select {
	case td.addrs = <-ready:
	case err := <-done:
		t.Fatalf("daemon did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return td
}

func (td *testDaemon) exchange(t *testing.T, netw string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
	addr := td.addrs.UDP[0].String()
	if netw == "tcp" {
		addr = td.addrs.TCP[0].String()
	}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %v: %v", netw, m.Question, err)
	}
	return r
}

func (td *testDaemon) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + td.addrs.Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (td *testDaemon) healthz(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + td.addrs.Metrics.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func seeded() *fakeWatch {
	f := newFakeWatch()
	f.segment(&networkv1.Segment{Id: "s1", Prefix: "10.0.2.0/24", Domain: "Lab.Example.com", DnsRecords: []*networkv1.DNSRecord{
		{Name: "www", Type: networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME, Value: "web1.lab.example.com."},
		{Name: "@", Type: networkv1.DNSRecordType_DNS_RECORD_TYPE_TXT, Ttl: 30, Value: `"v=spf1 -all"`},
		{Name: "_ldap._tcp", Type: networkv1.DNSRecordType_DNS_RECORD_TYPE_SRV, Value: "10 5 389 web1.lab.example.com."},
	}})
	f.segment(&networkv1.Segment{Id: "s2", Prefix: "10.0.3.64/26", Domain: "rack.example.com"})
	f.machine(&machinev1.Machine{Id: "m1", Hostname: "web1", Interfaces: []*machinev1.Interface{{SegmentId: "s1", Address: "10.0.2.10"}}})
	f.machine(&machinev1.Machine{Id: "m2", Hostname: "db1", Interfaces: []*machinev1.Interface{{SegmentId: "s2", Address: "10.0.3.70"}}})
	f.instance(&instancev1.Instance{Id: "i1", Hostname: "app", Address: "10.0.2.20", State: instancev1.InstanceState_INSTANCE_STATE_RUNNING})
	return f
}

func q(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

func (td *testDaemon) synced(t *testing.T) {
	waitFor(t, "the first sync", func() bool { return td.healthz(t) == http.StatusOK })
}

func TestServe(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), nil)
	td.synced(t)
	for _, netw := range []string{"udp", "tcp"} {
		r := td.exchange(t, netw, q("WEB1.lab.example.com.", dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.RecursionAvailable || len(r.Answer) != 1 ||
			r.Answer[0].Header().Name != "WEB1.lab.example.com." || r.Question[0].Name != "WEB1.lab.example.com." {
			t.Errorf("%s A: %v", netw, r)
		}
		// Twice over UDP: the second answer comes from the fast path
		// and must keep this query's case and ID.
		r = td.exchange(t, netw, q("web1.LAB.example.com.", dns.TypeA))
		if len(r.Answer) != 1 || r.Question[0].Name != "web1.LAB.example.com." || r.Answer[0].Header().Name != "web1.LAB.example.com." {
			t.Errorf("%s A again: %v", netw, r)
		}
		r = td.exchange(t, netw, q("WWW.lab.example.com.", dns.TypeA))
		if len(r.Answer) != 2 || r.Answer[0].(*dns.CNAME).Target != "web1.lab.example.com." || r.Answer[1].(*dns.A).A.String() != "10.0.2.10" {
			t.Errorf("%s static CNAME: %v", netw, r)
		}
		r = td.exchange(t, netw, q("lab.example.com.", dns.TypeTXT))
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
			t.Errorf("%s static TXT: %v", netw, r)
		}
		r = td.exchange(t, netw, q("_ldap._tcp.lab.example.com.", dns.TypeSRV))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 389 {
			t.Errorf("%s static SRV: %v", netw, r)
		}
		r = td.exchange(t, netw, q("70.64-127.3.0.10.in-addr.arpa.", dns.TypePTR))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db1.rack.example.com." {
			t.Errorf("%s PTR: %v", netw, r)
		}
		r = td.exchange(t, netw, q("nope.lab.example.com.", dns.TypeA))
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Mbox != "hostmaster.example.net." {
			t.Errorf("%s NXDOMAIN: %v", netw, r)
		}
		r = td.exchange(t, netw, q("example.org.", dns.TypeA))
		if r.Rcode != dns.RcodeRefused || r.RecursionAvailable || r.Authoritative {
			t.Errorf("%s REFUSED: %v", netw, r)
		}
		r = td.exchange(t, netw, q("lab.example.com.", dns.TypeAXFR))
		if r.Rcode != dns.RcodeNotImplemented {
			t.Errorf("%s AXFR without transfers: %v", netw, r)
		}
		m := q("lab.example.com.", dns.TypeSOA)
		m.Opcode = dns.OpcodeUpdate
		if r = td.exchange(t, netw, m); r.Rcode != dns.RcodeNotImplemented {
			t.Errorf("%s UPDATE: %v", netw, r)
		}
		m = q("lab.example.com.", dns.TypeSOA)
		m.SetEdns0(4096, true)
		r = td.exchange(t, netw, m)
		if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != 1232 || !opt.Do() || len(r.Answer) != 1 {
			t.Errorf("%s EDNS: %v", netw, r)
		}
		m = q("lab.example.com.", dns.TypeSOA)
		m.SetEdns0(4096, false)
		m.IsEdns0().SetVersion(1)
		if r = td.exchange(t, netw, m); r.Rcode != dns.RcodeBadVers {
			t.Errorf("%s EDNS version 1: %v", netw, r)
		}
		m = q("lab.example.com.", dns.TypeANY)
		if r = td.exchange(t, netw, m); len(r.Answer) != 1 {
			t.Errorf("%s ANY: %v", netw, r)
		}
	}
	// Two questions: FORMERR.
	m := q("lab.example.com.", dns.TypeSOA)
	m.Question = append(m.Question, m.Question[0])
	if r := td.exchange(t, "udp", m); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", r)
	}
	metrics := td.metrics(t)
	for _, want := range []string{
		`carbide_dns_queries_total{qtype="A",rcode="NOERROR"} 6`,
		`carbide_dns_queries_total{qtype="A",rcode="NXDOMAIN"} 2`,
		`carbide_dns_zones 4`,
		`carbide_dns_zone_records{zone="lab.example.com."} 7`,
		`carbide_dns_stream_lag_seconds 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(td.log.String(), "sync done") {
		t.Errorf("log lacks the sync:\n%s", td.log)
	}
}

func TestTruncation(t *testing.T) {
	t.Parallel()
	f := seeded()
	// 40 addresses on one name: 40 A records, more than 512 bytes.
	var ifcs []*machinev1.Interface
	for i := range 40 {
		ifcs = append(ifcs, &machinev1.Interface{SegmentId: "s1", Address: "10.0.2." + strconv.Itoa(100+i)})
	}
	f.machine(&machinev1.Machine{Id: "big", Hostname: "big", Interfaces: ifcs})
	td := startDaemon(t, f, nil)
	td.synced(t)
	r := td.exchange(t, "udp", q("big.lab.example.com.", dns.TypeA))
	if !r.Truncated || len(r.Answer) == 40 {
		t.Errorf("plain UDP: TC %v with %d answers", r.Truncated, len(r.Answer))
	}
	m := q("big.lab.example.com.", dns.TypeA)
	m.SetEdns0(1232, false)
	if r = td.exchange(t, "udp", m); r.Truncated || len(r.Answer) != 40 {
		t.Errorf("EDNS 1232: TC %v with %d answers", r.Truncated, len(r.Answer))
	}
	if r = td.exchange(t, "tcp", q("big.lab.example.com.", dns.TypeA)); r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP: TC %v with %d answers", r.Truncated, len(r.Answer))
	}
}

// TestUpdatesAndResume changes data while the daemon answers, breaks
// the stream, changes more while the API is down, and checks that the
// daemon answered from memory meanwhile and resumed from its revision
// without a new snapshot.
func TestUpdatesAndResume(t *testing.T) {
	t.Parallel()
	f := seeded()
	td := startDaemon(t, f, nil)
	td.synced(t)
	// Warm the fast path's cache, then change the name.
	if r := td.exchange(t, "udp", q("web1.lab.example.com.", dns.TypeA)); len(r.Answer) != 1 {
		t.Fatalf("web1: %v", r)
	}
	f.machine(&machinev1.Machine{Id: "m1", Hostname: "web1", Interfaces: []*machinev1.Interface{{SegmentId: "s1", Address: "10.0.2.11"}}})
	waitFor(t, "the new address", func() bool {
		r := td.exchange(t, "udp", q("web1.lab.example.com.", dns.TypeA))
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "10.0.2.11"
	})
	f.setDown(true)
	waitFor(t, "the break logged", func() bool { return strings.Contains(td.log.String(), "watch stream broken") })
	rev := f.deleteMachine("m1")
	if r := td.exchange(t, "udp", q("web1.lab.example.com.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("while the API is down: %v", r)
	}
	if td.healthz(t) != http.StatusOK {
		t.Errorf("healthz while the API is down: not ok")
	}
	time.Sleep(300 * time.Millisecond)
	f.setDown(false)
	defer func() {
		if t.Failed() {
			t.Log(td.log.String(), f.calls())
		}
	}()
	waitFor(t, "the deletion", func() bool {
		return td.exchange(t, "udp", q("web1.lab.example.com.", dns.TypeA)).Rcode == dns.RcodeNameError
	})
	r := td.exchange(t, "udp", q("lab.example.com.", dns.TypeSOA))
	if s := r.Answer[0].(*dns.SOA).Serial; s != uint32(rev) {
		t.Errorf("serial %d, want the deletion's revision %d", s, rev)
	}
	calls := f.calls()
	if calls[0] != 0 {
		t.Errorf("first call since %d", calls[0])
	}
	for _, since := range calls[1:] {
		if since == 0 {
			t.Errorf("a new snapshot was taken after the break: calls %v", calls)
		}
	}
	waitFor(t, "the resume logged", func() bool { return strings.Contains(td.log.String(), "watch stream resumed") })
	if n := strings.Count(td.log.String(), "watch stream broken"); n != 1 {
		t.Errorf("break logged %d times, want once per outage", n)
	}
	if m := td.metrics(t); !strings.Contains(m, "carbide_dns_stream_breaks_total 1") {
		t.Errorf("metrics lack one break")
	}
}

func TestHealthBeforeSync(t *testing.T) {
	t.Parallel()
	f := newFakeWatch()
	f.setDown(true)
	td := startDaemon(t, f, nil)
	if code := td.healthz(t); code != http.StatusServiceUnavailable {
		t.Errorf("healthz before sync: %d", code)
	}
	f.setDown(false)
	td.synced(t)
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), func(c *Config) { c.RRLRate, c.RRLBurst = 1, 3 })
	td.synced(t)
	c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	answered := 0
	for range 10 {
		if _, _, err := c.Exchange(q("web1.lab.example.com.", dns.TypeA), td.addrs.UDP[0].String()); err == nil {
			answered++
		}
	}
	if answered < 3 || answered > 5 {
		t.Errorf("%d of 10 answered with rate 1/s burst 3", answered)
	}
	if m := td.metrics(t); strings.Contains(m, `carbide_dns_drops_total{reason="rate_limited"} 0`) {
		t.Errorf("no rate-limited drops counted")
	}
}

func TestMalformedDropped(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), nil)
	td.synced(t)
	conn, err := net.Dial("udp", td.addrs.UDP[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, pkt := range [][]byte{{1, 2, 3}, {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 'a'}} {
		conn.Write(pkt)
	}
	waitFor(t, "the drops counted", func() bool {
		return strings.Contains(td.metrics(t), `carbide_dns_drops_total{reason="malformed"} 2`)
	})
	// Still answering.
	if r := td.exchange(t, "udp", q("web1.lab.example.com.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("after malformed packets: %v", r)
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestFastPathCookie checks that a query with an EDNS COOKIE option (as
// dig and resolvers send) is answered like one without, the option
// ignored, by the fast path as well as the full path.
func TestFastPathCookie(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), nil)
	td.synced(t)
	for range 2 {
		m := q("Web1.lab.example.com.", dns.TypeA)
		m.SetEdns0(1232, false)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
		r := td.exchange(t, "udp", m)
		if len(r.Answer) != 1 || r.Question[0].Name != "Web1.lab.example.com." || r.IsEdns0() == nil || len(r.IsEdns0().Option) != 0 {
			t.Errorf("with a cookie: %v", r)
		}
	}
	// An answer is counted once sent: the client may have it first.
	waitFor(t, "the answers counted", func() bool {
		return strings.Contains(td.metrics(t), `carbide_dns_queries_total{qtype="A",rcode="NOERROR"} 2`)
	})
}

// TestSignedQuery: a secondary signs the SOA query it sends before a
// transfer and drops an unsigned answer, so a signed query gets a signed
// answer; one signed with a key the daemon does not have gets NOTAUTH.
func TestSignedQuery(t *testing.T) {
	t.Parallel()
	const key, secret = "xfr.example.net.", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMw=="
	td := startDaemon(t, seeded(), func(c *Config) { c.TSIGSecrets = map[string]string{key: secret} })
	td.synced(t)
	for _, netw := range []string{"udp", "tcp"} {
		addr := td.addrs.UDP[0].String()
		if netw == "tcp" {
			addr = td.addrs.TCP[0].String()
		}
		m := q("lab.example.com.", dns.TypeSOA)
		m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
		c := &dns.Client{Net: netw, Timeout: 2 * time.Second, TsigSecret: map[string]string{key: secret}}
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: signed SOA query: %v", netw, err) // the client checks the answer's MAC
		}
		if r.IsTsig() == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s: signed SOA query answered %v", netw, r)
		}

		m = q("lab.example.com.", dns.TypeSOA)
		m.SetTsig("other.example.net.", dns.HmacSHA256, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{"other.example.net.": secret}
		r, _, err = c.Exchange(m, addr)
		if err != nil && r == nil {
			t.Fatalf("%s: query signed with an unknown key: %v", netw, err)
		}
		if r.Rcode != dns.RcodeNotAuth || len(r.Answer) != 0 {
			t.Errorf("%s: query signed with an unknown key answered %v", netw, r)
		}
	}
}
