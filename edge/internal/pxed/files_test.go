package pxed

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOpenFile(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	if err := syscall.Mkfifo(filepath.Join(env.artifacts, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(env.artifacts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	tests := map[string]string{ // name: the refusal, "" to open
		"scout/vmlinuz":               "",
		"scout/link-in":               "", // a link that stays inside
		"../secret":                   "invalid",
		"scout/../../secret":          "invalid",
		"scout/../scout/vmlinuz":      "invalid",
		"./scout/vmlinuz":             "invalid",
		"scout//vmlinuz":              "invalid",
		"/scout/vmlinuz":              "invalid",
		env.outside:                   "invalid", // absolute
		"":                            "invalid",
		".":                           "invalid",
		"scout/":                      "invalid",
		"scout/vmlinuz\x00":           "invalid",
		"link-out":                    "denied", // symbolic link to an absolute path outside
		"scout/relative-link-out":     "denied", // symbolic link through ..
		"scout":                       "not_found",
		"fifo":                        "not_found",
		"scout/missing":               "not_found",
		"scout/vmlinuz/x":             "not_found",
		"..":                          "invalid",
		"scout/..":                    "invalid",
		"..\\secret":                  "not_found", // a backslash is a file name character here
		"scout/vmlinuz/../../../etc/": "invalid",
	}
	for name, want := range tests {
		f, info, err := openFile(root, name)
		if want == "" {
			if err != nil {
				t.Errorf("openFile(%q): %v", name, err)
				continue
			}
			b, _ := io.ReadAll(f)
			f.Close()
			if !info.Mode().IsRegular() || string(b) != string(kernelBytes()) {
				t.Errorf("openFile(%q) read %d bytes, not the kernel", name, len(b))
			}
			continue
		}
		if err == nil {
			f.Close()
			t.Errorf("openFile(%q) opened %s; want it refused as %s", name, info.Name(), want)
			continue
		}
		if got := fileRefusal(err); got != want {
			t.Errorf("openFile(%q): %v, sorted as %q; want %q", name, err, got, want)
		}
	}
}

func TestArtifacts(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	kernel := kernelBytes()

	w := env.get("/artifacts/scout/vmlinuz", machineRemote, nil)
	if w.Code != http.StatusOK || !cmp.Equal(w.Body.Bytes(), kernel) {
		t.Fatalf("GET: status %d, %d bytes; want 200 and the kernel", w.Code, w.Body.Len())
	}
	if got := w.Header().Get("Accept-Ranges"); got != "bytes" {
		t.Errorf("Accept-Ranges = %q, want bytes", got)
	}

	tests := map[string]struct {
		rng          string
		start, end   int // inclusive
		contentRange string
	}{
		"middle":     {rng: "bytes=100-199", start: 100, end: 199, contentRange: "bytes 100-199/10000"},
		"open end":   {rng: "bytes=9990-", start: 9990, end: 9999, contentRange: "bytes 9990-9999/10000"},
		"suffix":     {rng: "bytes=-5", start: 9995, end: 9999, contentRange: "bytes 9995-9999/10000"},
		"past start": {rng: "bytes=0-0", start: 0, end: 0, contentRange: "bytes 0-0/10000"},
	}
	for name, tt := range tests {
		w := env.get("/artifacts/scout/vmlinuz", machineRemote, http.Header{"Range": {tt.rng}})
		if w.Code != http.StatusPartialContent {
			t.Errorf("%s: status %d, want 206", name, w.Code)
			continue
		}
		if got := w.Header().Get("Content-Range"); got != tt.contentRange {
			t.Errorf("%s: Content-Range %q, want %q", name, got, tt.contentRange)
		}
		if !cmp.Equal(w.Body.Bytes(), kernel[tt.start:tt.end+1]) {
			t.Errorf("%s: wrong bytes (%d of them)", name, w.Body.Len())
		}
	}
	if w := env.get("/artifacts/scout/vmlinuz", machineRemote, http.Header{"Range": {"bytes=20000-"}}); w.Code != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: status %d, want 416", w.Code)
	}
	req := httptestRequest("/artifacts/scout/scout.cpio.gz", machineRemote)
	req.Method = http.MethodHead
	if w := serve(env.h, req); w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "6" {
		t.Errorf("HEAD: status %d, %d body bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
	if got := testutil.ToFloat64(env.metrics.httpBytes.WithLabelValues(routeArtifacts)); got < float64(len(kernel)) {
		t.Errorf("carbide_pxe_http_response_bytes_total{route=artifacts} = %v, want at least %d", got, len(kernel))
	}
}

// TestArtifactTraversal asks for paths out of the artifacts directory in
// every spelling: none is served, and none reaches the file outside.
func TestArtifactTraversal(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	// The router redirects a path with ".." or "//" to its clean form
	// (307); an encoded one reaches the handler, which refuses it (400).
	tests := map[string]int{ // request target: the status
		"/artifacts/../secret":                  http.StatusTemporaryRedirect,
		"/artifacts/scout/../../secret":         http.StatusTemporaryRedirect,
		"/artifacts/%2e%2e/secret":              http.StatusBadRequest,
		"/artifacts/%2E%2E/secret":              http.StatusBadRequest,
		"/artifacts/..%2fsecret":                http.StatusBadRequest,
		"/artifacts/scout/..%2f..%2fsecret":     http.StatusBadRequest,
		"/artifacts/%2e%2e%2fsecret":            http.StatusBadRequest,
		"/artifacts/%2fetc%2fpasswd":            http.StatusBadRequest,
		"/artifacts//etc/passwd":                http.StatusTemporaryRedirect,
		"/artifacts/" + env.outside:             http.StatusTemporaryRedirect, // an absolute path: a doubled slash
		"/artifacts/link-out":                   http.StatusForbidden,
		"/artifacts/scout/relative-link-out":    http.StatusForbidden,
		"/artifacts/scout":                      http.StatusNotFound, // a directory: no listing
		"/artifacts/scout/":                     http.StatusBadRequest,
		"/artifacts/":                           http.StatusBadRequest,
		"/artifacts/scout/missing":              http.StatusNotFound,
		"/artifacts/scout%00/vmlinuz":           http.StatusBadRequest,
		"/artifacts/scout/vmlinuz%2f..%2f..%2f": http.StatusBadRequest,
	}
	for target, want := range tests {
		w := env.get(target, machineRemote, nil)
		body := w.Body.String()
		switch {
		case strings.Contains(body, secretContent):
			t.Errorf("GET %s served the file outside the artifacts directory", target)
		case w.Code == http.StatusOK || w.Code == http.StatusPartialContent:
			t.Errorf("GET %s: status %d; want it refused", target, w.Code)
		case w.Code != want:
			t.Errorf("GET %s: status %d, want %d", target, w.Code, want)
		case w.Code < 300 || w.Code > 399:
			if strings.Contains(body, "vmlinuz") || strings.Contains(body, "<a href") {
				t.Errorf("GET %s lists a directory: %q", target, body)
			}
		}
		// A redirect by the router must not lead out either.
		if loc := w.Header().Get("Location"); loc != "" {
			w := env.get(loc, machineRemote, nil)
			if w.Code == http.StatusOK || strings.Contains(w.Body.String(), secretContent) {
				t.Errorf("GET %s redirects to %s, which serves %d", target, loc, w.Code)
			}
		}
	}
}
