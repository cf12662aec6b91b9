package xfr

import (
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkAXFR transfers a zone of 200,000 A records (the size of the
// DNS benchmark's 100,000 machines, forward and reverse in one zone) over
// loopback with miekg's client, unsigned and TSIG-signed.
func BenchmarkAXFR(b *testing.B) {
	for name, secrets := range map[string]map[string]string{
		"unsigned": nil,
		"tsig":     {keyName: keySecret},
	} {
		b.Run(name, func(b *testing.B) {
			src := newFakeSource(b, zone, 1, records(zone, 200_000)...)
			tr, _ := newTransfers(b, src, Config{TSIGSecrets: secrets})
			addr := serve(b, "127.0.0.1", handler(tr, src), secrets)
			b.ResetTimer()
			for range b.N {
				m := new(dns.Msg)
				m.SetAxfr(zone)
				if secrets != nil {
					m.SetTsig(keyName, dns.HmacSHA256, 300, 0)
				}
				ch, err := (&dns.Transfer{TsigSecret: secrets}).In(m, addr)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for env := range ch {
					if env.Error != nil {
						b.Fatal(env.Error)
					}
					n += len(env.RR)
				}
				if n != 200_004 {
					b.Fatalf("AXFR gave %d records, want 200004", n)
				}
			}
			b.ReportMetric(float64(200_004*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
