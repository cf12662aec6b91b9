package xfr

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The real-peer tests: BIND 9 and Knot DNS as secondaries of a dns.Server
// that serves a fake zone through Transfers, all on loopback, all
// TSIG-signed. Each secondary transfers the zone by AXFR, gets a NOTIFY
// from Run after the zone changed, fetches the change by IXFR, and then
// answers the new record and serves the same zone as the source.

// program finds a program of a Debian package on PATH or in the sbin
// directories, and fails the test with what to install when it is
// missing.
func program(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s not found: install the Debian package %s (.ci/run installs it)", name, pkg)
	return ""
}

// freePort returns a port of ip that is free on both UDP and TCP now.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			_, port, _ := net.SplitHostPort(addr)
			return port
		}
	}
	t.Fatal("no port free on both UDP and TCP")
	return ""
}

// logFile is a process's output, which the test reads while it runs.
type logFile struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logFile) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// start runs a server in the foreground until the end of the test, and
// returns its output.
func start(t *testing.T, dir string, name string, args ...string) *logFile {
	t.Helper()
	out := &logFile{}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out)
		}
	})
	return out
}

// eventually polls cond every 50 ms until it holds, and fails the test
// after 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// soaSerial asks server for the SOA of zone; 0 when it has none yet.
func soaSerial(server string) uint32 {
	m := new(dns.Msg)
	m.SetQuestion(zone, dns.TypeSOA)
	in, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, server)
	if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) == 0 {
		return 0
	}
	if soa, ok := in.Answer[0].(*dns.SOA); ok {
		return soa.Serial
	}
	return 0
}

// secondaryTest is the scenario both peers go through. launch starts the
// secondary for a primary at primaryIP:primaryPort and returns its
// address; it must hold the TSIG key keyName/keySecret (hmac-sha256)
// and transfer with it.
func secondaryTest(t *testing.T, launch func(primaryIP, primaryPort string) (addr string)) {
	t.Helper()
	secrets := map[string]string{keyName: keySecret}
	src := newFakeSource(t, zone, 100, records(zone, 2000)...)
	tr, _ := newTransfers(t, src, Config{TSIGSecrets: secrets})
	primary := serve(t, "127.0.0.1", handler(tr, src), secrets)
	pip, pport, _ := net.SplitHostPort(primary)
	addr := launch(pip, pport)
	// The NOTIFY target is known only now.
	tr.targets = []string{addr}
	tr.key = keyName

	eventually(t, "the secondary has not transferred the zone at serial 100", func() bool { return soaSerial(addr) == 100 })
	waitCount(t, tr.m.transfers.WithLabelValues("axfr", resultFull), 1, "transfers{axfr,full}")
	if n := testutil.ToFloat64(tr.m.transfers.WithLabelValues("axfr", resultTSIGMissing)); n != 0 {
		t.Errorf("the secondary sent %v unsigned transfer requests", n)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "Run did not subscribe", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.subs) == 1
	})
	// Three changes in a row: the secondary fetches them in one IXFR or
	// several, depending on when the NOTIFYs reach it.
	src.change(t, zone, 101,
		[]string{"host-7." + zone + " 300 IN A 10.0.0.7"},
		[]string{"new." + zone + " 300 IN A 192.0.2.99", "host-7." + zone + " 300 IN A 10.0.0.77"})
	src.change(t, zone, 102,
		[]string{"host-8." + zone + " 300 IN A 10.0.0.8"},
		[]string{"tmp." + zone + " 300 IN TXT \"gone soon\""})
	src.change(t, zone, 103,
		[]string{"tmp." + zone + " 300 IN TXT \"gone soon\""},
		[]string{"new2." + zone + " 300 IN A 192.0.2.100"})

	eventually(t, "the secondary has not fetched serial 103 after the NOTIFYs", func() bool { return soaSerial(addr) == 103 })
	eventually(t, "no incremental transfer counted", func() bool {
		return testutil.ToFloat64(tr.m.transfers.WithLabelValues("ixfr", resultIncremental)) >= 1
	})
	eventually(t, "no NOTIFY acked", func() bool {
		return testutil.ToFloat64(tr.m.notifies.WithLabelValues(notifyAcked)) >= 1
	})
	if n := testutil.ToFloat64(tr.m.transfers.WithLabelValues("axfr", resultFull)); n != 1 {
		t.Errorf("the secondary made %v full transfers, want only the first", n)
	}

	// The secondary's copy is the source's zone, record for record.
	m := new(dns.Msg)
	m.SetAxfr(zone)
	ch, err := (&dns.Transfer{}).In(m, addr)
	if err != nil {
		t.Fatalf("AXFR from the secondary: %v", err)
	}
	var got []string
	for env := range ch {
		if env.Error != nil {
			t.Fatalf("AXFR from the secondary: %v", env.Error)
		}
		for _, r := range env.RR {
			got = append(got, strings.ToLower(r.String()))
		}
	}
	soa, rrs, _ := src.Snapshot(zone)
	want := []string{strings.ToLower(soa.String())}
	for _, r := range rrs {
		want = append(want, strings.ToLower(r.String()))
	}
	got = got[:max(len(got)-1, 0)] // the closing SOA
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the secondary's zone (%d records) differs from the source's (%d records)", len(got), len(want))
	}
}

// dig asks server for name's type with dig, and returns its short answer.
func dig(t *testing.T, server, name, typ string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(server)
	out, err := exec.Command(program(t, "dig", "dnsutils"), "@"+host, "-p", port, "+short", "+norecurse", name, typ).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s %s: %v\n%s", name, typ, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestBINDSecondary(t *testing.T) {
	t.Parallel()
	named := program(t, "named", "bind9")
	dir := t.TempDir()
	var addr string
	var log *logFile
	secondaryTest(t, func(pip, pport string) string {
		// BIND listens on the addresses of the interfaces only: lo has
		// 127.0.0.1 alone, not the rest of 127.0.0.0/8.
		ip := "127.0.0.1"
		port := freePort(t, ip)
		conf := fmt.Sprintf(`options {
	directory %[1]q;
	pid-file %[1]q "/named.pid";
	session-keyfile %[1]q "/session.key";
	managed-keys-directory %[1]q;
	listen-on port %[2]s { %[3]s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
	allow-transfer { any; };
};
controls { };
key %[4]q { algorithm hmac-sha256; secret %[5]q; };
zone %[6]q {
	type secondary;
	primaries { %[7]s port %[8]s key %[4]q; };
	file "zone.db";
};
`, dir, port, ip, keyName, keySecret, zone, pip, pport)
		conf = strings.ReplaceAll(conf, `" "/`, `/`)
		path := filepath.Join(dir, "named.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		addr = net.JoinHostPort(ip, port)
		log = start(t, dir, named, "-g", "-n", "1", "-d", "3", "-c", path)
		return addr
	})

	if got := dig(t, addr, "new."+zone, "A"); got != "192.0.2.99" {
		t.Errorf("dig @bind new.%s A: %q, want 192.0.2.99", zone, got)
	}
	if got := dig(t, addr, "host-7."+zone, "A"); got != "10.0.0.77" {
		t.Errorf("dig @bind host-7.%s A: %q, want 10.0.0.77", zone, got)
	}
	out := log.String()
	for _, want := range []string{"requesting IXFR for serial 10", "got incremental response", "Transfer status: success"} {
		if !strings.Contains(out, want) {
			t.Errorf("BIND's log does not say %q", want)
		}
	}
}

func TestKnotSecondary(t *testing.T) {
	t.Parallel()
	knotd := program(t, "knotd", "knot")
	dir := t.TempDir()
	var addr string
	var log *logFile
	secondaryTest(t, func(pip, pport string) string {
		port := freePort(t, "127.0.0.1")
		conf := fmt.Sprintf(`server:
    rundir: %[1]q
    listen: 127.0.0.1@%[2]s
log:
  - target: stdout
    any: info
database:
    storage: %[1]q
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
remote:
  - id: carbide
    address: %[5]s@%[6]s
    key: %[3]s
acl:
  - id: notify-from-carbide
    address: %[5]s
    key: %[3]s
    action: notify
  - id: transfer-to-test
    address: 127.0.0.1
    action: transfer
template:
  - id: default
    storage: %[1]q
zone:
  - domain: %[7]s
    master: carbide
    acl: [notify-from-carbide, transfer-to-test]
`, dir, port, keyName, keySecret, pip, pport, zone)
		path := filepath.Join(dir, "knot.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		addr = net.JoinHostPort("127.0.0.1", port)
		log = start(t, dir, knotd, "-c", path)
		return addr
	})

	if got := dig(t, addr, "new."+zone, "A"); got != "192.0.2.99" {
		t.Errorf("dig @knot new.%s A: %q, want 192.0.2.99", zone, got)
	}
	out := log.String()
	for _, want := range []string{"AXFR, incoming", "IXFR, incoming", "notify, incoming"} {
		if !strings.Contains(out, want) {
			t.Errorf("Knot's log does not say %q", want)
		}
	}
}
