package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"golang.org/x/net/dns/dnsmessage"
)

// The DNS tests' programs and the packages they come from.
func init() {
	packages["named"] = "bind9"
	packages["named-checkzone"] = "bind9-utils"
	packages["knotd"] = "knot"
	packages["dig"] = "bind9-dnsutils"
	packages["kdig"] = "knot-dnsutils"
	packages["dnsperf"] = "dnsperf"
	packages["unbound"] = "unbound"
	packages["taskset"] = "util-linux"
}

// dnsBuild builds carbide-dns once, on first use: only the DNS tests
// need it, and the other tests must not wait for or depend on it.
var dnsBuild struct {
	once sync.Once
	path string
	err  error
}

// carbideDNS returns the path of the carbide-dns binary built from the
// workspace, or fails the test with the build's error.
func carbideDNS(t testing.TB) string {
	t.Helper()
	dnsBuild.once.Do(func() {
		dnsBuild.path = filepath.Join(filepath.Dir(bins.api), "carbide-dns")
		dnsBuild.err = buildAll(map[string]string{dnsBuild.path: "github.com/carbide-dev/carbide/edge/cmd/carbide-dns"})
	})
	if dnsBuild.err != nil {
		t.Fatalf("carbide-dns: %v", dnsBuild.err)
	}
	return dnsBuild.path
}

// dnsDaemon is a running carbide-dns on the host's loopback.
type dnsDaemon struct {
	proc    *proc
	addr    string // host:port of its DNS listener (UDP and TCP)
	metrics string // host:port of /metrics and /healthz
}

// startCarbideDNS starts carbide-dns with the API's dns certificate,
// serving DNS on a free loopback port, plus extra flags. It does not wait.
func startCarbideDNS(t testing.TB, a *api, name string, extra ...string) *dnsDaemon {
	t.Helper()
	d := &dnsDaemon{
		addr:    fmt.Sprintf("127.0.0.1:%d", freeDNSPort(t)),
		metrics: fmt.Sprintf("127.0.0.1:%d", freeDNSPort(t)),
	}
	args := append([]string{carbideDNS(t),
		"--api-url", "https://" + a.addr,
		"--pki-dir", a.pki,
		"--listen", d.addr,
		"--metrics-listen", d.metrics,
		"--log-level", "debug"}, extra...)
	d.proc = startProc(t, nil, name, args...)
	return d
}

// freeDNSPort returns a port free for both UDP and TCP on 127.0.0.1 a
// moment ago.
func freeDNSPort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("found no port free for both UDP and TCP on 127.0.0.1")
	return 0
}

// queryA asks server (host:port, UDP) for name's A record once and
// returns the addresses of the answer, or an error when the server does
// not answer within timeout or does not answer NOERROR.
func queryA(server, name string, timeout time.Duration) ([]string, error) {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: false},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	pkt, err := q.Pack()
	if err != nil {
		return nil, err
	}
	c, err := net.Dial("udp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(pkt); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	var r dnsmessage.Message
	if err := r.Unpack(buf[:n]); err != nil {
		return nil, err
	}
	if r.Header.ID != q.Header.ID {
		return nil, errors.New("answer with another id")
	}
	if r.Header.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("rcode %v", r.Header.RCode)
	}
	var out []string
	for _, rr := range r.Answers {
		if a, ok := rr.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(a.A).String())
		}
	}
	return out, nil
}

// hostRecord is one name the API gives a machine: its A record and PTR.
type hostRecord struct {
	name    string // FQDN, lower case, with the final dot
	address string
}

// zoneData is what a DNS server should serve for an API's machines.
type zoneData struct {
	forward map[string][]hostRecord // zone origin -> records of names in it
	reverse map[string][]hostRecord // reverse zone origin -> records of addresses in it
}

// reverseZone returns the octet-aligned in-addr.arpa zone of an IPv4
// prefix of /8, /16 or /24, the only lengths the benchmark uses.
func reverseZone(prefix netip.Prefix) (string, error) {
	if !prefix.Addr().Is4() || prefix.Bits()%8 != 0 || prefix.Bits() == 0 || prefix.Bits() > 24 {
		return "", fmt.Errorf("reverse zone of %s: only IPv4 /8, /16 and /24 are written as zone files here", prefix)
	}
	b := prefix.Addr().As4()
	labels := []string{"in-addr.arpa."}
	for i := range prefix.Bits() / 8 {
		labels = append([]string{fmt.Sprint(b[i])}, labels...)
	}
	return strings.Join(labels, "."), nil
}

// ptrName returns the in-addr.arpa owner name of an IPv4 address.
func ptrName(addr string) string {
	b := netip.MustParseAddr(addr).As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
}

// listZones reads the segments and machines from the API (List, not what
// a test created) and derives the records the contract names: for each
// interface with an address, <hostname>.<domain of its segment> A and the
// address's PTR.
func listZones(ctx context.Context, c *carbide.Client) (*zoneData, error) {
	type seg struct {
		domain, reverse string
	}
	segs := map[string]seg{}
	z := &zoneData{forward: map[string][]hostRecord{}, reverse: map[string][]hostRecord{}}
	for s, err := range c.AllSegments(ctx, &networkv1.ListSegmentsRequest{PageSize: 1000}) {
		if err != nil {
			return nil, fmt.Errorf("ListSegments: %w", err)
		}
		rev, err := reverseZone(netip.MustParsePrefix(s.GetPrefix()))
		if err != nil {
			return nil, err
		}
		domain := strings.ToLower(strings.TrimSuffix(s.GetDomain(), ".")) + "."
		segs[s.GetId()] = seg{domain: domain, reverse: rev}
		z.forward[domain] = z.forward[domain]
		z.reverse[rev] = z.reverse[rev]
	}
	for m, err := range c.AllMachines(ctx, &machinev1.ListMachinesRequest{PageSize: 1000}) {
		if err != nil {
			return nil, fmt.Errorf("ListMachines: %w", err)
		}
		if m.GetHostname() == "" {
			continue
		}
		for _, nic := range m.GetInterfaces() {
			s, ok := segs[nic.GetSegmentId()]
			if !ok || nic.GetAddress() == "" {
				continue
			}
			r := hostRecord{name: m.GetHostname() + "." + s.domain, address: nic.GetAddress()}
			z.forward[s.domain] = append(z.forward[s.domain], r)
			z.reverse[s.reverse] = append(z.reverse[s.reverse], r)
		}
	}
	return z, nil
}

// count returns the number of A records (and of PTRs).
func (z *zoneData) count() int {
	n := 0
	for _, rs := range z.forward {
		n += len(rs)
	}
	return n
}

// soaNS is the apex of every zone file: what carbide-dns serves with its
// default --primary-ns and --contact.
const soaNS = `$TTL 300
@ IN SOA ns1.carbide.invalid. hostmaster.carbide.invalid. 1 3600 600 604800 60
@ IN NS ns1.carbide.invalid.
`

// writeZoneFiles writes one RFC 1035 zone file per zone into dir, named
// <origin>zone (e.g. "rack0.bench.test.zone"), and returns the origins.
func (z *zoneData) writeZoneFiles(dir string) ([]string, error) {
	var origins []string
	write := func(origin string, body func(*strings.Builder)) error {
		var sb strings.Builder
		sb.WriteString("$ORIGIN " + origin + "\n" + soaNS)
		body(&sb)
		origins = append(origins, origin)
		return os.WriteFile(filepath.Join(dir, origin+"zone"), []byte(sb.String()), 0o644)
	}
	for origin, rs := range z.forward {
		if err := write(origin, func(sb *strings.Builder) {
			for _, r := range rs {
				fmt.Fprintf(sb, "%s IN A %s\n", r.name, r.address)
			}
		}); err != nil {
			return nil, err
		}
	}
	for origin, rs := range z.reverse {
		if err := write(origin, func(sb *strings.Builder) {
			for _, r := range rs {
				fmt.Fprintf(sb, "%s IN PTR %s\n", ptrName(r.address), r.name)
			}
		}); err != nil {
			return nil, err
		}
	}
	sort.Strings(origins)
	return origins, nil
}

// namedConf is the configuration of BIND serving zones from dir as
// primary on addr (host:port); extra goes into options.
func namedConf(dir, addr string, origins []string, extra string) string {
	ap := netip.MustParseAddrPort(addr)
	var sb strings.Builder
	fmt.Fprintf(&sb, `options {
	directory %q;
	pid-file %q;
	listen-on port %d { %s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-transfer { none; };
	%s
};
controls { };
`, dir, filepath.Join(dir, "named.pid"), ap.Port(), ap.Addr(), extra)
	for _, o := range origins {
		fmt.Fprintf(&sb, "zone %q { type primary; file %q; };\n", o, o+"zone")
	}
	return sb.String()
}

// knotConf is the configuration of Knot serving zones from dir on addr
// with one UDP and one TCP worker.
func knotConf(dir, addr string, origins []string) string {
	ap := netip.MustParseAddrPort(addr)
	var sb strings.Builder
	fmt.Fprintf(&sb, `server:
    listen: %s@%d
    rundir: %q
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: %q
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: %q
    semantic-checks: off
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
zone:
`, ap.Addr(), ap.Port(), dir, dir, dir)
	for _, o := range origins {
		fmt.Fprintf(&sb, "  - domain: %s\n    file: %q\n", o, o+"zone")
	}
	return sb.String()
}

// vmRSS returns the resident memory of a process in KiB, from
// /proc/<pid>/status.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int
			if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb); err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// pidOf returns the pid of the process p runs (itself, as taskset and ip
// netns exec exec in place).
func pidOf(p *proc) int { return p.cmd.Process.Pid }

// digShort runs dig (or kdig) against server for name and type and returns
// the answer section's data, sorted: a comparable form of the answer.
func digAnswer(t testing.TB, tool, server, name, qtype string) string {
	t.Helper()
	ap := netip.MustParseAddrPort(server)
	out, err := exec.Command(tool, "@"+ap.Addr().String(), "-p", fmt.Sprint(ap.Port()), "+short", "+norecurse", name, qtype).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s %s: %v\n%s", tool, name, qtype, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
