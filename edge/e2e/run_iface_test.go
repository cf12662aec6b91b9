package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// TestRunInterface runs carbide-run with CARBIDE_INTERFACE, as on a
// machine with a provisioning network, inside a namespace "host" of the
// test's own whose interface host0 (10.80.0.1/24) is a veth linked to the
// namespace "client":
//
//	host: carbide-run, host0 10.80.0.1/24 ── cli0 (DHCP) :client
//
// carbide-run uses its defaults there: the API reached at 127.0.0.1:1079
// (forwarded to 10.80.0.1:1079), the daemons found next to it. The CLI
// creates a segment for 10.80.0.0/24 through the forwarded port; busybox
// udhcpc in the client namespace gets a lease from its range; busybox
// tftp fetches the iPXE loader from carbide-pxe on 10.80.0.1, and the
// client's boot script comes over HTTP; dig asks carbide-dns on 10.80.0.1
// for the segment domain's SOA and for the leased machine's name. Then a
// SIGINT to carbide-run must stop everything it started: no process is
// left in the host namespace, no link or address was added to it, and
// its 127.0.0.1:1079 is free again.
func TestRunInterface(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "busybox", "dig")
	artifacts := artifactsWith(t, nil)

	dir := filepath.Dir(bins.api)
	runBin, cli := filepath.Join(dir, "carbide-run"), filepath.Join(dir, "carbide")
	if err := buildAll(map[string]string{
		runBin:                            "github.com/carbide-dev/carbide/edge/cmd/carbide-run",
		filepath.Join(dir, "carbide-dns"): "github.com/carbide-dev/carbide/edge/cmd/carbide-dns",
		cli:                               "github.com/carbide-dev/carbide/sdk/cmd/carbide",
	}); err != nil {
		t.Fatal(err)
	}

	const (
		addr   = "10.80.0.1"
		domain = "iface.carbide.internal"
		mac    = "02:00:5e:80:00:02"
		listen = "127.0.0.1:1079" // carbide-run's default, free in a new namespace
	)
	host, client := newNetns(t, "host"), newNetns(t, "client")
	veth(t, host, "host0", client, "cli0")
	host.addr(t, "host0", addr+"/24")
	client.mac(t, "cli0", mac)
	hostLinks := linkNames(t, host.name)
	hostAddrs := addressList(t, host)
	_, err := os.Stat(filepath.Join(nsenter.Dir, "carbide"))
	carbideNetns := err == nil

	work := t.TempDir()
	data := filepath.Join(work, "carbide-data")
	stack := startProc(t, host, "carbide-run", "env", "CARBIDE_INTERFACE=host0", "CARBIDE_DATA_DIR="+data,
		runBin, "--artifacts-dir", artifacts)
	stack.waitOutput(t, regexp.MustCompile(`carbide-run +\| Carbide is running`), 2*time.Minute)
	testsecret.RegisterFiles(t, filepath.Join(data, "pki", "*.key"))
	if !regexp.MustCompile(`carbide-run +\| DHCP, TFTP, HTTP and DNS serve host0 \(10\.80\.0\.1\)`).MatchString(stack.out.String()) {
		t.Errorf("carbide-run does not say it serves host0 (10.80.0.1):\n%s", tail(stack.out.String(), 20))
	}
	for _, name := range []string{"carbide-api", "carbide-dhcp", "carbide-pxe", "carbide-dns", "carbide-bmc"} {
		stack.waitOutput(t, regexp.MustCompile(`(?m)^`+name+` +\| `), 30*time.Second)
	}
	stack.waitOutput(t, regexp.MustCompile(`carbide-api +\| .*msg="carbide-api listening" address=10\.80\.0\.1:1079`), 10*time.Second)
	stack.waitOutput(t, regexp.MustCompile(`carbide-pxe +\| .*msg="serving TFTP" address=10\.80\.0\.1:69`), 10*time.Second)

	// The README's CLI, in the host namespace, through the forwarded port.
	pki := filepath.Join(data, "pki")
	config := filepath.Join(work, "config.yaml")
	carbideCLI := func(args ...string) string {
		t.Helper()
		out, err := run(host, 30*time.Second, append([]string{"env", "CARBIDE_CONFIG=" + config, cli}, args...)...)
		if err != nil {
			t.Fatalf("carbide %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	carbideCLI("config", "set-context", "lab", "--endpoint", "https://"+listen, "--ca-cert", filepath.Join(pki, "ca.crt"),
		"--client-cert", filepath.Join(pki, "admin.crt"), "--client-key", filepath.Join(pki, "admin.key"))
	carbideCLI("segment", "create", "--name", "iface", "--prefix", "10.80.0.0/24", "--gateway", addr,
		"--range", "10.80.0.100-10.80.0.199", "--dns-server", addr, "--domain", domain)

	// A real DHCP client on the other end of the link.
	c := newUdhcpc(t, tools, client, "cli0")
	c.start(t, "-q", "-n")
	bound := c.waitEvent(t, 0, "bound")
	if err := c.proc.wait(t, 15*time.Second); err != nil {
		t.Errorf("udhcpc -q -n: %v", err)
	}
	if !inRange(bound.ip, "10.80.0.100", "10.80.0.199") || bound.mask != "24" || bound.router != addr || bound.server != addr {
		t.Fatalf("udhcpc bound %+v; want an address of 10.80.0.100-199, /24, router and server %s", bound, addr)
	}

	// carbide-pxe: TFTP and HTTP on the interface's address.
	got := filepath.Join(work, "undionly.kpxe")
	if out, err := run(client, 20*time.Second, tools["busybox"], "tftp", "-g", "-r", "undionly.kpxe", "-l", got, addr); err != nil {
		t.Errorf("tftp from %s: %v\n%s", addr, err, out)
	} else if want, err := os.ReadFile("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Error(err)
	} else if b, err := os.ReadFile(got); err != nil || string(b) != string(want) {
		t.Errorf("tftp fetched %d bytes of undionly.kpxe (%v), want the %d of /usr/lib/ipxe/undionly.kpxe", len(b), err, len(want))
	}
	if script := httpGet(t, client, "http://"+addr+":8080/ipxe/"+mac); !strings.HasPrefix(script, "#!ipxe") {
		t.Errorf("the boot script of %s is not an iPXE script:\n%s", mac, script)
	}

	// carbide-dns: the segment's zone, and the leased machine by name.
	a := hostAPI(t, host, listen, pki)
	m := machineOf(t, a, mac)
	if nic := machineNIC(t, a, mac); nic.GetAddress() != bound.ip {
		t.Errorf("the API has %s at %s, want the leased %s", mac, nic.GetAddress(), bound.ip)
	}
	renameCtx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := a.client.Machines.UpdateMachine(renameCtx, connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine:    &machinev1.Machine{Id: m.GetId(), Hostname: "node1"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hostname"}},
	})); err != nil {
		t.Fatalf("UpdateMachine %s hostname=node1: %v", m.GetId(), err)
	}
	digIn := func(name, qtype string) string {
		t.Helper()
		out, err := run(client, 10*time.Second, tools["dig"], "@"+addr, "+norecurse", "+time=2", "+retry=1", "+short", name, qtype)
		if err != nil {
			t.Fatalf("dig %s %s: %v", name, qtype, err)
		}
		return strings.TrimSpace(out)
	}
	if soa := strings.Fields(digIn(domain, "SOA")); len(soa) != 7 {
		t.Errorf("carbide-dns on %s answers %q for the SOA of %s, want one SOA record", addr, soa, domain)
	}
	var answer string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if answer = digIn("node1."+domain, "A"); answer == bound.ip {
			break
		}
	}
	if answer != bound.ip {
		t.Errorf("carbide-dns answers %q for node1.%s, want the leased %s", answer, domain, bound.ip)
	}

	// Ctrl-C: everything stops, and nothing is left in the host namespace.
	before := hostState{links: hostLinks, addrs: hostAddrs, carbideNetns: carbideNetns}
	stopRun(t, stack, host, data, listen, before)

	// Again on the same data directory, with the API on every address of
	// the host (--listen 0.0.0.0:1079, the interface's port too): the API
	// listens there itself, the client reaches it on the interface's
	// address, and carbide-run reaches it on 127.0.0.1.
	stack = startProc(t, host, "carbide-run --listen 0.0.0.0:1079", "env", "CARBIDE_INTERFACE=host0", "CARBIDE_DATA_DIR="+data,
		runBin, "--artifacts-dir", artifacts, "--listen", "0.0.0.0:1079")
	stack.waitOutput(t, regexp.MustCompile(`carbide-run +\| Carbide is running: API https://127\.0\.0\.1:1079`), 2*time.Minute)
	stack.waitOutput(t, regexp.MustCompile(`carbide-api +\| .*msg="carbide-api listening" address=(0\.0\.0\.0|\[::\]):1079`), 10*time.Second)
	if m := machineOf(t, hostAPI(t, client, addr+":1079", pki), mac); m.GetHostname() != "node1" {
		t.Errorf("the API, from the client at %s:1079, has machine %s named %q, want node1", addr, m.GetId(), m.GetHostname())
	}
	stopRun(t, stack, host, data, "0.0.0.0:1079", before)
}

// hostState is what a namespace holds before carbide-run runs in it.
type hostState struct {
	links map[string]bool
	addrs string // addressList
	// carbideNetns: a namespace named carbide (a `make run` of the
	// host's) existed already.
	carbideNetns bool
}

// stopRun sends carbide-run, running in namespace host, a SIGINT and
// checks that it stops everything it started and leaves host as before:
// no process in it or using the data directory, the same links and
// addresses, no namespace made, and the API's host address listen free.
func stopRun(t *testing.T, stack *proc, host *netns, data, listen string, before hostState) {
	t.Helper()
	pids, err := netnsPidsOf(host.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) < 6 { // carbide-run and the five components
		t.Errorf("%d processes in the host namespace, want at least carbide-run and the five components: %v", len(pids), pids)
	}
	stack.signal(t, syscall.SIGINT)
	if err := stack.wait(t, time.Minute); err != nil {
		t.Errorf("carbide-run exited with %v after Ctrl-C, want 0", err)
	}
	if !regexp.MustCompile(`carbide-run +\| stopped`).MatchString(stack.out.String()) {
		t.Errorf("carbide-run did not say it stopped:\n%s", tail(stack.out.String(), 20))
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d (%s) is still running", pid, comm(pid))
		}
	}
	if left, err := netnsPidsOf(host.name); err != nil || len(left) > 0 {
		t.Errorf("processes %v are left in the host namespace (%v)", left, err)
	}
	if left := processesMentioning(data); len(left) > 0 {
		t.Errorf("processes using the data directory are left: %v", left)
	}
	if links := linkNames(t, host.name); len(links) != len(before.links) {
		t.Errorf("the host namespace has links %v, had %v before carbide-run", links, before.links)
	}
	if addrs := addressList(t, host); addrs != before.addrs {
		t.Errorf("the host namespace's addresses changed:\n%s\nwere:\n%s", addrs, before.addrs)
	}
	if _, err := os.Stat(filepath.Join(nsenter.Dir, "carbide")); !before.carbideNetns && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a network namespace carbide appeared (%v): the interface mode must create none", err)
	}
	if err := nsenter.Do(host.name, func() error {
		l, err := net.Listen("tcp", listen)
		if err == nil {
			l.Close()
		}
		return err
	}); err != nil {
		t.Errorf("the API's address %s in the host namespace is still taken: %v", listen, err)
	}
}

// addressList lists the addresses of n's devices, a "device address" line
// each, sorted, without their flags (an IPv6 link-local address is
// tentative for a moment after its link comes up).
func addressList(t *testing.T, n *netns) string {
	t.Helper()
	var lines []string
	for line := range strings.Lines(n.ip(t, "-o", "addr", "show")) {
		if f := strings.Fields(line); len(f) > 3 {
			lines = append(lines, f[1]+" "+f[3])
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// hostAPI returns an admin client of the API at addr (host:port) inside
// namespace n, with the development PKI of pki.
func hostAPI(t testing.TB, n *netns, addr, pki string) *api {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("%s holds no certificate", filepath.Join(pki, "ca.crt"))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, address string) (conn net.Conn, err error) {
			err = nsenter.Do(n.name, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, address)
				return err
			})
			return conn, err
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	c, err := carbide.New("https://"+addr, carbide.WithHTTPClient(&http.Client{Transport: transport, Timeout: 30 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return &api{addr: addr, pki: pki, client: c}
}

// machineOf returns the machine that has an interface with mac.
func machineOf(t *testing.T, a *api, mac string) *machinev1.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for m, err := range a.client.AllMachines(ctx, &machinev1.ListMachinesRequest{}) {
		if err != nil {
			t.Fatalf("ListMachines: %v", err)
		}
		for _, nic := range m.GetInterfaces() {
			if nic.GetMac() == mac {
				return m
			}
		}
	}
	t.Fatalf("no machine has an interface with MAC %s", mac)
	return nil
}
