package daemon

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewRegistry(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_open_fds"} {
		if !names[want] {
			t.Errorf("the registry lacks %s", want)
		}
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "carbide_test_a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "carbide_test_b_total", Help: "b"})
	if err := Register(reg, a, b); err != nil {
		t.Fatal(err)
	}
	// Registering both again fails twice, in one error.
	err := Register(reg, a, b)
	if err == nil || !strings.HasPrefix(err.Error(), "register metrics: ") || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("Register again = %v, want one error naming both", err)
	}
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestMetricsServer serves a registry, answers /healthz, and stops on
// Shutdown with Serve returning nil.
func TestMetricsServer(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "carbide_test_things_total", Help: "Things."})
	c.Add(3)
	if err := Register(reg, c); err != nil {
		t.Fatal(err)
	}
	s, err := ListenMetrics("127.0.0.1:0", DefaultMetricsTimeouts(), reg, false, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	base := "http://" + s.Addr().String()

	tests := map[string]struct {
		method, path string
		code         int
		body         []string
	}{
		"metrics":         {method: http.MethodGet, path: "/metrics", code: http.StatusOK, body: []string{"carbide_test_things_total 3", "go_goroutines"}},
		"health":          {method: http.MethodGet, path: "/healthz", code: http.StatusOK, body: []string{"ok\n"}},
		"only GET":        {method: http.MethodPost, path: "/metrics", code: http.StatusMethodNotAllowed},
		"nothing else":    {method: http.MethodGet, path: "/", code: http.StatusNotFound},
		"no profiles":     {method: http.MethodGet, path: "/debug/pprof/", code: http.StatusNotFound},
		"health, exactly": {method: http.MethodGet, path: "/healthz/x", code: http.StatusNotFound},
	}
	for name, tt := range tests {
		code, body := get(t, tt.method, base+tt.path)
		if code != tt.code {
			t.Errorf("%s: %s %s = %d, want %d", name, tt.method, tt.path, code, tt.code)
		}
		for _, w := range tt.body {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %s %s lacks %q:\n%s", name, tt.method, tt.path, w, body)
			}
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
	if conn, err := net.Dial("tcp", s.Addr().String()); err == nil {
		conn.Close()
		t.Error("the socket still accepts connections after Shutdown")
	}
}

// TestMetricsProfiles: with profiles on, the metrics server also serves
// net/http/pprof's index, named profiles and a CPU profile, but not the
// command line, which can hold secrets.
func TestMetricsProfiles(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ListenMetrics("127.0.0.1:0", DefaultMetricsTimeouts(), reg, true, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	base := "http://" + s.Addr().String()

	tests := map[string]struct {
		method, path string
		code         int
		body         string
	}{
		"index":           {method: http.MethodGet, path: "/debug/pprof/", code: http.StatusOK, body: "goroutine"},
		"a named profile": {method: http.MethodGet, path: "/debug/pprof/goroutine?debug=1", code: http.StatusOK, body: "goroutine profile: total"},
		"a CPU profile":   {method: http.MethodGet, path: "/debug/pprof/profile?seconds=1", code: http.StatusOK, body: "\x1f\x8b"}, // gzip
		"symbols":         {method: http.MethodPost, path: "/debug/pprof/symbol", code: http.StatusOK, body: "num_symbols"},
		"no command line": {method: http.MethodGet, path: "/debug/pprof/cmdline", code: http.StatusNotFound},
		"no other method": {method: http.MethodPost, path: "/debug/pprof/profile", code: http.StatusMethodNotAllowed},
		"still metrics":   {method: http.MethodGet, path: "/metrics", code: http.StatusOK, body: "go_goroutines"},
	}
	for name, tt := range tests {
		code, body := get(t, tt.method, base+tt.path)
		if code != tt.code {
			t.Errorf("%s: %s %s = %d, want %d", name, tt.method, tt.path, code, tt.code)
		}
		if !strings.Contains(body, tt.body) {
			t.Errorf("%s: %s %s lacks %q:\n%.500s", name, tt.method, tt.path, tt.body, body)
		}
	}
}

// TestMetricsOff: no address, no server, and the nil server does nothing.
func TestMetricsOff(t *testing.T) {
	t.Parallel()
	s, err := ListenMetrics("", DefaultMetricsTimeouts(), prometheus.NewRegistry(), false, nil)
	if s != nil || err != nil {
		t.Fatalf("ListenMetrics(\"\") = %v, %v; want nil, nil", s, err)
	}
	if s.Addr() != nil || s.Serve() != nil || s.Shutdown(t.Context()) != nil || s.Close() != nil {
		t.Error("a nil MetricsServer did something")
	}
}

func TestListenMetricsErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	s, err := ListenMetrics(busy.Addr().String(), DefaultMetricsTimeouts(), prometheus.NewRegistry(), false, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "listen for metrics: ") {
		s.Close()
		t.Errorf("ListenMetrics on a port in use = %v, want listen for metrics: ...", err)
	}

	// Close releases a socket never served.
	s, err = ListenMetrics("127.0.0.1:0", DefaultMetricsTimeouts(), prometheus.NewRegistry(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if conn, err := net.Dial("tcp", s.Addr().String()); err == nil {
		conn.Close()
		t.Error("the socket still accepts connections after Close")
	}
}

func TestCheckListen(t *testing.T) {
	t.Parallel()
	tests := map[string]string{ // address: substring of the error, "" for none
		"127.0.0.1:9167": "",
		":8080":          "",
		"[::1]:0":        "",
		"localhost:69":   "",
		"9167":           "missing port in address",
		":70000":         `":70000" has no valid port`,
		"127.0.0.1:http": `"127.0.0.1:http" has no valid port`,
		"127.0.0.1:-1":   "has no valid port",
	}
	for addr, want := range tests {
		err := CheckListen(addr)
		switch {
		case want == "" && err != nil:
			t.Errorf("CheckListen(%q) = %v, want nil", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("CheckListen(%q) = %v, want an error saying %q", addr, err, want)
		}
	}
}
