package xfr

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/carbide-dev/carbide/edge/internal/dnsd"
)

const (
	zone      = "example.test."
	keyName   = "xfr-key."
	keySecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==" // test key, not a real one
	otherKey  = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI="
)

// transfer runs a zone transfer of typ (with the client's serial for
// IXFR) against addr over TCP, signed with secrets when given, and
// returns the records and the number of messages.
func transfer(t *testing.T, addr string, typ uint16, serial uint32, secrets map[string]string) ([]dns.RR, int, error) {
	t.Helper()
	m := new(dns.Msg)
	if typ == dns.TypeAXFR {
		m.SetAxfr(zone)
	} else {
		m.SetIxfr(zone, serial, "ns1."+zone, "hostmaster."+zone)
	}
	tr := &dns.Transfer{TsigSecret: secrets}
	if secrets != nil {
		m.SetTsig(keyName, dns.HmacSHA256, 300, time.Now().Unix())
	}
	ch, err := tr.In(m, addr)
	if err != nil {
		return nil, 0, err
	}
	var rrs []dns.RR
	n := 0
	for env := range ch {
		if env.Error != nil {
			return rrs, n, env.Error
		}
		rrs = append(rrs, env.RR...)
		n++
	}
	return rrs, n, nil
}

func strs(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, r := range rrs {
		out[i] = r.String()
	}
	return out
}

func TestAXFR(t *testing.T) {
	t.Parallel()
	for name, secrets := range map[string]map[string]string{
		"unsigned": nil,
		"tsig":     {keyName: keySecret},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource(t, zone, 7, records(zone, 3000)...)
			tr, reg := newTransfers(t, src, Config{TSIGSecrets: secrets})
			addr := serve(t, "127.0.0.1", handler(tr, src), secrets)

			got, msgs, err := transfer(t, addr, dns.TypeAXFR, 0, secrets)
			if err != nil {
				t.Fatalf("AXFR: %v", err)
			}
			soa, want, _ := src.Snapshot(zone)
			want = append(append([]dns.RR{soa}, want...), soa)
			if !slices.Equal(strs(got), strs(want)) {
				t.Fatalf("AXFR gave %d records, want the %d of the zone framed by its SOA", len(got), len(want))
			}
			// 3002 records of ~40 bytes: several messages, each of many.
			if msgs < 5 || msgs > 20 {
				t.Errorf("AXFR took %d messages, want a few of about 16 KiB", msgs)
			}
			waitCount(t, tr.m.transfers.WithLabelValues("axfr", resultFull), 1, "transfers{axfr,full}")
			if n := testutil.CollectAndCount(reg, "carbide_dns_transfer_seconds"); n != 1 {
				t.Errorf("carbide_dns_transfer_seconds series = %d, want 1", n)
			}
		})
	}
}

func TestIXFR(t *testing.T) {
	t.Parallel()
	a1, a9 := "a."+zone+" 300 IN A 10.0.0.1", "a."+zone+" 300 IN A 10.0.0.9"
	b, c := "b."+zone+" 300 IN A 10.0.0.2", "c."+zone+" 300 IN A 10.0.0.3"
	src := newFakeSource(t, zone, 10, a1, b)
	src.journalMax = 3
	src.change(t, zone, 11, []string{a1}, []string{a9})
	src.change(t, zone, 12, nil, []string{c})
	src.change(t, zone, 13, []string{b}, nil)
	src.change(t, zone, 14, []string{c}, nil)
	soa, all, _ := src.Snapshot(zone)
	at := func(serial uint32) string { return withSerial(soa, serial).String() }
	full := strs(append(append([]dns.RR{soa}, all...), soa))
	str := func(s string) string { return rr(t, s).String() }

	for name, tc := range map[string]struct {
		serial uint32
		want   []string
		result string
	}{
		"up to date": {14, []string{at(14)}, resultUpToDate},
		"newer":      {20, []string{at(14)}, resultUpToDate},
		// c, added at 12 and removed at 14, cancels out.
		"journal condensed": {11, []string{at(14), at(11), str(b), at(14), at(14)}, resultIncremental},
		"journal":           {12, []string{at(14), at(12), str(b), str(c), at(14), at(14)}, resultIncremental},
		"one change":        {13, []string{at(14), at(13), str(c), at(14), at(14)}, resultIncremental},
		"journal too short": {10, full, resultFull},
		"unknown serial":    {5, full, resultFull},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tr, _ := newTransfers(t, src, Config{})
			addr := serve(t, "127.0.0.1", handler(tr, src), nil)
			got, _, err := transfer(t, addr, dns.TypeIXFR, tc.serial, nil)
			if err != nil {
				t.Fatalf("IXFR from %d: %v", tc.serial, err)
			}
			if !slices.Equal(strs(got), tc.want) {
				t.Errorf("IXFR from %d:\n%s\nwant\n%s", tc.serial, strings.Join(strs(got), "\n"), strings.Join(tc.want, "\n"))
			}
			waitCount(t, tr.m.transfers.WithLabelValues("ixfr", tc.result), 1, "transfers{ixfr,"+tc.result+"}")
		})
	}

	// Over UDP the client gets the current SOA alone, whether or not it
	// is behind, and retries over TCP when it is.
	for serial, result := range map[uint32]string{11: resultUDPSOA, 14: resultUpToDate} {
		tr, _ := newTransfers(t, src, Config{})
		addr := serve(t, "127.0.0.1", handler(tr, src), nil)
		m := new(dns.Msg)
		m.SetIxfr(zone, serial, "ns1."+zone, "hostmaster."+zone)
		m.SetEdns0(1232, false)
		in, _, err := (&dns.Client{Net: "udp"}).Exchange(m, addr)
		if err != nil {
			t.Fatal(err)
		}
		if in.Rcode != dns.RcodeSuccess || !slices.Equal(strs(in.Answer), []string{at(14)}) {
			t.Errorf("IXFR over UDP from %d: %s %v, want NOERROR and the SOA at 14", serial, dns.RcodeToString[in.Rcode], strs(in.Answer))
		}
		if in.IsEdns0() == nil {
			t.Errorf("IXFR over UDP from %d: the answer to an EDNS query has no OPT RR", serial)
		}
		waitCount(t, tr.m.transfers.WithLabelValues("ixfr", result), 1, "transfers{ixfr,"+result+"}")
	}
}

func TestMalformedAndForeignRequests(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t, zone, 7)
	tr, _ := newTransfers(t, src, Config{})
	addr := serve(t, "127.0.0.1", handler(tr, src), nil)
	for name, tc := range map[string]struct {
		net   string
		name  string
		qtype uint16
		rcode int
	}{
		"AXFR over UDP":        {"udp", zone, dns.TypeAXFR, dns.RcodeFormatError},
		"AXFR inside the zone": {"tcp", "host." + zone, dns.TypeAXFR, dns.RcodeNotAuth},
		"AXFR of another zone": {"tcp", "example.org.", dns.TypeAXFR, dns.RcodeNotAuth},
		"IXFR without SOA":     {"tcp", zone, dns.TypeIXFR, dns.RcodeFormatError},
	} {
		t.Run(name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.name, tc.qtype)
			in, _, err := (&dns.Client{Net: tc.net}).Exchange(m, addr)
			if err != nil {
				t.Fatal(err)
			}
			if in.Rcode != tc.rcode || len(in.Answer) != 0 {
				t.Errorf("rcode %s with %d records, want %s and none", dns.RcodeToString[in.Rcode], len(in.Answer), dns.RcodeToString[tc.rcode])
			}
		})
	}
	waitCount(t, tr.m.transfers.WithLabelValues("axfr", resultNotAuth), 2, "transfers{axfr,not_auth}")
	waitCount(t, tr.m.transfers.WithLabelValues("axfr", resultMalformed), 1, "transfers{axfr,malformed}")
	waitCount(t, tr.m.transfers.WithLabelValues("ixfr", resultMalformed), 1, "transfers{ixfr,malformed}")
}

// rawExchange sends m over TCP to addr, signed with secret (when not
// ""), and returns the answer, and whether its MAC verifies with secret.
func rawExchange(t *testing.T, addr string, m *dns.Msg, secret string) (*dns.Msg, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	var mac string
	if secret != "" {
		out, mac, err = dns.TsigGenerate(m, secret, "", false)
	} else {
		out, err = m.Pack()
	}
	if err != nil {
		t.Fatal(err)
	}
	co := &dns.Conn{Conn: c}
	if _, err := co.Write(out); err != nil {
		t.Fatal(err)
	}
	p, err := co.ReadMsgHeader(nil)
	if err != nil {
		t.Fatal(err)
	}
	in := new(dns.Msg)
	if err := in.Unpack(p); err != nil {
		t.Fatal(err)
	}
	return in, secret != "" && in.IsTsig() != nil && dns.TsigVerify(p, secret, mac, false) == nil
}

func TestTSIGAndACL(t *testing.T) {
	t.Parallel()
	type request struct {
		key, alg string
		secret   string // what the client signs with; "" = unsigned
		skew     time.Duration
	}
	for name, tc := range map[string]struct {
		allow    []netip.Prefix
		req      request
		rcode    int
		tsigErr  uint16 // TSIG error of the answer; 0 and unsigned when no TSIG is expected
		signed   bool   // the answer carries a MAC
		result   string
		wantRecs bool
	}{
		"good":              {req: request{keyName, dns.HmacSHA256, keySecret, 0}, rcode: dns.RcodeSuccess, signed: true, result: resultFull, wantRecs: true},
		"missing":           {req: request{}, rcode: dns.RcodeNotAuth, result: resultTSIGMissing},
		"bad signature":     {req: request{keyName, dns.HmacSHA256, otherKey, 0}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadSig, result: resultTSIGBad},
		"unknown key":       {req: request{"stranger.", dns.HmacSHA256, keySecret, 0}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadKey, result: resultTSIGBad},
		"other algorithm":   {req: request{keyName, dns.HmacSHA512, keySecret, 0}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadKey, result: resultTSIGBad},
		"clock off":         {req: request{keyName, dns.HmacSHA256, keySecret, -time.Hour}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadTime, signed: true, result: resultTSIGBad},
		"outside the ACL":   {allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, req: request{keyName, dns.HmacSHA256, keySecret, 0}, rcode: dns.RcodeRefused, signed: true, result: resultRefused},
		"inside a wide ACL": {allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, req: request{keyName, dns.HmacSHA256, keySecret, 0}, rcode: dns.RcodeSuccess, signed: true, result: resultFull, wantRecs: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			src := newFakeSource(t, zone, 7, records(zone, 3)...)
			secrets := map[string]string{keyName: keySecret}
			tr, _ := newTransfers(t, src, Config{
				AllowTransfer:  tc.allow,
				TSIGSecrets:    secrets,
				TSIGAlgorithms: map[string]string{keyName: "hmac-sha256"},
				Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			addr := serve(t, "127.0.0.1", handler(tr, src), secrets)

			m := new(dns.Msg)
			m.SetAxfr(zone)
			if tc.req.secret != "" {
				m.SetTsig(tc.req.key, tc.req.alg, 300, time.Now().Add(tc.req.skew).Unix())
			}
			in, verified := rawExchange(t, addr, m, tc.req.secret)
			if in.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[in.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := len(in.Answer) > 0; got != tc.wantRecs {
				t.Errorf("answer has %d records, want records: %v", len(in.Answer), tc.wantRecs)
			}
			ts := in.IsTsig()
			switch {
			case tc.req.secret == "" && ts != nil:
				t.Errorf("answer to an unsigned request carries a TSIG")
			case tc.req.secret != "" && ts == nil:
				t.Errorf("answer to a signed request carries no TSIG")
			case ts != nil:
				if ts.Error != tc.tsigErr {
					t.Errorf("TSIG error %s, want %s", dns.RcodeToString[int(ts.Error)], dns.RcodeToString[int(tc.tsigErr)])
				}
				if got := ts.MACSize > 0; got != tc.signed {
					t.Errorf("answer signed: %v, want %v", got, tc.signed)
				}
				if tc.signed && ts.Error != dns.RcodeBadTime && !verified {
					t.Errorf("answer's MAC does not verify")
				}
			}
			waitCount(t, tr.m.transfers.WithLabelValues("axfr", tc.result), 1, "transfers{axfr,"+tc.result+"}")
			for _, s := range []string{keySecret, otherKey} {
				if strings.Contains(logs.String(), s) {
					t.Errorf("a TSIG secret is in the log:\n%s", logs.String())
				}
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t, zone, 1)
	_, err := New(src, Config{
		TSIGSecrets:    map[string]string{"Key.Example": keySecret},
		TSIGAlgorithms: map[string]string{"key.example.": "hmac-md5"},
		NotifyTargets:  []string{"192.0.2.1"},
		NotifyKey:      "nokey.",
		Metrics:        prometheus.NewRegistry(),
	})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{`"Key.Example" is not a lower-case FQDN`, `"hmac-md5"`, `"192.0.2.1"`, `notify key "nokey."`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), keySecret) {
		t.Errorf("error shows a secret: %v", err)
	}
}

func TestCondense(t *testing.T) {
	t.Parallel()
	x, y, z := rr(t, "x."+zone+" 60 IN A 192.0.2.1"), rr(t, "y."+zone+" 60 IN A 192.0.2.2"), rr(t, "z."+zone+" 60 IN TXT \"z\"")
	X := rr(t, "X."+strings.ToUpper(zone)+" 60 IN A 192.0.2.1")
	for name, tc := range map[string]struct {
		diffs                []dnsd.Diff
		wantRemoved, wantAdd []dns.RR
	}{
		"one diff as it is":         {[]dnsd.Diff{{Removed: []dns.RR{x}, Added: []dns.RR{y}}}, []dns.RR{x}, []dns.RR{y}},
		"added then removed":        {[]dnsd.Diff{{Added: []dns.RR{z}}, {Removed: []dns.RR{z}, Added: []dns.RR{y}}}, nil, []dns.RR{y}},
		"removed then added back":   {[]dnsd.Diff{{Removed: []dns.RR{x}}, {Added: []dns.RR{X}}}, nil, nil},
		"removed, added, removed":   {[]dnsd.Diff{{Removed: []dns.RR{x}}, {Added: []dns.RR{x}}, {Removed: []dns.RR{x}}}, []dns.RR{x}, nil},
		"independent changes merge": {[]dnsd.Diff{{Removed: []dns.RR{x}}, {Added: []dns.RR{y}}, {Added: []dns.RR{z}}}, []dns.RR{x}, []dns.RR{y, z}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			removed, added := condense(tc.diffs)
			if !slices.Equal(strs(removed), strs(tc.wantRemoved)) || !slices.Equal(strs(added), strs(tc.wantAdd)) {
				t.Errorf("condense: removed %v added %v, want removed %v added %v", strs(removed), strs(added), strs(tc.wantRemoved), strs(tc.wantAdd))
			}
		})
	}
}
