package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// TestReplicasUnderLoad runs two carbide-dhcp replicas on one link, with
// one API on PostgreSQL, under perfdhcp load:
//
//	srv1 eth0 198.18.8.1/22 ┐
//	srv2 eth0 198.18.8.2/22 ├ br0 (namespace hub)
//	load eth0 198.18.8.3/22 ┘ perfdhcp: 500 clients, 600 exchanges at 50/s
//
// Both replicas answer every DISCOVER and the client takes one offer. The
// API must give each MAC one address and each address one MAC whichever
// replica asks, which the database then shows.
//
// It does not run in parallel with the other tests: 50 exchanges/s are
// 150 Lease calls/s, as both replicas answer each DISCOVER, which is about
// what the API, PostgreSQL, both replicas and perfdhcp sharing two cores
// can do. How many exchanges complete is logged, not asserted: rates are
// for benchmarks to claim, and this machine may be busy with other work.
func TestReplicasUnderLoad(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "perfdhcp", "psql")

	hub, srv1, srv2, load := newNetns(t, "hub"), newNetns(t, "srv1"), newNetns(t, "srv2"), newNetns(t, "load")
	veth(t, hub, "p-srv1", srv1, "eth0")
	veth(t, hub, "p-srv2", srv2, "eth0")
	veth(t, hub, "p-load", load, "eth0")
	hub.bridge(t, "br0", "p-srv1", "p-srv2", "p-load")
	srv1.addr(t, "eth0", "198.18.8.1/22")
	srv2.addr(t, "eth0", "198.18.8.2/22")
	load.addr(t, "eth0", "198.18.8.3/22")

	dbURL := startPostgres(t)
	a := startAPI(t, dbURL)
	const first, last = "198.18.8.10", "198.18.11.250"
	seg := a.createSegment(t, &networkv1.Segment{
		Name: "load", Prefix: "198.18.8.0/22", Gateway: "198.18.8.1",
		Ranges: []*networkv1.AddressRange{{Start: first, End: last}},
	})
	d1 := startDaemon(t, a, srv1, "info", "eth0")
	d2 := startDaemon(t, a, srv2, "info", "eth0")

	// perfdhcp acts as a relay: giaddr is its own address, 198.18.8.3,
	// which lies in the segment, and replies come to it at port 67.
	const clients, exchanges = 500, 600
	out, err := run(load, 90*time.Second, tools["perfdhcp"], "-4", "-l", "eth0",
		"-r", "50", "-R", strconv.Itoa(clients), "-n", strconv.Itoa(exchanges),
		"-p", "30", "-W", "2000000")
	// Exit status 3: some exchanges failed, which the counts below judge.
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("perfdhcp: %v", err)
	}
	t.Logf("perfdhcp:\n%s", out)
	stats := perfdhcpStats(t, out)
	do, ra := stats["DISCOVER-OFFER"], stats["REQUEST-ACK"]
	if do["sent packets"] < exchanges*9/10 {
		t.Errorf("perfdhcp sent %d DISCOVERs, want about %d", do["sent packets"], exchanges)
	}
	t.Logf("%d of %d DISCOVERs ended in an ACK", ra["received packets"], do["sent packets"])
	if ra["rejected leases"] != 0 || do["rejected leases"] != 0 {
		t.Errorf("perfdhcp rejected leases: %d offers, %d acks", do["rejected leases"], ra["rejected leases"])
	}

	// Both replicas served.
	for i, d := range []*daemon{d1, d2} {
		offers := d.metric(t, `carbide_dhcp_replies_total{type="offer"}`)
		acks := d.metric(t, `carbide_dhcp_replies_total{type="ack"}`)
		naks := d.metric(t, `carbide_dhcp_replies_total{type="nak"}`)
		busy := d.metric(t, `carbide_dhcp_drops_total{reason="busy"}`)
		tentative := d.metric(t, `carbide_dhcp_offer_leases_total`)
		t.Logf("replica %d: %v offers (%v tentative ones accepted), %v acks, %v naks, %v dropped busy", i+1, offers, tentative, acks, naks, busy)
		if offers == 0 {
			t.Errorf("replica %d made no offers", i+1)
		}
		// A tentative offer (made without a write while few DISCOVERs are
		// in progress) may name an address another client leases before
		// this one's REQUEST; that client is refused, as RFC 2131 4.3.2
		// asks. Any other NAK means the replicas disagreed on an address.
		if naks > tentative {
			t.Errorf("replica %d sent %v NAKs for %v accepted tentative offers: it disagreed with the other on an address", i+1, naks, tentative)
		}
	}

	// The database: no address twice in a segment, no MAC twice at all,
	// one machine per enrolled MAC.
	psql := func(query string) []string {
		t.Helper()
		out, err := run(nil, 30*time.Second, tools["psql"], "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", " ",
			"-d", dbURL, "-c", query)
		if err != nil {
			t.Fatalf("psql: %v", err)
		}
		return strings.Fields(out)
	}
	if dup := psql(`SELECT segment_id, address, count(*) FROM leases GROUP BY 1, 2 HAVING count(*) > 1`); len(dup) != 0 {
		t.Errorf("addresses leased more than once in a segment: %v", dup)
	}
	if dup := psql(`SELECT mac, count(*) FROM leases GROUP BY 1 HAVING count(*) > 1`); len(dup) != 0 {
		t.Errorf("MACs holding more than one lease: %v", dup)
	}
	counts := psql(fmt.Sprintf(`SELECT count(*), count(DISTINCT address), count(DISTINCT mac) FROM leases WHERE segment_id = '%s'`, seg.GetId()))
	if len(counts) != 3 || counts[0] != counts[1] || counts[0] != counts[2] {
		t.Errorf("leases, distinct addresses, distinct MACs = %v; want three equal numbers", counts)
	}
	// Enough leases that the replicas raced for many of them, and no
	// more than there are clients.
	n, _ := strconv.Atoi(counts[0])
	if n < 50 || n > clients {
		t.Errorf("%d leases for %d clients, want 50 to %d", n, clients, clients)
	}
	nics := psql(`SELECT count(*), count(DISTINCT mac), (SELECT count(*) FROM machines) FROM nics`)
	if len(nics) != 3 || nics[0] != nics[1] || nics[0] != nics[2] {
		t.Errorf("interfaces, distinct MACs, machines = %v; want three equal numbers", nics)
	}

	// The API agrees, and every address is from the pool.
	leases := a.leases(t, seg.GetId())
	if len(leases) != n {
		t.Errorf("ListLeases lists %d leases, the database holds %d", len(leases), n)
	}
	for _, l := range leases {
		if !inRange(l.GetAddress(), first, last) {
			t.Errorf("lease %v is outside the pool %s-%s", l, first, last)
		}
	}
	t.Logf("%d clients hold %d leases; interfaces, MACs, machines: %v", clients, n, nics)
}

var statsHeader = regexp.MustCompile(`^\*\*\*Statistics for: (\S+)\*\*\*$`)

// perfdhcpStats reads perfdhcp's report: the counters of each exchange,
// e.g. stats["REQUEST-ACK"]["received packets"].
func perfdhcpStats(t *testing.T, out string) map[string]map[string]int {
	t.Helper()
	stats := map[string]map[string]int{}
	var cur map[string]int
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if m := statsHeader.FindStringSubmatch(line); m != nil {
			cur = map[string]int{}
			stats[m[1]] = cur
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok || cur == nil {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil {
			cur[k] = n
		}
	}
	for _, ex := range []string{"DISCOVER-OFFER", "REQUEST-ACK"} {
		if _, ok := stats[ex]; !ok {
			t.Fatalf("perfdhcp printed no statistics for %s:\n%s", ex, out)
		}
	}
	return stats
}
