package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// bins are the binaries TestMain builds: the CLI, and carbide-api for the
// tests that need a real API.
var bins struct {
	carbide, api string
}

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "carbide-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		root, err := repoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		bins.carbide = filepath.Join(dir, "carbide")
		bins.api = filepath.Join(dir, "carbide-api")
		for bin, pkg := range map[string]string{bins.carbide: "./sdk/cmd/carbide", bins.api: "./backend/cmd/carbide-api"} {
			cmd := exec.Command("go", "build", "-o", bin, pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// repoRoot is the directory of go.work above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: run the tests inside the repository")
		}
		dir = parent
	}
}

// result is what one run of the CLI did.
type result struct {
	stdout, stderr string
	code           int
}

// cli runs the built carbide binary with args and env (on top of a clean
// environment: PATH, HOME, and a CARBIDE_CONFIG that does not exist
// unless env sets one), feeding it stdin.
func cli(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bins.carbide, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "CARBIDE_CONFIG=/carbide-test/config.yaml"}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run carbide %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := cli(t, env, "", args...)
	if r.code != 0 {
		t.Fatalf("carbide %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

var listening = regexp.MustCompile(`msg="carbide-api listening" address=(\S+)`)

// api is a carbide-api --dev started by a test.
type api struct {
	addr    string
	dataDir string
	pki     string
	// env points the CLI at it as the admin, through a config file
	// written with carbide config set-context.
	env []string
}

// startAPI starts carbide-api --dev on a free loopback port with its
// embedded store in a temporary directory, and writes a CLI config file
// whose context "test" is its admin.
func startAPI(t *testing.T) *api {
	t.Helper()
	dataDir := t.TempDir()
	cmd := exec.Command(bins.api, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start carbide-api: %v", err)
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
			t.Logf("carbide-api output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	var addr string
	for addr == "" {
		if m := listening.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case <-done:
			t.Fatalf("carbide-api exited before listening:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("carbide-api did not listen within 60s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	a := &api{addr: addr, dataDir: dataDir, pki: filepath.Join(dataDir, "pki")}
	testsecret.RegisterFiles(t, filepath.Join(a.pki, "*.key"))
	a.env = []string{"CARBIDE_CONFIG=" + filepath.Join(t.TempDir(), "config.yaml")}
	mustCLI(t, a.env, "config", "set-context", "test", "--endpoint", "https://"+addr,
		"--ca-cert", filepath.Join(a.pki, "ca.crt"), "--client-cert", filepath.Join(a.pki, "admin.crt"), "--client-key", filepath.Join(a.pki, "admin.key"))
	return a
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var (
	uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timePattern = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
)

// normalizer replaces ids by <id-1>, <id-2>... in the order they are first
// seen (across every output of a test, so one resource keeps its number),
// and times by <time>. In tables (pad) the replacements are padded to the
// length of what they replace, so the columns stay aligned.
type normalizer map[string]string

func (n normalizer) apply(s string, pad bool) string {
	fit := func(orig, repl string) string {
		if pad && len(repl) < len(orig) {
			return repl + strings.Repeat(" ", len(orig)-len(repl))
		}
		return repl
	}
	s = uuidPattern.ReplaceAllStringFunc(s, func(id string) string {
		if _, ok := n[id]; !ok {
			n[id] = fmt.Sprintf("<id-%d>", len(n)+1)
		}
		return fit(id, n[id])
	})
	s = timePattern.ReplaceAllStringFunc(s, func(ts string) string { return fit(ts, "<time>") })
	if pad {
		lines := strings.Split(s, "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " ")
		}
		s = strings.Join(lines, "\n")
	}
	return s
}

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test ./sdk/internal/cli -update to create it): %v", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (go test ./sdk/internal/cli -update rewrites it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}
