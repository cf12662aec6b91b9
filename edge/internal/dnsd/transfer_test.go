package dnsd_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/dnsd"
	"github.com/carbide-dev/carbide/edge/internal/dnsd/xfr"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// TestTransfersWired runs the daemon with package xfr wired in as the
// command wires it, and transfers a zone over TCP by AXFR and then, after
// a change, by IXFR from the daemon's journal.
func TestTransfersWired(t *testing.T) {
	t.Parallel()
	tcp, move := dnsd.StartSeeded(t, func(c *dnsd.Config) {
		c.NewTransfers = func(src dnsd.ZoneSource, reg prometheus.Registerer, logger *slog.Logger) (dnsd.Transfers, error) {
			return xfr.New(src, xfr.Config{Logger: logger, Metrics: reg})
		}
	})
	transfer := func(m *dns.Msg) []dns.RR {
		t.Helper()
		tr := &dns.Transfer{ReadTimeout: 5 * time.Second}
		env, err := tr.In(m, tcp)
		if err != nil {
			t.Fatalf("transfer: %v", err)
		}
		var rrs []dns.RR
		for e := range env {
			if e.Error != nil {
				t.Fatalf("transfer: %v", e.Error)
			}
			rrs = append(rrs, e.RR...)
		}
		return rrs
	}
	axfr := new(dns.Msg)
	axfr.SetAxfr("lab.example.com.")
	rrs := transfer(axfr)
	if len(rrs) < 4 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("AXFR: %v", rrs)
	}
	serial := rrs[0].(*dns.SOA).Serial
	rev := move("10.0.2.99")
	time.Sleep(100 * time.Millisecond)
	ixfr := new(dns.Msg)
	ixfr.SetIxfr("lab.example.com.", serial, "ns1.example.net.", "hostmaster.example.net.")
	var got []dns.RR
	for range 50 {
		if got = transfer(ixfr); len(got) > 0 && got[0].(*dns.SOA).Serial == uint32(rev) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// IXFR: new SOA, old SOA, removed, new SOA, added, new SOA.
	if len(got) != 6 || got[1].(*dns.SOA).Serial != serial || got[2].(*dns.A).A.String() != "10.0.2.10" || got[4].(*dns.A).A.String() != "10.0.2.99" {
		t.Errorf("IXFR from %d to %d: %v", serial, rev, got)
	}
}
