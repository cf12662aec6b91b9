package dnsd

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// batchQuery is one query of TestBatch and a check of its answer.
type batchQuery struct {
	m     *dns.Msg
	check func(*dns.Msg) error
}

// batchQueries mixes queries the fast path answers (A and PTR, in any
// case, with and without EDNS) with ones it leaves to the full path
// (REFUSED, UPDATE, AXFR over UDP, a CNAME with its target), so a batch
// read holds both.
func batchQueries(i int) batchQuery {
	switch i % 6 {
	case 0, 1:
		name := "web1.lab.example.com."
		if i%4 == 0 {
			name = "WEB1.Lab.example.COM."
		}
		m := q(name, dns.TypeA)
		m.RecursionDesired = i%3 == 0
		m.CheckingDisabled = i%5 == 0
		if i%2 == 0 {
			m.SetEdns0(1232, i%8 == 0)
		}
		return batchQuery{m, func(r *dns.Msg) error {
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.2.10" ||
				r.Question[0].Name != name || r.Answer[0].Header().Name != name ||
				r.RecursionDesired != m.RecursionDesired || r.CheckingDisabled != m.CheckingDisabled ||
				(r.IsEdns0() != nil) != (m.IsEdns0() != nil) {
				return fmt.Errorf("A %s: %v", name, r)
			}
			return nil
		}}
	case 2:
		m := q("70.64-127.3.0.10.in-addr.arpa.", dns.TypePTR)
		return batchQuery{m, func(r *dns.Msg) error {
			if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db1.rack.example.com." {
				return fmt.Errorf("PTR: %v", r)
			}
			return nil
		}}
	case 3:
		m := q("example.org.", dns.TypeA)
		return batchQuery{m, func(r *dns.Msg) error {
			if r.Rcode != dns.RcodeRefused {
				return fmt.Errorf("REFUSED: %v", r)
			}
			return nil
		}}
	case 4:
		m := q("lab.example.com.", dns.TypeSOA)
		m.Opcode = dns.OpcodeUpdate
		return batchQuery{m, func(r *dns.Msg) error {
			if r.Rcode != dns.RcodeNotImplemented || r.Opcode != dns.OpcodeUpdate {
				return fmt.Errorf("UPDATE: %v", r)
			}
			return nil
		}}
	default:
		m := q("www.lab.example.com.", dns.TypeA)
		return batchQuery{m, func(r *dns.Msg) error {
			if len(r.Answer) != 2 || r.Answer[0].(*dns.CNAME).Target != "web1.lab.example.com." {
				return fmt.Errorf("CNAME: %v", r)
			}
			return nil
		}}
	}
}

// TestBatch sends bursts of queries from several clients at once, so
// that the daemon reads many in one batch, fast and full path mixed,
// and checks that each gets its own answer and is counted.
func TestBatch(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), func(c *Config) { c.UDPSockets, c.RRLRate = 1, 0 })
	td.synced(t)
	const clients, perClient = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- burst(td.addrs.UDP[0].String(), c, perClient)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// The last answers may be counted after the client has them.
	for _, want := range []string{
		fmt.Sprintf(`carbide_dns_queries_total{qtype="A",rcode="REFUSED"} %d`, clients*perClient/6),
		fmt.Sprintf(`carbide_dns_queries_total{qtype="PTR",rcode="NOERROR"} %d`, clients*perClient/6),
		fmt.Sprintf(`carbide_dns_queries_total{qtype="A",rcode="NOERROR"} %d`, clients*perClient/2),
	} {
		waitFor(t, want, func() bool { return strings.Contains(td.metrics(t), want) })
	}
}

// burst sends n queries from one socket without waiting, in windows of
// 20 (the clients together stay within the socket's receive buffer),
// and checks the answers, matched by ID.
func burst(addr string, client, n int) error {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	const window = 20
	buf := make([]byte, 65535)
	for first := 0; first < n; first += window {
		want := map[uint16]batchQuery{}
		for i := first; i < min(n, first+window); i++ {
			bq := batchQueries(i)
			bq.m.Id = uint16(client<<12 | i)
			want[bq.m.Id] = bq
			pkt, err := bq.m.Pack()
			if err != nil {
				return err
			}
			if _, err := conn.Write(pkt); err != nil {
				return err
			}
		}
		for len(want) > 0 {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				return fmt.Errorf("client %d: %d answers missing: %w", client, len(want), err)
			}
			r := new(dns.Msg)
			if err := r.Unpack(buf[:k]); err != nil {
				return err
			}
			bq, ok := want[r.Id]
			if !ok {
				return fmt.Errorf("client %d: unexpected or repeated answer %d", client, r.Id)
			}
			delete(want, r.Id)
			if err := bq.check(r); err != nil {
				return fmt.Errorf("client %d query %d: %w", client, r.Id&0xfff, err)
			}
		}
	}
	return nil
}

// TestBatchWildcardSource: a socket bound to 0.0.0.0 answers from the
// address the query went to, on the fast and the full path (the session
// the batch reader makes for the full path carries that address).
func TestBatchWildcardSource(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), func(c *Config) { c.Listen = []string{"0.0.0.0:0"} })
	td.synced(t)
	port := td.addrs.UDP[0].(*net.UDPAddr).Port
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 65535)
	for i, m := range []*dns.Msg{q("web1.lab.example.com.", dns.TypeA), q("web1.lab.example.com.", dns.TypeA), q("example.org.", dns.TypeA)} {
		m.Id = uint16(i + 1)
		pkt, _ := m.Pack()
		if _, err := conn.WriteToUDP(pkt, to); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil || r.Id != m.Id {
			t.Fatalf("query %d: answer %v, %v", i, r, err)
		}
		if !from.IP.Equal(to.IP) {
			t.Errorf("query %d answered from %v, sent to %v", i, from, to)
		}
	}
}

// TestBatchIPv6: the batch reader on an IPv6 socket.
func TestBatchIPv6(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, seeded(), func(c *Config) { c.Listen, c.RRLRate = []string{"[::1]:0"}, 0 })
	td.synced(t)
	if err := burst(td.addrs.UDP[0].String(), 1, 60); err != nil {
		t.Error(err)
	}
}
