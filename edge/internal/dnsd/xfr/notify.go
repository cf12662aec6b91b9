package xfr

import (
	"context"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Run sends NOTIFYs to Config.NotifyTargets after each zone change (from
// the source's Subscribe) until ctx ends, coalescing bursts and retrying
// each target (see the package doc). It returns nil when ctx ends, after
// the NOTIFYs in flight have stopped.
func (t *Transfers) Run(ctx context.Context) error {
	n := &notifier{t: t, ctx: ctx, zones: make(map[notifyKey]*notifyState)}
	if len(t.targets) > 0 {
		t.src.Subscribe(n.changed)
	}
	<-ctx.Done()
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// notifyKey names one zone at one target.
type notifyKey struct{ zone, target string }

// notifyState is whether a NOTIFY of a zone to a target is being sent,
// and whether the zone changed again since it started.
type notifyState struct {
	running bool
	pending bool
}

// notifier coalesces the changes of zones into NOTIFYs: at most one
// sender goroutine per zone and target at a time.
type notifier struct {
	t   *Transfers
	ctx context.Context

	mu      sync.Mutex
	zones   map[notifyKey]*notifyState
	stopped bool
	wg      sync.WaitGroup
}

// changed is the source's callback: it never blocks.
func (n *notifier) changed(origin string, _ uint32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	for _, target := range n.t.targets {
		k := notifyKey{origin, target}
		s := n.zones[k]
		if s == nil {
			s = &notifyState{}
			n.zones[k] = s
		}
		if s.running {
			s.pending = true
			continue
		}
		s.running = true
		n.wg.Add(1)
		go n.send(k, s)
	}
}

// send notifies one target of one zone until no change is pending, at
// most once per notifyInterval.
func (n *notifier) send(k notifyKey, s *notifyState) {
	defer n.wg.Done()
	for {
		start := time.Now()
		n.t.notify(n.ctx, k.zone, k.target)
		wait := time.NewTimer(n.t.notifyInterval - time.Since(start))
		select {
		case <-n.ctx.Done():
		case <-wait.C:
		}
		wait.Stop()
		n.mu.Lock()
		if !s.pending || n.ctx.Err() != nil {
			s.running, s.pending = false, false
			n.mu.Unlock()
			return
		}
		s.pending = false
		n.mu.Unlock()
	}
}

// currentSOA returns the zone's SOA now, or nil when it is gone.
func (t *Transfers) currentSOA(zone string) *dns.SOA {
	// Changes from serial 0 is cheap when the journal does not reach
	// back that far, and yields the SOA either way.
	if soa, _, _ := t.src.Changes(zone, 0); soa != nil {
		return soa
	}
	soa, _, _ := t.src.Snapshot(zone)
	return soa
}

// notify sends one NOTIFY of zone to target, trying again with a doubled
// wait when no answer comes, and counts the result.
func (t *Transfers) notify(ctx context.Context, zone, target string) {
	c := &dns.Client{Net: "udp"}
	if t.key != "" {
		c.TsigSecret = map[string]string{t.key: t.secrets[t.key]}
	}
	timeout := t.notifyTimeout
	for try := 1; try <= t.notifyTries; try++ {
		soa := t.currentSOA(zone)
		if soa == nil {
			return
		}
		m := new(dns.Msg)
		m.SetNotify(zone)
		m.Answer = []dns.RR{soa}
		if t.key != "" {
			alg := t.algs[t.key]
			if alg == "" {
				alg = dns.HmacSHA256
			}
			m.SetTsig(t.key, alg, 300, time.Now().Unix())
		}
		c.Timeout = timeout
		in, _, err := c.ExchangeContext(ctx, m, target)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && in.Rcode == dns.RcodeSuccess:
			t.m.notifies.WithLabelValues(notifyAcked).Inc()
			t.log.Debug("notify acked", "zone", zone, "target", target, "serial", soa.Serial, "try", try)
			return
		case err == nil:
			t.m.notifies.WithLabelValues(notifyRejected).Inc()
			t.log.Warn("notify rejected by secondary", "zone", zone, "target", target, "rcode", dns.RcodeToString[in.Rcode])
			return
		}
		t.log.Debug("notify not answered", "zone", zone, "target", target, "try", try, "err", err)
		timeout *= 2
	}
	t.m.notifies.WithLabelValues(notifyUnanswered).Inc()
	t.log.Warn("notify not answered after every try", "zone", zone, "target", target, "tries", t.notifyTries)
}

// ServeNotify answers an incoming NOTIFY r. carbide-dns is only ever a
// primary, so nobody has news for it: REFUSED for a zone it serves,
// NOTAUTH for any other (as BIND answers a NOTIFY for a zone it does not
// hold), FORMERR for a NOTIFY without its one question.
func (t *Transfers) ServeNotify(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	switch {
	case len(r.Question) != 1:
		m.SetRcodeFormatError(r)
	default:
		origin, ok := t.src.Zone(r.Question[0].Name)
		rcode := dns.RcodeNotAuth
		if ok && origin == dns.CanonicalName(r.Question[0].Name) {
			rcode = dns.RcodeRefused
		}
		m.SetRcode(r, rcode)
	}
	m.Opcode = dns.OpcodeNotify
	t.finish(w, r, m)
	_ = w.WriteMsg(m)
}
