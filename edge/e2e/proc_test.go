package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// proc is a long-running process started by a test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// startProc starts argv inside namespace n (the host namespace when n is
// nil). At cleanup it gets SIGTERM, then SIGKILL if it has not exited
// within 5 s; it also gets SIGKILL if the test binary dies. Its output is
// logged when the test has failed.
func startProc(t testing.TB, n *netns, name string, argv ...string) *proc {
	t.Helper()
	if n != nil {
		ip, err := findProgram("ip")
		if err != nil {
			t.Fatal("ip not found (apt-get install iproute2)")
		}
		// ip netns exec execs argv in place: the process is argv itself.
		argv = append([]string{ip, "netns", "exec", n.name}, argv...)
	}
	p := &proc{name: name, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		switch {
		case os.Getenv(testsecret.EnvFile) != "":
			// make go-test checks the whole output for secrets.
			fmt.Fprintf(t.Output(), "output of %s (%s):\n%s\n", name, commandLine(argv), p.out.String())
		case t.Failed():
			t.Logf("output of %s (%s):\n%s", name, commandLine(argv), tail(p.out.String(), 60))
		}
	})
	return p
}

// commandLine is argv as a log shows it: URLs without their passwords.
func commandLine(argv []string) string {
	shown := make([]string, len(argv))
	for i, arg := range argv {
		shown[i] = arg
		if u, err := url.Parse(arg); err == nil && u.User != nil {
			shown[i] = u.Redacted()
		}
	}
	return strings.Join(shown, " ")
}

// exited reports whether p has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to p.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// wait waits for p to exit and returns its exit status.
func (p *proc) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
		return nil
	}
}

// stop ends p: SIGTERM, then SIGKILL after 5 s.
func (p *proc) stop(t testing.TB) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s (pid %d) survived SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// waitOutput waits until p's output matches re and returns the match.
func (p *proc) waitOutput(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before its output matched %q:\n%s", p.name, p.err, re, tail(p.out.String(), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's output did not match %q within %s:\n%s", p.name, re, timeout, tail(p.out.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs argv inside namespace n (the host's when nil) to completion,
// killing it after timeout, and returns its combined output.
func run(n *netns, timeout time.Duration, argv ...string) (string, error) {
	if n != nil {
		ip, err := findProgram("ip")
		if err != nil {
			return "", errors.New("ip not found (apt-get install iproute2)")
		}
		argv = append([]string{ip, "netns", "exec", n.name}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", commandLine(argv), err, tail(string(out), 30))
	}
	return string(out), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// api is a running carbide-api.
type api struct {
	addr   string // host:port on the host's 127.0.0.1
	pki    string // its development PKI: ca.crt, admin.*, dhcp.*
	client *carbide.Client
}

var listening = regexp.MustCompile(`msg="carbide-api listening" address=(\S+)`)

// startAPI starts carbide-api --dev on the host's 127.0.0.1 with its
// embedded store, or on PostgreSQL when dbURL is set, and returns an admin
// client.
func startAPI(t *testing.T, dbURL string) *api {
	t.Helper()
	dataDir := t.TempDir()
	args := []string{bins.api, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}
	if dbURL != "" {
		args = append(args, "--database-url", dbURL)
	}
	return apiFrom(t, startProc(t, nil, "carbide-api", args...), dataDir)
}

// apiFrom waits for the carbide-api process p, started with --dev on
// dataDir, to listen, and returns it with an admin client.
func apiFrom(t testing.TB, p *proc, dataDir string) *api {
	t.Helper()
	a := &api{
		addr: p.waitOutput(t, listening, 60*time.Second)[1],
		pki:  filepath.Join(dataDir, "pki"),
	}
	testsecret.RegisterFiles(t, filepath.Join(a.pki, "*.key"))
	c, err := carbide.New("https://"+a.addr, carbide.WithClientCertificate(
		filepath.Join(a.pki, "admin.crt"), filepath.Join(a.pki, "admin.key"), filepath.Join(a.pki, "ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	a.client = c
	return a
}

// createSegment creates a segment and returns it.
func (a *api) createSegment(t testing.TB, s *networkv1.Segment) *networkv1.Segment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.client.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: s}))
	if err != nil {
		t.Fatalf("CreateSegment %s: %v", s.GetName(), err)
	}
	return resp.Msg.GetSegment()
}

// leases lists every lease of a segment, expired ones too.
func (a *api) leases(t *testing.T, segmentID string) []*networkv1.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*networkv1.Lease
	for l, err := range a.client.AllLeases(ctx, &networkv1.ListLeasesRequest{SegmentId: segmentID, IncludeExpired: true, PageSize: 1000}) {
		if err != nil {
			t.Fatalf("ListLeases: %v", err)
		}
		out = append(out, l)
	}
	return out
}

// lease returns the lease of mac on a segment, or nil.
func (a *api) lease(t *testing.T, segmentID, mac string) *networkv1.Lease {
	t.Helper()
	for _, l := range a.leases(t, segmentID) {
		if l.GetMac() == mac {
			return l
		}
	}
	return nil
}

// daemon is a running carbide-dhcp.
type daemon struct {
	proc *proc
	ns   *netns
}

// startDaemon starts carbide-dhcp in namespace n, serving the given
// interfaces of n, with the API reached through a forwarder in n, and
// waits until it serves.
func startDaemon(t *testing.T, a *api, n *netns, logLevel string, ifaces ...string) *daemon {
	t.Helper()
	apiAddr := forwardInto(t, n, a.addr)
	args := []string{bins.dhcp,
		"--interface", strings.Join(ifaces, ","),
		"--pki-dir", a.pki,
		"--api-url", "https://" + apiAddr,
		"--metrics-listen", "127.0.0.1:9167",
		"--log-level", logLevel}
	p := startProc(t, n, "carbide-dhcp in "+n.name, args...)
	p.waitOutput(t, regexp.MustCompile(`msg="serving DHCP"`), 30*time.Second)
	return &daemon{proc: p, ns: n}
}

// metric returns the value of a sample of the daemon's metrics, e.g.
// `carbide_dhcp_replies_total{type="offer"}`, or 0 when it is absent.
func (d *daemon) metric(t *testing.T, sample string) float64 {
	t.Helper()
	body := httpGet(t, d.ns, "http://127.0.0.1:9167/metrics")
	for line := range strings.Lines(body) {
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

// startPostgres starts pgtest-cluster and returns the URL of its fresh
// database; the database (and the server, if it started one) is removed
// at cleanup.
func startPostgres(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(bins.pgCluster)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgtest-cluster: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		stdin.Close() // EOF: it drops the database and stops the server
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("pgtest-cluster: %v\n%s", waitErr, stderr)
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("pgtest-cluster did not stop within 60s of EOF on its stdin\n%s", stderr)
		}
	})
	select {
	case dbURL := <-line:
		// The server ignores the password; the logs must not show it.
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatalf("pgtest-cluster printed %q: %v", dbURL, err)
		}
		u.User = url.UserPassword(u.User.Username(), testsecret.Password(t))
		return u.String()
	case <-exited:
		t.Fatalf("pgtest-cluster failed: %v\n%s", waitErr, stderr)
	case <-time.After(2 * time.Minute):
		t.Fatalf("pgtest-cluster printed no database URL within 2 minutes\n%s", stderr)
	}
	return ""
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
