package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// dnsLab is the topology of the DNS tests, all on the host's loopback:
// carbide-api on its embedded store at a fixed port (so that it can be
// restarted where the replicas look for it), two carbide-dns replicas,
// and two segments with domains: a /24 and a /26 (an RFC 2317 reverse
// zone).
type dnsLab struct {
	api      *api
	apiProc  *proc
	apiArgs  []string
	dataDir  string
	dhcp     *carbide.Client // the dhcp role: leases
	lab      *networkv1.Segment
	small    *networkv1.Segment
	replicas []*dnsDaemon
	keyfile  string // TSIG keys of the replicas
	secret   string // base64 secret of tsigKey
}

const (
	tsigKey     = "xfr-key."
	labDomain   = "lab.carbide.test."
	smallDomain = "small.carbide.test."
	// The reverse zones of the segments: an octet-aligned one and the
	// RFC 2317 one of 198.18.21.64/26.
	labReverse   = "20.18.198.in-addr.arpa."
	smallReverse = "64-127.21.18.198.in-addr.arpa."
)

func newDNSLab(t testing.TB, notify ...string) *dnsLab {
	t.Helper()
	l := &dnsLab{dataDir: t.TempDir()}
	// No enrolment limit: BenchmarkDNSFreshness enrols hundreds of
	// machines from one relay in seconds.
	l.apiArgs = []string{bins.api, "--dev", "--listen", fmt.Sprintf("127.0.0.1:%d", freeDNSPort(t)), "--data-dir", l.dataDir,
		"--enrol-rate", "0"}
	l.apiProc = startProc(t, nil, "carbide-api", l.apiArgs...)
	l.api = apiFrom(t, l.apiProc, l.dataDir)
	dhcp, err := carbide.New("https://"+l.api.addr, carbide.WithClientCertificate(
		filepath.Join(l.api.pki, "dhcp.crt"), filepath.Join(l.api.pki, "dhcp.key"), filepath.Join(l.api.pki, "ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	l.dhcp = dhcp
	l.lab = l.api.createSegment(t, &networkv1.Segment{
		Name: "lab", Prefix: "198.18.20.0/24", Gateway: "198.18.20.1", Domain: strings.TrimSuffix(labDomain, "."),
		Ranges:        []*networkv1.AddressRange{{Start: "198.18.20.10", End: "198.18.20.200"}},
		LeaseDuration: durationpb.New(24 * time.Hour),
	})
	l.small = l.api.createSegment(t, &networkv1.Segment{
		Name: "small", Prefix: "198.18.21.64/26", Gateway: "198.18.21.65", Domain: strings.TrimSuffix(smallDomain, "."),
		Ranges:        []*networkv1.AddressRange{{Start: "198.18.21.70", End: "198.18.21.120"}},
		LeaseDuration: durationpb.New(24 * time.Hour),
	})

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	l.secret = base64.StdEncoding.EncodeToString(secret)
	testsecret.Register(t, l.secret)
	l.keyfile = filepath.Join(t.TempDir(), "tsig.keys")
	if err := os.WriteFile(l.keyfile, []byte("# the test's transfer key\n"+tsigKey+" hmac-sha256 "+l.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		extra := []string{"--tsig-keyfile", l.keyfile, "--ttl", "60s"}
		if i == 0 {
			for _, n := range notify {
				extra = append(extra, "--notify", n)
			}
		}
		l.replicas = append(l.replicas, startCarbideDNS(t, l.api, fmt.Sprintf("carbide-dns %d", i+1), extra...))
	}
	return l
}

// waitHealthy waits until every replica's /healthz answers 200: its first
// snapshot is in memory.
func (l *dnsLab) waitHealthy(t testing.TB) {
	t.Helper()
	for i, d := range l.replicas {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + d.metrics + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if d.proc.exited() {
				t.Fatalf("replica %d exited (%v):\n%s", i+1, d.proc.err, tail(d.proc.out.String(), 40))
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d's /healthz did not answer 200 within 30s (last: %v, %v)", i+1, resp, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// metric returns the value of a sample of the replica's metrics, or 0
// when it is absent.
func (d *dnsDaemon) metric(t testing.TB, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %q is not a number", sample, v)
			}
			return f
		}
	}
	return 0
}

// lease leases an address on seg to mac through the dhcp role, enrolling
// the machine with hostname when the MAC is new, and returns the address
// and the machine's id.
func (l *dnsLab) lease(t testing.TB, seg *networkv1.Segment, mac, hostname string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := l.dhcp.DHCP.Lease(ctx, connect.NewRequest(&dhcpv1.LeaseRequest{
		Mac: mac, Origin: &dhcpv1.Origin{RelayAddress: seg.GetGateway()}, ClientHostname: hostname}))
	if err != nil {
		t.Fatalf("Lease %s on %s: %v", mac, seg.GetName(), err)
	}
	return resp.Msg.GetAddress(), resp.Msg.GetMachineId()
}

// release ends mac's lease of addr through the dhcp role.
func (l *dnsLab) release(t testing.TB, mac, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := l.dhcp.DHCP.Release(ctx, connect.NewRequest(&dhcpv1.ReleaseRequest{Mac: mac, Address: addr})); err != nil {
		t.Fatalf("Release %s of %s: %v", addr, mac, err)
	}
}

// rename sets a machine's hostname through the API.
func (l *dnsLab) rename(t testing.TB, id, hostname string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.api.client.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine:    &machinev1.Machine{Id: id, Hostname: hostname},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hostname"}},
	})); err != nil {
		t.Fatalf("UpdateMachine %s hostname=%s: %v", id, hostname, err)
	}
}

// dig runs dig or kdig against server and returns its whole output.
func dig(t testing.TB, tool, server, name, qtype string, flags ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(server, ":")
	argv := append([]string{tool, "@" + host, "-p", port, "+norecurse", "+time=2", "+retry=1"}, flags...)
	argv = append(argv, name, qtype)
	out, err := run(nil, 20*time.Second, argv...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// short is the answer of dig +short, its lines sorted.
func short(t testing.TB, tool, server, name, qtype string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(dig(t, tool, server, name, qtype, "+short")), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

var (
	digStatus  = regexp.MustCompile(`status: ([A-Z]+)`)
	authSOA    = regexp.MustCompile(`(?m)^;; AUTHORITY SECTION:\s*\n(\S+)\s+\d+\s+IN\s+SOA\s`)
	answerLine = regexp.MustCompile(`(?m)^;; ANSWER SECTION:`)
)

// checkNegative checks a negative answer: the rcode (NXDOMAIN, or
// NOERROR for NODATA), no answer records, and the zone's SOA in the
// authority section.
func checkNegative(t *testing.T, tool, server, name, qtype, rcode, zone string) {
	t.Helper()
	out := dig(t, tool, server, name, qtype)
	if m := digStatus.FindStringSubmatch(out); m == nil || m[1] != rcode {
		t.Errorf("%s %s %s at %s: status %v, want %s:\n%s", tool, name, qtype, server, m, rcode, out)
	}
	if answerLine.MatchString(out) {
		t.Errorf("%s %s %s at %s: a negative answer with an answer section:\n%s", tool, name, qtype, server, out)
	}
	if m := authSOA.FindStringSubmatch(out); m == nil || !strings.EqualFold(m[1], zone) {
		t.Errorf("%s %s %s at %s: authority section without the SOA of %s:\n%s", tool, name, qtype, server, zone, out)
	}
}

// eventually polls every replica with check until it holds for all, and
// returns how long that took.
func (l *dnsLab) eventually(t testing.TB, what string, timeout time.Duration, check func(server string) bool) time.Duration {
	t.Helper()
	start := time.Now()
	pending := slices.Clone(l.replicas)
	for len(pending) > 0 {
		pending = slices.DeleteFunc(pending, func(d *dnsDaemon) bool { return check(d.addr) })
		if len(pending) == 0 {
			break
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: %d replica(s) still not answering it after %s (first: %s)", what, len(pending), timeout, pending[0].proc.name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// answersA reports whether server answers name A with exactly addrs
// (none: NXDOMAIN or NODATA).
func answersA(server, name string, addrs ...string) bool {
	got, err := queryA(server, name, time.Second)
	if len(addrs) == 0 {
		return err != nil && strings.Contains(err.Error(), "rcode") || err == nil && len(got) == 0
	}
	return err == nil && slices.Equal(got, addrs)
}

// soaSerial returns the serial of a zone's SOA at server.
func soaSerial(t testing.TB, server, zone string) string {
	t.Helper()
	f := strings.Fields(short(t, "dig", server, zone, "SOA"))
	if len(f) != 7 {
		t.Fatalf("SOA of %s at %s: %q", zone, server, f)
	}
	return f[2]
}

// TestDNS runs two carbide-dns replicas on one API and checks their
// answers with dig and kdig against what the API holds, a BIND secondary
// fed by AXFR, NOTIFY and IXFR with TSIG, an unbound resolver with a
// stub zone, how fast changes reach both replicas, and that both keep
// answering while the API is down and resume after it.
func TestDNS(t *testing.T) {
	tools := lookPaths(t, "dig", "kdig", "named", "unbound")
	bindAddr := fmt.Sprintf("127.0.0.1:%d", freeDNSPort(t))
	l := newDNSLab(t, bindAddr)

	// Machines through the API: three on the /24, two on the /26, one
	// without a hostname (no names).
	type host struct{ mac, name, addr, id string }
	var hosts []host
	for i, spec := range []struct {
		seg  *networkv1.Segment
		name string
	}{{l.lab, "web1"}, {l.lab, "web2"}, {l.lab, "db1"}, {l.small, "edge1"}, {l.small, "edge2"}, {l.lab, ""}} {
		mac := fmt.Sprintf("52:54:03:00:00:%02x", i+1)
		addr, id := l.lease(t, spec.seg, mac, spec.name)
		hosts = append(hosts, host{mac: mac, name: spec.name, addr: addr, id: id})
	}
	l.waitHealthy(t)

	// What the API holds, listed, is what both replicas answer, to dig
	// and to kdig.
	zones, err := listZonesDNS(t.Context(), l.api.client)
	if err != nil {
		t.Fatal(err)
	}
	if len(zones) != 5 {
		t.Fatalf("the API lists %d named addresses, want 5: %v", len(zones), zones)
	}
	for _, d := range l.replicas {
		for _, tool := range []string{tools["dig"], tools["kdig"]} {
			for _, r := range zones {
				if got := short(t, tool, d.addr, r.name, "A"); got != r.address {
					t.Errorf("%s %s A at %s: %q, want %s", filepath.Base(tool), r.name, d.addr, got, r.address)
				}
				if got := short(t, tool, d.addr, r.ptr, "PTR"); got != r.name {
					t.Errorf("%s %s PTR at %s: %q, want %s", filepath.Base(tool), r.ptr, d.addr, got, r.name)
				}
			}
			for _, zone := range []string{labDomain, smallDomain, labReverse, smallReverse} {
				soa := strings.Fields(short(t, tool, d.addr, zone, "SOA"))
				if len(soa) != 7 || soa[0] != "ns1.carbide.invalid." || soa[1] != "hostmaster.carbide.invalid." {
					t.Errorf("%s %s SOA at %s: %q, want ns1.carbide.invalid. hostmaster.carbide.invalid. ...", filepath.Base(tool), zone, d.addr, soa)
				}
				if got := short(t, tool, d.addr, zone, "NS"); got != "ns1.carbide.invalid." {
					t.Errorf("%s %s NS at %s: %q, want ns1.carbide.invalid.", filepath.Base(tool), zone, d.addr, got)
				}
			}
			checkNegative(t, tool, d.addr, "missing."+labDomain, "A", "NXDOMAIN", labDomain)
			checkNegative(t, tool, d.addr, "250."+labReverse, "PTR", "NXDOMAIN", labReverse)
			checkNegative(t, tool, d.addr, "web1."+labDomain, "AAAA", "NOERROR", labDomain)
			checkNegative(t, tool, d.addr, "web1."+labDomain, "TXT", "NOERROR", labDomain)
		}
	}
	// The /26's PTRs live under the RFC 2317 name.
	for _, r := range zones {
		if strings.HasSuffix(r.name, "."+smallDomain) && !strings.HasSuffix(r.ptr, "."+smallReverse) {
			t.Errorf("PTR owner %s of %s is not in the RFC 2317 zone %s", r.ptr, r.address, smallReverse)
		}
	}

	// unbound resolves a machine's name through a stub zone.
	ub := startUnbound(t, tools["unbound"], l.replicas[1].addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := dig(t, "dig", ub, "web1."+labDomain, "A", "+recurse", "+short")
		if strings.TrimSpace(out) == hosts[0].addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unbound answers web1.%s with %q, want %s", labDomain, out, hosts[0].addr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Freshness: every kind of change reaches both replicas: a new
	// machine's lease, a rename, a release, a lease on the /26.
	addr, id := l.lease(t, l.lab, "52:54:03:00:01:01", "app1")
	took := l.eventually(t, "app1 after its lease", 30*time.Second, func(s string) bool { return answersA(s, "app1."+labDomain, addr) })
	t.Logf("new machine's lease visible on both replicas after %s", took)
	l.rename(t, id, "app2")
	took = l.eventually(t, "app2 after the rename", 30*time.Second, func(s string) bool {
		return answersA(s, "app2."+labDomain, addr) && answersA(s, "app1."+labDomain)
	})
	t.Logf("rename visible on both replicas after %s", took)
	l.release(t, "52:54:03:00:01:01", addr)
	took = l.eventually(t, "app2 gone after the release", 30*time.Second, func(s string) bool { return answersA(s, "app2."+labDomain) })
	t.Logf("release visible on both replicas after %s", took)
	addr2, _ := l.lease(t, l.small, "52:54:03:00:01:02", "edge3")
	took = l.eventually(t, "edge3 after its lease", 30*time.Second, func(s string) bool { return answersA(s, "edge3."+smallDomain, addr2) })
	t.Logf("new lease visible on both replicas after %s", took)

	// The API down: both replicas keep answering; after its restart a
	// change reaches both, and zones the change did not touch keep their
	// serials, as they would not after a new snapshot.
	serials := map[string]string{}
	for _, d := range l.replicas {
		serials[d.addr] = soaSerial(t, d.addr, labReverse)
	}
	l.apiProc.stop(t)
	time.Sleep(2 * time.Second)
	for i, d := range l.replicas {
		if d.proc.exited() {
			t.Fatalf("replica %d exited when the API went down: %v", i+1, d.proc.err)
		}
		if !answersA(d.addr, "web1."+labDomain, hosts[0].addr) {
			t.Errorf("replica %d stopped answering web1 while the API is down", i+1)
		}
	}
	l.apiProc = startProc(t, nil, "carbide-api (restarted)", l.apiArgs...)
	l.apiProc.waitOutput(t, listening, 60*time.Second)
	addr3, _ := l.lease(t, l.small, "52:54:03:00:01:03", "edge4")
	l.eventually(t, "edge4 after the API's restart", 60*time.Second, func(s string) bool { return answersA(s, "edge4."+smallDomain, addr3) })
	for i, d := range l.replicas {
		// dnsd's watcher logs a resumed stream, and a new snapshot only
		// when the API no longer holds the changes since its revision.
		d.proc.waitOutput(t, regexp.MustCompile(`msg="watch stream resumed"`), 30*time.Second)
		if strings.Contains(d.proc.out.String(), "taking a new snapshot") {
			t.Errorf("replica %d took a new snapshot after the API's restart instead of resuming", i+1)
		}
		if got := d.metric(t, "carbide_dns_stream_breaks_total"); got < 1 {
			t.Errorf("replica %d: carbide_dns_stream_breaks_total = %v after the API went down, want at least 1", i+1, got)
		}
		if got := soaSerial(t, d.addr, labReverse); got != serials[d.addr] {
			t.Errorf("replica %d: serial of %s went from %s to %s across the API's restart, which changed nothing in it: a full reload, not a resume",
				i+1, labReverse, serials[d.addr], got)
		}
		if !answersA(d.addr, "web1."+labDomain, hosts[0].addr) {
			t.Errorf("replica %d lost web1 across the API's restart", i+1)
		}
	}

	// BIND as a secondary of replica 1: AXFR with TSIG first.
	named := startSecondary(t, tools["named"], bindAddr, l.replicas[0].addr, l.secret)
	for _, zone := range []string{labDomain, smallDomain, labReverse, smallReverse} {
		named.waitOutput(t, regexp.MustCompile(`transfer of '`+regexp.QuoteMeta(strings.TrimSuffix(zone, "."))+`/IN' from \S+: Transfer completed`), 30*time.Second)
	}
	if n := strings.Count(named.out.String(), "got incremental response"); n != 0 {
		t.Errorf("named's first transfers: %d incremental, want AXFR only", n)
	}
	// sameAnswers compares named's answers with carbide-dns's, waiting up
	// to 30 s for named to have transferred every zone's latest serial.
	sameAnswers := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var diffs []string
			for _, r := range zones {
				for _, q := range [][2]string{{r.name, "A"}, {r.ptr, "PTR"}, {labDomain, "SOA"}, {labReverse, "SOA"}, {smallReverse, "SOA"}, {labDomain, "NS"}} {
					want, got := short(t, "dig", l.replicas[0].addr, q[0], q[1]), short(t, "dig", bindAddr, q[0], q[1])
					if got != want {
						diffs = append(diffs, fmt.Sprintf("named answers %s %s with %q, carbide-dns with %q", q[0], q[1], got, want))
					}
				}
			}
			if len(diffs) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s, 30s on:\n%s", what, strings.Join(diffs, "\n"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	sameAnswers("after AXFR")

	// A change: a new machine on the /24. Replica 1 NOTIFYs named, which
	// fetches the difference by IXFR.
	addr4, _ := l.lease(t, l.lab, "52:54:03:00:01:04", "app4")
	l.eventually(t, "app4 A "+addr4, 30*time.Second, func(s string) bool { return answersA(s, "app4."+labDomain, addr4) })
	named.waitOutput(t, regexp.MustCompile(`got incremental response`), 30*time.Second)
	deadline = time.Now().Add(30 * time.Second)
	for short(t, "dig", bindAddr, "app4."+labDomain, "A") != addr4 {
		if time.Now().After(deadline) {
			t.Fatalf("named does not answer app4 A %s 30s after the IXFR", addr4)
		}
		time.Sleep(50 * time.Millisecond)
	}
	zones, err = listZonesDNS(t.Context(), l.api.client)
	if err != nil {
		t.Fatal(err)
	}
	sameAnswers("after IXFR")

}

// nameRecord is a name the API gives an address: A and PTR.
type nameRecord struct {
	name, address, ptr string
}

// listZonesDNS lists what the API holds as names: every machine with a
// hostname and a leased address, with its PTR owner name: in-addr.arpa for
// a /24 or shorter, the RFC 2317 form for longer prefixes.
func listZonesDNS(ctx context.Context, c *carbide.Client) ([]nameRecord, error) {
	prefixes := map[string]string{}
	domains := map[string]string{}
	for s, err := range c.AllSegments(ctx, &networkv1.ListSegmentsRequest{}) {
		if err != nil {
			return nil, err
		}
		prefixes[s.GetId()], domains[s.GetId()] = s.GetPrefix(), s.GetDomain()
	}
	var out []nameRecord
	for m, err := range c.AllMachines(ctx, &machinev1.ListMachinesRequest{}) {
		if err != nil {
			return nil, err
		}
		for _, nic := range m.GetInterfaces() {
			if m.GetHostname() == "" || nic.GetAddress() == "" || domains[nic.GetSegmentId()] == "" {
				continue
			}
			ptr, err := ptrOwner(nic.GetAddress(), prefixes[nic.GetSegmentId()])
			if err != nil {
				return nil, err
			}
			out = append(out, nameRecord{name: m.GetHostname() + "." + domains[nic.GetSegmentId()] + ".", address: nic.GetAddress(), ptr: ptr})
		}
	}
	return out, nil
}

// ptrOwner is the owner name of addr's PTR in its segment's reverse zone:
// the in-addr.arpa name for a prefix of /24 or shorter, the RFC 2317 name
// (<d>.<first>-<last>.<c>.<b>.<a>.in-addr.arpa.) for a longer one.
func ptrOwner(addr, prefix string) (string, error) {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return "", err
	}
	if p.Bits() <= 24 {
		return ptrName(addr), nil
	}
	a, n := netip.MustParseAddr(addr).As4(), p.Masked().Addr().As4()
	size := 1 << (32 - p.Bits())
	return fmt.Sprintf("%d.%d-%d.%d.%d.%d.in-addr.arpa.", a[3], n[3], int(n[3])+size-1, a[2], a[1], a[0]), nil
}

// startSecondary starts BIND on addr as a secondary of the four lab zones
// from primary (host:port) with TSIG, at debug level 3 so that its log
// tells an incremental transfer from a full one.
func startSecondary(t *testing.T, named, addr, primary, secret string) *proc {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := strings.Cut(primary, ":")
	conf := namedConf(dir, addr, nil, "allow-notify { 127.0.0.1; };")
	conf += fmt.Sprintf("key %q { algorithm hmac-sha256; secret %q; };\n", tsigKey, secret)
	for _, zone := range []string{labDomain, smallDomain, labReverse, smallReverse} {
		conf += fmt.Sprintf("zone %q { type secondary; primaries port %s { %s key %q; }; file %q; };\n",
			zone, port, host, tsigKey, zone+"zone")
	}
	path := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return startProc(t, nil, "named (secondary)", named, "-g", "-d", "3", "-n", "1", "-c", path)
}

// startUnbound starts unbound as a resolver on a free loopback port with
// a stub zone for each lab zone pointing at server, and returns its
// address.
func startUnbound(t *testing.T, unbound, server string) string {
	t.Helper()
	dir := t.TempDir()
	port := freeDNSPort(t)
	host, sport, _ := strings.Cut(server, ":")
	conf := fmt.Sprintf(`server:
    interface: 127.0.0.1
    port: %d
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: %q
    pidfile: %q
    use-syslog: no
    logfile: ""
    verbosity: 1
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
`, port, dir, filepath.Join(dir, "unbound.pid"))
	for _, zone := range []string{labDomain, smallDomain, labReverse, smallReverse} {
		conf += fmt.Sprintf("stub-zone:\n    name: %q\n    stub-addr: %s@%s\n", zone, host, sport)
	}
	path := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, nil, "unbound", unbound, "-d", "-c", path)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := run(nil, 5*time.Second, "dig", "@127.0.0.1", "-p", fmt.Sprint(port), "+time=1", "+retry=0", "version.server", "CH", "TXT"); err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("unbound did not answer within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var dnsChanges = flag.Int("dns.changes", 1000, "BenchmarkDNSFreshness: changes measured")

// BenchmarkDNSFreshness measures how long a change takes to reach two
// carbide-dns replicas: -dns.changes changes of the three kinds in turn,
// each on its own machine: a new machine's first lease (enrolled with its
// hostname), a rename, a release. Each runs from the start of the API
// call until both replicas answer the new data (polled every millisecond
// over UDP). It reports the distribution, over all changes and by kind;
// nothing is asserted.
func BenchmarkDNSFreshness(b *testing.B) {
	l := newDNSLab(b)
	l.waitHealthy(b)
	type change struct {
		kind       string
		call, both time.Duration
	}
	var changes []change
	// measure runs do, then waits until every replica answers name with
	// *addr (nil: the name is gone); *addr is read after do, which may set
	// it.
	measure := func(kind string, do func(), name string, addr *string) {
		start := time.Now()
		do()
		call := time.Since(start)
		var want []string
		if addr != nil {
			want = []string{*addr}
		}
		for _, d := range l.replicas {
			for !answersA(d.addr, name+"."+labDomain, want...) {
				if time.Since(start) > 30*time.Second {
					b.Fatalf("%s %d: %s does not answer %s with %v after 30s", kind, len(changes), d.proc.name, name, want)
				}
				time.Sleep(time.Millisecond)
			}
		}
		changes = append(changes, change{kind, call, time.Since(start)})
	}
	for i := 0; len(changes) < *dnsChanges; i++ {
		mac := fmt.Sprintf("52:54:03:%02x:%02x:%02x", 2+i>>16&0xff, i>>8&0xff, i&0xff)
		name := fmt.Sprintf("fresh%d", i)
		var addr, id string
		measure("lease", func() { addr, id = l.lease(b, l.lab, mac, name) }, name, &addr)
		if len(changes) < *dnsChanges {
			measure("rename", func() { l.rename(b, id, name+"r") }, name+"r", &addr)
		}
		if len(changes) < *dnsChanges {
			measure("release", func() { l.release(b, mac, addr) }, name+"r", nil)
		}
	}
	q := func(kind string, get func(change) time.Duration, p float64) time.Duration {
		var s []time.Duration
		for _, c := range changes {
			if kind == "" || c.kind == kind {
				s = append(s, get(c))
			}
		}
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Microsecond)
	}
	both := func(c change) time.Duration { return c.both }
	call := func(c change) time.Duration { return c.call }
	fmt.Printf("\nDNS freshness over %d changes: both replicas answer after p50 %s, p99 %s, max %s (the API call itself: p50 %s, p99 %s)\n",
		len(changes), q("", both, 0.5), q("", both, 0.99), q("", both, 1), q("", call, 0.5), q("", call, 0.99))
	for _, kind := range []string{"lease", "rename", "release"} {
		fmt.Printf("  %-8s p50 %s, p99 %s, max %s (call p50 %s)\n", kind, q(kind, both, 0.5), q(kind, both, 0.99), q(kind, both, 1), q(kind, call, 0.5))
	}
	b.ReportMetric(float64(q("", both, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(q("", both, 0.99).Microseconds()), "p99-µs")
}
