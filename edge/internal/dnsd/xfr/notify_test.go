package xfr

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// secondary records the NOTIFYs a fake secondary receives; it leaves the
// first drop of them unanswered.
type secondary struct {
	mu      sync.Mutex
	got     []*dns.Msg
	signed  []bool // the NOTIFY's TSIG verified
	drop    int
	arrived chan struct{}
}

func (s *secondary) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.mu.Lock()
	s.got = append(s.got, r)
	s.signed = append(s.signed, r.IsTsig() != nil && w.TsigStatus() == nil)
	drop := len(s.got) <= s.drop
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	if drop {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	if ts := r.IsTsig(); ts != nil {
		m.SetTsig(ts.Hdr.Name, ts.Algorithm, 300, time.Now().Unix())
	}
	_ = w.WriteMsg(m)
}

// waitFor waits until a NOTIFY with serial has arrived at s.
func (s *secondary) waitFor(t *testing.T, serial uint32) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		for _, m := range s.got {
			if len(m.Answer) == 1 && m.Answer[0].(*dns.SOA).Serial == serial {
				s.mu.Unlock()
				return
			}
		}
		n := len(s.got)
		s.mu.Unlock()
		select {
		case <-s.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no NOTIFY with serial %d after 10 s (%d NOTIFYs arrived)", serial, n)
		}
	}
}

func TestNotifyCoalescesBursts(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{keyName: keySecret}
	var secs []*secondary
	var targets []string
	for range 2 {
		sec := &secondary{arrived: make(chan struct{}, 1)}
		secs = append(secs, sec)
		targets = append(targets, serve(t, "127.0.0.1", sec, secrets))
	}
	src := newFakeSource(t, zone, 1)
	tr, _ := newTransfers(t, src, Config{
		TSIGSecrets:    secrets,
		TSIGAlgorithms: map[string]string{keyName: dns.HmacSHA512},
		NotifyTargets:  targets,
		NotifyKey:      keyName,
	})
	tr.notifyInterval = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- tr.Run(ctx) }()
	// Run subscribes before it waits; wait for the subscription.
	for {
		src.mu.Lock()
		n := len(src.subs)
		src.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}

	for serial := uint32(2); serial <= 1001; serial++ {
		src.change(t, zone, serial, nil, nil)
	}
	for _, sec := range secs {
		sec.waitFor(t, 1001)
	}
	// Nothing more is pending: no NOTIFY follows the last one.
	time.Sleep(2 * tr.notifyInterval)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	total := 0
	for i, sec := range secs {
		sec.mu.Lock()
		total += len(sec.got)
		if n := len(sec.got); n < 2 || n > 4 {
			t.Errorf("target %d: 1000 changes caused %d NOTIFYs, want 2 to 4", i, n)
		}
		last := sec.got[len(sec.got)-1]
		if s := last.Answer[0].(*dns.SOA).Serial; s != 1001 {
			t.Errorf("target %d: last NOTIFY has serial %d, want 1001", i, s)
		}
		for j, m := range sec.got {
			if m.Opcode != dns.OpcodeNotify || !m.Authoritative || len(m.Question) != 1 ||
				m.Question[0].Name != zone || m.Question[0].Qtype != dns.TypeSOA {
				t.Errorf("target %d: NOTIFY %d is not opcode NOTIFY, AA, question %s SOA:\n%v", i, j, zone, m)
			}
			if !sec.signed[j] || m.IsTsig().Algorithm != dns.HmacSHA512 {
				t.Errorf("target %d: NOTIFY %d is not signed with %s (hmac-sha512)", i, j, keyName)
			}
		}
		sec.mu.Unlock()
	}
	if n := testutil.ToFloat64(tr.m.notifies.WithLabelValues(notifyAcked)); n != float64(total) {
		t.Errorf("notifies{acked} = %v, want %d", n, total)
	}
}

func TestNotifyRetries(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		drop   int
		want   int // NOTIFYs that arrive
		result string
	}{
		"answered at the third try": {2, 3, notifyAcked},
		"never answered":            {100, 5, notifyUnanswered},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sec := &secondary{drop: tc.drop, arrived: make(chan struct{}, 1)}
			target := serve(t, "127.0.0.1", sec, nil)
			src := newFakeSource(t, zone, 1)
			tr, _ := newTransfers(t, src, Config{NotifyTargets: []string{target}})
			tr.notifyTimeout = 20 * time.Millisecond
			tr.notifyInterval = 10 * time.Millisecond
			tr.notify(t.Context(), zone, target)
			sec.mu.Lock()
			defer sec.mu.Unlock()
			if len(sec.got) != tc.want {
				t.Errorf("%d NOTIFYs arrived, want %d", len(sec.got), tc.want)
			}
			if n := testutil.ToFloat64(tr.m.notifies.WithLabelValues(tc.result)); n != 1 {
				t.Errorf("notifies{%s} = %v, want 1", tc.result, n)
			}
		})
	}
}

func TestServeNotify(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t, zone, 1)
	tr, _ := newTransfers(t, src, Config{})
	addr := serve(t, "127.0.0.1", handler(tr, src), nil)
	for name, tc := range map[string]struct {
		zone  string
		rcode int
	}{
		"our zone":           {zone, dns.RcodeRefused},
		"our zone, any case": {strings.ToUpper(zone), dns.RcodeRefused},
		"a name inside":      {"host." + zone, dns.RcodeNotAuth},
		"another zone":       {"example.org.", dns.RcodeNotAuth},
	} {
		t.Run(name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetNotify(tc.zone)
			in, _, err := (&dns.Client{Net: "udp"}).Exchange(m, addr)
			if err != nil {
				t.Fatal(err)
			}
			if in.Rcode != tc.rcode || in.Opcode != dns.OpcodeNotify || !slices.Equal(in.Question, m.Question) {
				t.Errorf("NOTIFY for %s: %s opcode %d, want %s, opcode NOTIFY, the question echoed",
					tc.zone, dns.RcodeToString[in.Rcode], in.Opcode, dns.RcodeToString[tc.rcode])
			}
		})
	}
}
