package apiserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
)

// runEnv runs the whole server (Run, with its http.Server and limits) on
// the embedded store and returns an env whose clients speak protocol.
// env.Store is nil: the server owns its store.
func runEnv(t *testing.T, protocol string, configure func(*Config)) *env {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Dev: true, ShutdownTimeout: 5 * time.Second}
	if configure != nil {
		configure(&cfg)
	}
	addr := make(chan net.Addr, 1)
	cfg.Ready = func(a net.Addr) { addr <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var e *env
	select {
	case a := <-addr:
		e = &env{URL: "https://" + a.String(), PKI: filepath.Join(cfg.DataDir, "pki"), protocol: protocol}
	case err := <-done:
		t.Fatalf("Run ended before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start within 30s")
	}
	e.HTTP = e.httpClient(t, "")
	e.clients = e.as(t, "admin")
	return e
}

// dialHTTP1 opens a TLS connection to e that speaks HTTP/1.1.
func (e *env) dialHTTP1(t *testing.T) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	roots, err := pki.LoadPool(filepath.Join(e.PKI, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.URL, "https://"), &tls.Config{
		RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// limitHits returns carbide_api_limit_hits_total for one limit.
func (e *env) limitHits(t *testing.T, limit string) float64 {
	t.Helper()
	return metricValue(t, e, fmt.Sprintf("carbide_api_limit_hits_total{limit=%q}", limit))
}

// TestWatchOutlivesWriteTimeout opens Watch streams over HTTP/2 (gRPC) and
// HTTP/1.1 (Connect) on a server whose read and write timeouts are far
// shorter than the streams, and checks that the streams still deliver
// events after both have passed, and that calls still work.
func TestWatchOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	e := runEnv(t, "grpc", func(c *Config) { c.ReadTimeout, c.WriteTimeout = timeout, timeout })
	http1 := e.httpClient(t, "admin")
	http1.Transport.(*http.Transport).Protocols = nil
	http1.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	http1.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
	streams := map[string]*watcher{
		"grpc over HTTP/2":      openWatch(t, e, &watchv1.WatchRequest{}),
		"connect over HTTP/1.1": openWatch(t, &env{clients: e.clientsOver(http1)}, &watchv1.WatchRequest{}),
	}
	for name, w := range streams {
		if ev := w.next(t); ev.GetType() != syncedEv {
			t.Fatalf("%s: first event %v, want SYNCED", name, ev)
		}
	}
	time.Sleep(5 * timeout)
	ctx := context.Background()
	seg, err := e.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "late", Prefix: "10.7.0.0/24"}}))
	if err != nil {
		t.Fatalf("CreateSegment after the timeouts: %v", err)
	}
	for name, w := range streams {
		if ev := w.next(t); ev.GetType() != createdEv || ev.GetId() != seg.Msg.GetSegment().GetId() {
			t.Errorf("%s: after the write timeout got %v, want the segment's CREATED", name, ev)
		}
	}
	if got := e.limitHits(t, limitWriteTimeout); got != 0 {
		t.Errorf("write timeouts counted: %v, want 0 (streams have none)", got)
	}
}

// TestIdleTimeout checks that the server closes a connection that carries
// no request for --idle-timeout, and counts it.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	e := runEnv(t, "grpc", func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	conn, r := e.dialHTTP1(t)
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	resp.Body.Close()
	// The idle connection is closed by the server well within this.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %d bytes, %v; want the server to close it (EOF)", n, err)
	}
	// The server counts the connection once it has closed it (its
	// ConnState hook), which may be just after the client saw EOF.
	got := e.limitHits(t, limitIdleTimeout)
	for deadline := time.Now().Add(10 * time.Second); got == 0 && time.Now().Before(deadline); got = e.limitHits(t, limitIdleTimeout) {
		time.Sleep(10 * time.Millisecond)
	}
	if got != 1 {
		t.Errorf(`carbide_api_limit_hits_total{limit="idle_timeout"} = %v, want 1`, got)
	}
}

// TestReadTimeout sends a call whose body stops halfway: once
// --read-timeout has passed the server answers deadline_exceeded naming
// the flag, and counts it.
func TestReadTimeout(t *testing.T) {
	t.Parallel()
	e := runEnv(t, "grpc", func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
	conn, r := e.dialHTTP1(t)
	if _, err := io.WriteString(conn, "POST /carbide.network.v1.SegmentService/ListSegments HTTP/1.1\r\nHost: api\r\n"+
		"Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled request: %v", err)
	}
	defer resp.Body.Close()
	var answer struct{ Code, Message string }
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("answer (%s): %v", resp.Status, err)
	}
	if answer.Code != "deadline_exceeded" || !strings.Contains(answer.Message, "--read-timeout") {
		t.Errorf("stalled request: %s %q; want deadline_exceeded naming --read-timeout", answer.Code, answer.Message)
	}
	if got := e.limitHits(t, limitReadTimeout); got != 1 {
		t.Errorf(`carbide_api_limit_hits_total{limit="read_timeout"} = %v, want 1`, got)
	}
}
