package carbide

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// binDir holds the carbide-api binary the tests build once, on first use.
var (
	binDir   string
	apiOnce  sync.Once
	apiBin   string
	apiBuild error
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "carbide-sdk-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		return m.Run()
	}())
}

// carbideAPI returns the path of a carbide-api binary built from this
// tree, building it on first use. The backend is another module of the
// go.work workspace, so the build needs the workspace.
func carbideAPI(t testing.TB) string {
	t.Helper()
	apiOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out := filepath.Join(binDir, "carbide-api")
		b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/carbide-dev/carbide/backend/cmd/carbide-api").CombinedOutput()
		if err != nil {
			apiBuild = fmt.Errorf("go build carbide-api: %v\n%s\n(the SDK's API tests build the backend's carbide-api: run them inside the go.work workspace, without GOWORK=off)", err, b)
			return
		}
		apiBin = out
	})
	if apiBuild != nil {
		t.Fatal(apiBuild)
	}
	return apiBin
}

// testAPI is a carbide-api --dev the test started, with its development
// PKI in pki.
type testAPI struct {
	addr string
	pki  string
	out  *lockedBuffer
}

// lockedBuffer is a bytes.Buffer safe for a process writing and a test
// reading.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningRE = regexp.MustCompile(`msg="carbide-api listening" address=(\S+)`)

// startAPI starts carbide-api --dev on a free port of 127.0.0.1 with its
// embedded store in a temporary directory, and stops it when the test
// ends.
func startAPI(t *testing.T, extraArgs ...string) *testAPI {
	t.Helper()
	bin := carbideAPI(t)
	dataDir := t.TempDir()
	a := &testAPI{pki: filepath.Join(dataDir, "pki"), out: &lockedBuffer{}}
	args := append([]string{"--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = a.out, a.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start carbide-api: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if os.Getenv(testsecret.EnvFile) != "" || t.Failed() {
			t.Logf("output of carbide-api:\n%s", a.out.String())
		}
	})
	deadline := time.After(60 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(a.out.String()); m != nil {
			a.addr = m[1]
			break
		}
		select {
		case <-done:
			t.Fatalf("carbide-api exited before listening:\n%s", a.out.String())
		case <-deadline:
			t.Fatalf("carbide-api did not listen within 60s:\n%s", a.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	testsecret.RegisterFiles(t, filepath.Join(a.pki, "*.key"))
	return a
}

// config returns the Config of the API's development admin (or another
// role of its development PKI, such as dhcp).
func (a *testAPI) config(role string) Config {
	return Config{
		Endpoint:   "https://" + a.addr,
		CACert:     filepath.Join(a.pki, "ca.crt"),
		ClientCert: filepath.Join(a.pki, role+".crt"),
		ClientKey:  filepath.Join(a.pki, role+".key"),
	}
}

// client returns a Client authenticated as role.
func (a *testAPI) client(t *testing.T, role string, opts ...Option) *Client {
	t.Helper()
	c, err := a.config(role).NewClient(opts...)
	if err != nil {
		t.Fatalf("client for %s: %v", role, err)
	}
	return c
}
