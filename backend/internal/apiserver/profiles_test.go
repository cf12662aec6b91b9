package apiserver

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestProfiles runs the whole server with and without DebugPprof
// (--debug-pprof): with it, the API port serves the runtime profiles, but
// not the command line, which can hold secrets; without it, none; and the
// API answers either way.
func TestProfiles(t *testing.T) {
	t.Parallel()
	type request struct {
		method, path string
		code         int
		body         string
	}
	for name, tt := range map[string]struct {
		on       bool
		requests []request
	}{
		"on": {on: true, requests: []request{
			{http.MethodGet, "/debug/pprof/", http.StatusOK, "goroutine"},
			{http.MethodGet, "/debug/pprof/heap?debug=1", http.StatusOK, "heap profile:"},
			{http.MethodGet, "/debug/pprof/profile?seconds=1", http.StatusOK, "\x1f\x8b"}, // gzip
			{http.MethodPost, "/debug/pprof/symbol", http.StatusOK, "num_symbols"},
			{http.MethodGet, "/debug/pprof/cmdline", http.StatusNotFound, ""},
			{http.MethodGet, "/metrics", http.StatusOK, "go_goroutines"},
		}},
		"off": {on: false, requests: []request{
			{http.MethodGet, "/debug/pprof/", http.StatusNotFound, ""},
			{http.MethodGet, "/debug/pprof/profile?seconds=1", http.StatusNotFound, ""},
			{http.MethodGet, "/metrics", http.StatusOK, "go_goroutines"},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := runEnv(t, "connect", func(c *Config) { c.DebugPprof = tt.on })
			for _, r := range tt.requests {
				req, err := http.NewRequestWithContext(t.Context(), r.method, e.URL+r.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := e.HTTP.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", r.method, r.path, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("%s %s: %v", r.method, r.path, err)
				}
				if resp.StatusCode != r.code || !strings.Contains(string(body), r.body) {
					t.Errorf("%s %s = %d, %.200q; want %d with %q", r.method, r.path, resp.StatusCode, body, r.code, r.body)
				}
			}
		})
	}
}
