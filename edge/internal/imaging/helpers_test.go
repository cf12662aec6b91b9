package imaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// needTool returns the path of a program the test runs, and fails the
// test, naming the Debian package, when it is missing.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Fatalf("%s is missing: install the Debian package %s (apt-get install %s)", name, pkg, pkg)
	}
	return p
}

// run runs a program and returns its standard output; it fails the test,
// showing the standard error, when the program fails.
func run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// runErr runs a program and returns its combined output and error.
func runErr(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// diskImage is a raw disk image fixture: random data, a compressible
// part (so that qcow2 -c has compressed clusters), holes of zeros (so
// that qcow2 has unallocated clusters), and a size that is not a
// multiple of the cluster size.
func diskImage() []byte {
	img := randomBytes(1, 6<<20+3*512)
	clear(img[1<<20 : 3<<20])           // two whole MiB
	clear(img[4<<20+512 : 4<<20+70000]) // within clusters
	line := randomBytes(2, 1000)
	for off := 5 << 20; off < 6<<20; off += len(line) + 8 {
		copy(img[off:], line)
		copy(img[off+len(line):], strconv.Itoa(off))
	}
	return img
}

// newDisk creates a sparse file of size bytes standing in for a disk.
func newDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// readFile reads a file, failing the test on error.
func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile writes a file in a temporary directory and returns its path.
func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// artifactServer serves content at /image (with ranges, as
// http.ServeContent does) and counts the requests by kind.
type artifactServer struct {
	*httptest.Server
	mu     sync.Mutex
	gets   int
	ranges int
}

func serveArtifact(t *testing.T, content []byte) *artifactServer {
	t.Helper()
	s := &artifactServer{}
	mod := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/image" {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		if r.Header.Get("Range") != "" {
			s.ranges++
		} else {
			s.gets++
		}
		s.mu.Unlock()
		http.ServeContent(w, r, "image", mod, bytes.NewReader(content))
	}))
	t.Cleanup(s.Close)
	return s
}

// secretQuery is a query a URL carries in tests; no message may show it.
const secretQuery = "?token=s3cr3t-token"

// progressLog records the progress reports of a run.
type progressLog struct {
	mu   sync.Mutex
	list []Progress
}

func (p *progressLog) add(pr Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, pr)
}

// last returns the last report of phase, and false when there was none.
func (p *progressLog) last(phase string) (Progress, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.list) - 1; i >= 0; i-- {
		if p.list[i].Phase == phase {
			return p.list[i], true
		}
	}
	return Progress{}, false
}

// fillDisk writes n bytes of b at off of the file p.
func fillDisk(t *testing.T, p string, off int64, n int, b byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{b}, n), off); err != nil {
		t.Fatal(err)
	}
}
