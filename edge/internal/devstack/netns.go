package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/nsenter"
)

// findProgram returns the path of a program on PATH or in the sbin and
// bin directories, which a non-login PATH may lack.
func findProgram(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (apt-get install %s)", name, pkg)
}

// runIP runs ip(8) with a deadline.
func runIP(args ...string) (string, error) {
	ip, err := findProgram("ip", "iproute2")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ip, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// netnsExists reports whether namespace name exists.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(nsenter.Dir, name))
	return err == nil
}

// netnsPids returns the processes running in namespace name.
func netnsPids(name string) ([]int, error) {
	out, err := runIP("netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// deleteNetns kills what still runs in namespace name (the lab's BMCs and
// VMs, a daemon that would not stop) and deletes it; its bridge and tap
// devices go with it.
func deleteNetns(name string) error {
	var errs []error
	pids, err := netnsPids(name)
	if err != nil {
		errs = append(errs, err)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(5 * time.Second); len(pids) > 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		alive := pids[:0]
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				alive = append(alive, pid)
			}
		}
		pids = alive
	}
	if len(pids) > 0 {
		errs = append(errs, fmt.Errorf("processes %v are still running in network namespace %s", pids, name))
	}
	if _, err := runIP("netns", "del", name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// zombie reports whether pid has exited and waits for its parent.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// dialer dials a TCP address, in the host's namespace or another.
type dialer func(ctx context.Context, addr string) (net.Conn, error)

func hostDialer(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func netnsDialer(name string) dialer {
	return func(ctx context.Context, addr string) (conn net.Conn, err error) {
		err = nsenter.Do(name, func() error {
			conn, err = hostDialer(ctx, addr)
			return err
		})
		return conn, err
	}
}

// forwarder accepts connections on a listener and forwards each to
// target through dial, until ctx is done.
type forwarder struct {
	ln     net.Listener
	target string
	dial   dialer
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func (f *forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false
	}
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	return true
}

// forward starts forwarding; close stops it.
func forward(ln net.Listener, target string, dial dialer) *forwarder {
	f := &forwarder{ln: ln, target: target, dial: dial, conns: map[net.Conn]struct{}{}}
	f.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(in) })
		}
	})
	return f
}

func (f *forwarder) serve(in net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	out, err := f.dial(ctx, f.target)
	cancel()
	if err != nil {
		in.Close()
		return
	}
	if !f.track(in, true) || !f.track(out, true) {
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
	var pair sync.WaitGroup
	pair.Go(func() { pipe(out, in) })
	pair.Go(func() { pipe(in, out) })
	pair.Wait()
	in.Close()
	out.Close()
	f.track(in, false)
	f.track(out, false)
}

// close stops accepting, closes every forwarded connection and waits.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}
