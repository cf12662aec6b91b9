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

// TestMain builds carbide-api and starts one for the package's examples,
// which find it the way a user's program does: through the config file
// that $CARBIDE_CONFIG names.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "carbide-sdk-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		stop, err := startExampleAPI(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
		return m.Run()
	}())
}

// startExampleAPI starts the examples' carbide-api with its data under
// dir, writes a config file with an admin context for it, and points
// $CARBIDE_CONFIG at it. Other CARBIDE_* variables are cleared, so the
// examples do not reach another API.
func startExampleAPI(dir string) (stop func(), err error) {
	bin, err := buildAPI()
	if err != nil {
		return nil, err
	}
	a, stop, err := launchAPI(bin, filepath.Join(dir, "example-api"))
	if err != nil {
		return nil, err
	}
	for _, k := range []string{EnvContext, EnvEndpoint, EnvCACert, EnvClientCert, EnvClientKey, EnvToken, EnvTokenCommand, EnvProtocol} {
		os.Unsetenv(k)
	}
	path := filepath.Join(dir, "config.yaml")
	f := &ConfigFile{CurrentContext: "lab", Contexts: map[string]Config{"lab": a.config("admin")}}
	if err := f.Write(path); err != nil {
		stop()
		return nil, err
	}
	os.Setenv(EnvConfig, path)
	return stop, nil
}

// buildAPI builds carbide-api from this tree once. The backend is another
// module of the go.work workspace, so the build needs the workspace.
func buildAPI() (string, error) {
	apiOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out := filepath.Join(binDir, "carbide-api")
		b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/carbide-dev/carbide/backend/cmd/carbide-api").CombinedOutput()
		if err != nil {
			apiBuild = fmt.Errorf("go build carbide-api: %v\n%s\n(the SDK's tests build the backend's carbide-api: run them inside the go.work workspace, without GOWORK=off)", err, b)
			return
		}
		apiBin = out
	})
	return apiBin, apiBuild
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

// launchAPI starts carbide-api --dev on a free port of 127.0.0.1 with its
// embedded store in dataDir, and waits until it listens. stop ends it.
func launchAPI(bin, dataDir string) (a *testAPI, stop func(), err error) {
	a = &testAPI{pki: filepath.Join(dataDir, "pki"), out: &lockedBuffer{}}
	cmd := exec.Command(bin, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir)
	cmd.Stdout, cmd.Stderr = a.out, a.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start carbide-api: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.After(60 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(a.out.String()); m != nil {
			a.addr = m[1]
			return a, stop, nil
		}
		select {
		case <-done:
			return nil, nil, fmt.Errorf("carbide-api exited before listening:\n%s", a.out.String())
		case <-deadline:
			stop()
			return nil, nil, fmt.Errorf("carbide-api did not listen within 60s:\n%s", a.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startAPI starts a carbide-api of the test's own, and stops it when the
// test ends.
func startAPI(t *testing.T) *testAPI {
	t.Helper()
	bin, err := buildAPI()
	if err != nil {
		t.Fatal(err)
	}
	a, stop, err := launchAPI(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if os.Getenv(testsecret.EnvFile) != "" || t.Failed() {
			t.Logf("output of carbide-api:\n%s", a.out.String())
		}
	})
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
