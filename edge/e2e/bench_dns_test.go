package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"google.golang.org/protobuf/types/known/durationpb"
)

var (
	dnsMachines = flag.Int("dns.machines", 100000, "BenchmarkDNS: machines, each with a hostname and one lease (an A record and a PTR)")
	dnsServers  = flag.String("dns.servers", "carbide-dns,named,knotd", "BenchmarkDNS: the servers to measure, comma separated")
	dnsDuration = flag.Duration("dns.duration", 20*time.Second, "BenchmarkDNS: how long each dnsperf run lasts")
	dnsClients  = flag.Int("dns.clients", 8, "BenchmarkDNS: dnsperf's -c (UDP sockets) at maximum load")
	dnsTimeout  = flag.Duration("dns.timeout", time.Second, "BenchmarkDNS: dnsperf's -t: when a query counts as lost")
	dnsInflight = flag.Int("dns.outstanding", 100, "BenchmarkDNS: dnsperf's -q (queries in flight) at maximum load")
	dnsRate     = flag.Int("dns.rate", 20000, "BenchmarkDNS: the fixed rate (q/s) latency is measured at")
)

// benchSegments are the segments of BenchmarkDNS: four /16s, one forward
// and one reverse zone each.
const benchSegments = 4

// BenchmarkDNS compares carbide-dns with BIND (named) and Knot (knotd)
// serving the same zones: -dns.machines machines, each with a hostname and
// a lease, on four segments with domains, loaded into carbide-api on
// PostgreSQL. BIND and Knot read zone files written from what the API
// lists. Each server runs alone on CPU 0 (taskset), dnsperf on CPU 1, over
// loopback; measured: the time from the server's start to its first right
// answer, its resident memory then, the query rate at full load (and what
// was lost, and the server's CPU time per query, which tells whether the
// server or dnsperf's one core was the limit), and latency at -dns.rate
// q/s from dnsperf -v's per-answer times. It prints a markdown table.
func BenchmarkDNS(b *testing.B) {
	tools := lookPaths(b, "taskset", "dnsperf")
	servers := strings.Split(*dnsServers, ",")
	for _, s := range servers {
		switch s {
		case "carbide-dns":
			carbideDNS(b)
		case "named", "knotd":
			lookPaths(b, s)
		default:
			b.Fatalf("-dns.servers: unknown server %q (carbide-dns, named, knotd)", s)
		}
	}
	ctx := context.Background()
	dbURL := startPostgres(b)
	dataDir := b.TempDir()
	a := apiFrom(b, startProc(b, nil, "carbide-api", bins.api, "--dev", "--listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--database-url", dbURL,
		// The whole fleet enrols at once, through DHCP.
		"--enrol-rate", "0", "--enrol-burst", strconv.Itoa(*dnsMachines)), dataDir)

	start := time.Now()
	loadMachines(b, a, *dnsMachines)
	load := time.Since(start)
	b.Logf("loaded %d machines with leases in %s (%.0f/s)", *dnsMachines, load.Round(time.Millisecond), float64(*dnsMachines)/load.Seconds())

	start = time.Now()
	zones, err := listZones(ctx, a.client)
	if err != nil {
		b.Fatal(err)
	}
	if n := zones.count(); n != *dnsMachines {
		b.Fatalf("the API lists %d machines with a hostname and an address, want %d", n, *dnsMachines)
	}
	dir := b.TempDir()
	origins, err := zones.writeZoneFiles(dir)
	if err != nil {
		b.Fatal(err)
	}
	queries := filepath.Join(dir, "queries")
	if err := writeQueries(queries, zones, 1_000_000); err != nil {
		b.Fatal(err)
	}
	b.Logf("listed the API and wrote %d zones and the queries in %s", len(origins), time.Since(start).Round(time.Millisecond))
	// The name whose answer tells that a server is up: one in the last zone.
	probe := zones.forward["rack"+strconv.Itoa(benchSegments-1)+".bench.test."][0]

	var rows []string
	for _, s := range servers {
		rows = append(rows, benchServer(b, s, a, tools, dir, origins, queries, probe))
	}
	fmt.Printf("\nDNS: %d machines (%d A, %d PTR) in %d zones; load through LeaseBatch took %s\n\n",
		*dnsMachines, *dnsMachines, *dnsMachines, len(origins), load.Round(time.Millisecond))
	fmt.Println("| server | start-up to first answer | RSS after load | max q/s (lost) | server CPU at max, per query | latency at " + strconv.Itoa(*dnsRate) + " q/s: mean, p50, p99 (lost) | load average |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	b.ReportMetric(0, "ns/op")
}

// loadMachines enrols n machines with hostnames through the dhcp role's
// LeaseBatch: a lease for an unknown MAC enrols its machine, with the
// client's host name, in the same transaction, which is the fastest way
// the API offers. Four segments of a /16 each; batches of 256 go out from
// a few goroutines at once.
func loadMachines(b *testing.B, a *api, n int) {
	ctx := context.Background()
	gateways := make([]string, benchSegments)
	for i := range benchSegments {
		gateways[i] = fmt.Sprintf("10.%d.0.1", i)
		a.createSegment(b, &networkv1.Segment{
			Name: fmt.Sprintf("rack%d", i), Prefix: fmt.Sprintf("10.%d.0.0/16", i), Gateway: gateways[i],
			Domain:        fmt.Sprintf("rack%d.bench.test", i),
			Ranges:        []*networkv1.AddressRange{{Start: fmt.Sprintf("10.%d.0.10", i), End: fmt.Sprintf("10.%d.255.250", i)}},
			LeaseDuration: durationpb.New(30 * 24 * time.Hour),
		})
	}
	dhcp, err := carbide.New("https://"+a.addr, carbide.WithClientCertificate(
		filepath.Join(a.pki, "dhcp.crt"), filepath.Join(a.pki, "dhcp.key"), filepath.Join(a.pki, "ca.crt")))
	if err != nil {
		b.Fatal(err)
	}
	const batch = 256
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for failed.Load() == nil {
				first := int(next.Add(batch)) - batch
				if first >= n {
					return
				}
				req := &dhcpv1.LeaseBatchRequest{}
				for i := first; i < min(first+batch, n); i++ {
					req.Requests = append(req.Requests, &dhcpv1.LeaseRequest{
						Mac:            fmt.Sprintf("52:54:02:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
						Origin:         &dhcpv1.Origin{RelayAddress: gateways[i%benchSegments]},
						ClientHostname: fmt.Sprintf("h%06d", i),
					})
				}
				resp, err := dhcp.DHCP.LeaseBatch(ctx, connect.NewRequest(req))
				if err != nil {
					failed.Store(fmt.Errorf("LeaseBatch of machines %d...: %w", first, err))
					return
				}
				for i, r := range resp.Msg.GetResults() {
					if e := r.GetError(); e != nil {
						failed.Store(fmt.Errorf("lease of machine %d: %s: %s", first+i, e.GetCode(), e.GetMessage()))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// writeQueries writes a dnsperf query file of n lines: 90% A queries of
// names that exist, 5% PTR queries of addresses that exist, 5% A queries
// of names that do not, shuffled.
func writeQueries(path string, z *zoneData, n int) error {
	var all []hostRecord
	var origins []string
	for o, rs := range z.forward {
		all = append(all, rs...)
		origins = append(origins, o)
	}
	slices.Sort(origins)
	rnd := rand.New(rand.NewPCG(1, 2))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		r := all[rnd.IntN(len(all))]
		switch k := i % 20; {
		case k < 18:
			fmt.Fprintf(w, "%s A\n", r.name)
		case k == 18:
			fmt.Fprintf(w, "%s PTR\n", ptrName(r.address))
		default:
			fmt.Fprintf(w, "missing-%d.%s A\n", rnd.IntN(1<<30), origins[rnd.IntN(len(origins))])
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Shuffle the lines, so that the kinds are not periodic.
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	rnd.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	return os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
}

// benchServer starts one server on CPU 0, measures it with dnsperf on
// CPU 1, stops it, and returns its row of the table.
func benchServer(b *testing.B, server string, a *api, tools map[string]string, dir string, origins []string, queries string, probe hostRecord) string {
	addr := fmt.Sprintf("127.0.0.1:%d", freeDNSPort(b))
	sdir := filepath.Join(dir, server)
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		b.Fatal(err)
	}
	var argv []string
	switch server {
	case "named":
		for _, o := range origins {
			if err := os.Link(filepath.Join(dir, o+"zone"), filepath.Join(sdir, o+"zone")); err != nil {
				b.Fatal(err)
			}
		}
		conf := filepath.Join(sdir, "named.conf")
		if err := os.WriteFile(conf, []byte(namedConf(sdir, addr, origins, "")), 0o644); err != nil {
			b.Fatal(err)
		}
		// -n 1: one worker thread, as it has one CPU.
		argv = []string{tools["taskset"], "-c", "0", lookPaths(b, "named")["named"], "-g", "-n", "1", "-c", conf}
	case "knotd":
		for _, o := range origins {
			if err := os.Link(filepath.Join(dir, o+"zone"), filepath.Join(sdir, o+"zone")); err != nil {
				b.Fatal(err)
			}
		}
		conf := filepath.Join(sdir, "knot.conf")
		if err := os.WriteFile(conf, []byte(knotConf(sdir, addr, origins)), 0o644); err != nil {
			b.Fatal(err)
		}
		argv = []string{tools["taskset"], "-c", "0", lookPaths(b, "knotd")["knotd"], "-c", conf}
	case "carbide-dns":
		metrics := fmt.Sprintf("127.0.0.1:%d", freeDNSPort(b))
		argv = []string{tools["taskset"], "-c", "0", carbideDNS(b),
			"--api-url", "https://" + a.addr, "--pki-dir", a.pki,
			"--listen", addr, "--metrics-listen", metrics, "--log-level", "warn"}
	}
	start := time.Now()
	p := startProc(b, nil, server, argv...)
	var up time.Duration
	for {
		got, err := queryA(addr, probe.name, 100*time.Millisecond)
		if err == nil && slices.Equal(got, []string{probe.address}) {
			up = time.Since(start)
			break
		}
		if p.exited() {
			b.Fatalf("%s exited (%v) before answering:\n%s", server, p.err, tail(p.out.String(), 40))
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%s did not answer %s A with %s within 10 minutes (last: %v %v)", server, probe.name, probe.address, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rss, err := vmRSS(pidOf(p))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: first right answer %s after start, VmRSS %d KiB", server, up.Round(time.Millisecond), rss)

	ap := strings.Split(addr, ":")
	// dnsperf writes to a file, not to a pipe this process would have to
	// drain on a CPU the server may need.
	runs := 0
	perf := func(extra ...string) string {
		runs++
		argv := append([]string{tools["taskset"], "-c", "1", tools["dnsperf"], "-s", ap[0], "-p", ap[1],
			"-d", queries, "-l", strconv.Itoa(int(dnsDuration.Seconds())), "-T", "1",
			"-t", strconv.FormatFloat(dnsTimeout.Seconds(), 'f', -1, 64)}, extra...)
		path := filepath.Join(sdir, fmt.Sprintf("dnsperf-%d.out", runs))
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), *dnsDuration+time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = f, f
		err = cmd.Run()
		f.Close()
		out, rerr := os.ReadFile(path)
		if err != nil || rerr != nil {
			b.Fatalf("%s: %v %v\n%s", commandLine(argv), err, rerr, tail(summary(string(out)), 30))
		}
		return string(out)
	}
	// Other work on the machine skews every figure: the table shows the
	// load average each server was measured under.
	loadavg, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	load := strings.Join(strings.Fields(string(loadavg))[:3], " ")
	cpu0 := cpuTime(b, pidOf(p))
	maxOut := perf("-c", strconv.Itoa(*dnsClients), "-q", strconv.Itoa(*dnsInflight))
	busy := (cpuTime(b, pidOf(p)) - cpu0).Seconds() / dnsDuration.Seconds()
	maxStats := dnsperfStats(b, maxOut)
	fmt.Printf("%s at full load:\n%s\n", server, summary(maxOut))
	latOut := perf("-c", strconv.Itoa(*dnsClients), "-Q", strconv.Itoa(*dnsRate), "-v")
	latStats := dnsperfStats(b, latOut)
	p50, p99 := latencyPercentile(latOut, 0.5), latencyPercentile(latOut, 0.99)
	fmt.Printf("%s at %d q/s (p50 %.3f ms, p99 %.3f ms):\n%s\n", server, *dnsRate, p50*1000, p99*1000, summary(latOut))
	p.stop(b)

	return fmt.Sprintf("| %s | %s | %.0f MiB | %.0f (%.2f%% lost) | %.0f%%, %.1f µs | %.3f ms, %.3f ms, %.3f ms (%.2f%% lost) | %s |",
		server, up.Round(time.Millisecond), float64(rss)/1024, maxStats.qps, maxStats.lostPct, busy*100, busy*1e6/maxStats.qps,
		latStats.meanLatency*1000, p50*1000, p99*1000, latStats.lostPct, load)
}

// cpuTime returns the CPU time (user and system) a process has used, from
// /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// perfStats are the figures of a dnsperf report.
type perfStats struct {
	qps, lostPct, meanLatency float64
}

var (
	perfQPS     = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	perfLost    = regexp.MustCompile(`Queries lost:\s+\d+ \(([0-9.]+)%\)`)
	perfLatency = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	// dnsperf -v prints a line per answer: "> NOERROR name A 0.000123".
	perfAnswer = regexp.MustCompile(`(?m)^> \S+ .* ([0-9]+\.[0-9]+)$`)
)

func dnsperfStats(b *testing.B, out string) perfStats {
	b.Helper()
	var s perfStats
	for _, f := range []struct {
		re  *regexp.Regexp
		dst *float64
	}{{perfQPS, &s.qps}, {perfLost, &s.lostPct}, {perfLatency, &s.meanLatency}} {
		m := f.re.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("dnsperf's report has no %q:\n%s", f.re, summary(out))
		}
		*f.dst, _ = strconv.ParseFloat(m[1], 64)
	}
	return s
}

// latencyPercentile returns the q-quantile of the latencies (seconds) of
// the answers dnsperf -v listed, or -1 when it listed none.
func latencyPercentile(out string, q float64) float64 {
	var lat []float64
	for _, m := range perfAnswer.FindAllStringSubmatch(out, -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			lat = append(lat, v)
		}
	}
	if len(lat) == 0 {
		return -1
	}
	slices.Sort(lat)
	return lat[min(len(lat)-1, int(q*float64(len(lat))))]
}

// summary is dnsperf's report without the per-answer lines of -v.
func summary(out string) string {
	var sb strings.Builder
	for line := range strings.Lines(out) {
		if !strings.HasPrefix(line, "> ") {
			sb.WriteString(line)
		}
	}
	return sb.String()
}
