package pxed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
)

// TestHTTPTimeouts runs the daemon with one-second HTTP and metrics
// timeouts and checks that a download that keeps going outlives the write
// timeout, that one whose client stops reading is cut off and counted, and
// that idle connections of both servers are closed and counted.
func TestHTTPTimeouts(t *testing.T) {
	t.Parallel()
	top := t.TempDir()
	artifacts := filepath.Join(top, "artifacts")
	mustWrite(t, filepath.Join(artifacts, "scout", "vmlinuz"), kernelBytes())
	mustWrite(t, filepath.Join(artifacts, "scout", "scout.cpio.gz"), []byte("initrd"))
	mustWrite(t, filepath.Join(artifacts, "small.txt"), []byte("small\n"))
	const slowSize, bigSize = 12 << 20, 256 << 20
	for name, size := range map[string]int64{"slow.img": slowSize, "big.img": bigSize} {
		f, err := os.Create(filepath.Join(artifacts, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	c := DefaultConfig()
	c.APIURL = newFakeBoot().serve(t)
	c.HTTPListen, c.MetricsListen, c.TFTPListen = "127.0.0.1:0", "127.0.0.1:0", ""
	c.ArtifactsDir = artifacts
	c.HTTPTimeouts = daemon.HTTPTimeouts{Write: time.Second, Idle: time.Second}
	c.MetricsTimeouts = daemon.HTTPTimeouts{Write: time.Second, Idle: time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	addrs := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, testLogger(&syncbuf.Buffer{}), func(a Addrs) { addrs <- a }) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var a Addrs
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	metric := func(sample string) float64 {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Get("http://" + a.Metrics.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, sample+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		t.Fatalf("/metrics has no %s", sample)
		return 0
	}
	get := func(addr, path string) (net.Conn, *bufio.Reader, *http.Response) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: pxe\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReaderSize(conn, 64<<10)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return conn, r, resp
	}
	waitClosed := func(what string, r *bufio.Reader) {
		t.Helper()
		if n, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s: read %d bytes, %v; want the server to close the idle connection", what, n, err)
		}
	}

	t.Run("slow download outlives the write timeout", func(t *testing.T) {
		_, _, resp := get(a.HTTP.String(), "/artifacts/slow.img")
		var got int64
		buf := make([]byte, 512<<10)
		for {
			n, err := io.ReadFull(resp.Body, buf)
			got += int64(n)
			if err != nil {
				break
			}
			time.Sleep(150 * time.Millisecond)
		}
		if got != slowSize {
			t.Errorf("a download read at about 3 MB/s got %d of %d bytes", got, slowSize)
		}
	})

	t.Run("stalled download is cut off", func(t *testing.T) {
		get(a.HTTP.String(), "/artifacts/big.img")
		sample := `carbide_pxe_http_timeouts_total{timeout="write"}`
		for deadline := time.Now().Add(30 * time.Second); metric(sample) != 1; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v after 30s; want 1", sample, metric(sample))
			}
		}
	})

	t.Run("idle connections are closed", func(t *testing.T) {
		samples := []string{
			`carbide_pxe_http_timeouts_total{timeout="idle"}`,
			`carbide_metrics_http_timeouts_total{timeout="idle"}`,
		}
		// The connections above may have idled out already.
		before := map[string]float64{}
		for _, s := range samples {
			before[s] = metric(s)
		}
		_, r, resp := get(a.HTTP.String(), "/artifacts/small.txt")
		io.Copy(io.Discard, resp.Body)
		waitClosed("HTTP", r)
		_, r, resp = get(a.Metrics.String(), "/healthz")
		io.Copy(io.Discard, resp.Body)
		waitClosed("metrics", r)
		// The server counts a connection after closing it, so the client
		// may see the close first.
		for _, s := range samples {
			deadline := time.Now().Add(5 * time.Second)
			for metric(s)-before[s] < 1 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := metric(s) - before[s]; got != 1 {
				t.Errorf("%s grew by %v, want 1", s, got)
			}
		}
	})
}
