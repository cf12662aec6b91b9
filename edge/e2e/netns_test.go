package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/nsenter"
)

// nsPrefix starts the name of every namespace this test binary creates.
// The process id in it lets a later run find the namespaces of a run that
// was killed before its cleanups ran (sweepStaleNamespaces).
var nsPrefix = "cbe2e-" + strconv.Itoa(os.Getpid()) + "-"

var nsCounter atomic.Int64

// netns is a network namespace created by a test.
type netns struct {
	name string
}

// newNetns creates a namespace with its loopback up, and deletes it at
// cleanup, after killing any process still in it. short names it in logs.
func newNetns(t testing.TB, short string) *netns {
	t.Helper()
	name := fmt.Sprintf("%s%d-%s", nsPrefix, nsCounter.Add(1), short)
	ipCmd(t, "netns", "add", name)
	n := &netns{name: name}
	t.Cleanup(func() {
		if err := deleteNetns(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	n.ip(t, "link", "set", "dev", "lo", "up")
	return n
}

// deleteNetns kills what still runs in namespace name (only processes this
// test binary started can be there) and deletes it; its links go with it.
func deleteNetns(name string) error {
	var errs []error
	out, err := runIP("netns", "pids", name)
	if err != nil {
		errs = append(errs, err)
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Wait until they are gone, so that the namespace, and its veth
	// links, are freed when it is deleted.
	for deadline := time.Now().Add(5 * time.Second); len(pids) > 0 && time.Now().Before(deadline); {
		alive := pids[:0]
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				alive = append(alive, pid)
			}
		}
		pids = alive
		time.Sleep(20 * time.Millisecond)
	}
	if len(pids) > 0 {
		errs = append(errs, fmt.Errorf("processes %v are still running in it", pids))
	}
	if _, err := runIP("netns", "del", name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sweepStale deletes what earlier runs of this test binary left behind
// when they were killed before their cleanups ran: their network
// namespaces and the directory of their binaries. Both carry the process
// id of their run, which must be gone.
func sweepStale() {
	dead := func(rest string) bool {
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	if entries, err := os.ReadDir(nsenter.Dir); err == nil {
		for _, e := range entries {
			if rest, ok := strings.CutPrefix(e.Name(), "cbe2e-"); !ok || !dead(rest) {
				continue
			}
			if err := deleteNetns(e.Name()); err != nil {
				fmt.Fprintf(os.Stderr, "delete stale network namespace %s: %v\n", e.Name(), err)
			} else {
				fmt.Fprintf(os.Stderr, "deleted network namespace %s of an earlier, killed run\n", e.Name())
			}
		}
	}
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range entries {
			if rest, ok := strings.CutPrefix(e.Name(), binDirPrefix); ok && e.IsDir() && dead(rest) {
				_ = os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
			}
		}
	}
}

// runIP runs ip(8) with a deadline.
func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ip, err := findProgram("ip")
	if err != nil {
		return "", fmt.Errorf("ip not found (apt-get install iproute2): %w", err)
	}
	out, err := exec.CommandContext(ctx, ip, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipCmd runs ip(8) and fails the test if it fails.
func ipCmd(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runIP(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ip runs `ip -n <namespace> args...`.
func (n *netns) ip(t testing.TB, args ...string) string {
	t.Helper()
	return ipCmd(t, append([]string{"-n", n.name}, args...)...)
}

// addr adds an address (CIDR form) to a device.
func (n *netns) addr(t testing.TB, dev, cidr string) {
	t.Helper()
	n.ip(t, "addr", "add", cidr, "dev", dev)
}

// mac sets a device's hardware address.
func (n *netns) mac(t testing.TB, dev, mac string) {
	t.Helper()
	n.ip(t, "link", "set", "dev", dev, "address", mac)
}

// sysctl sets a sysctl of the namespace, e.g. net.ipv4.ip_forward.
func (n *netns) sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	err := nsenter.Do(n.name, func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, n.name, err)
	}
}

// veth links device devA in namespace a to device devB in namespace b and
// sets both up. Each end is created in its own namespace, never in the
// host's.
func veth(t testing.TB, a *netns, devA string, b *netns, devB string) {
	t.Helper()
	a.ip(t, "link", "add", "name", devA, "type", "veth", "peer", "name", devB, "netns", b.name)
	a.ip(t, "link", "set", "dev", devA, "up")
	b.ip(t, "link", "set", "dev", devB, "up")
}

// bridge creates bridge br in n with the given devices of n as its ports.
func (n *netns) bridge(t testing.TB, br string, ports ...string) {
	t.Helper()
	n.ip(t, "link", "add", "name", br, "type", "bridge")
	for _, p := range ports {
		n.ip(t, "link", "set", "dev", p, "master", br)
	}
	n.ip(t, "link", "set", "dev", br, "up")
}

// forwardInto listens on 127.0.0.1 of namespace n and forwards every
// connection to target, an address of the host namespace's loopback, until
// the test ends. It returns the address to dial inside n.
func forwardInto(t testing.TB, n *netns, target string) string {
	t.Helper()
	var l net.Listener
	if err := nsenter.Do(n.name, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", n.name, err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false // closing
		}
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
		return true
	}
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			if !track(in, true) || !track(out, true) {
				in.Close()
				out.Close()
				return
			}
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			wg.Go(func() {
				var pair sync.WaitGroup
				pair.Go(func() { pipe(out, in) })
				pair.Go(func() { pipe(in, out) })
				pair.Wait()
				in.Close()
				out.Close()
				track(in, false)
				track(out, false)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// httpGet fetches url from inside namespace n.
func httpGet(t testing.TB, n *netns, url string) string {
	t.Helper()
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = nsenter.Do(n.name, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", url, n.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s in %s: %s %v", url, n.name, resp.Status, err)
	}
	return string(b)
}
