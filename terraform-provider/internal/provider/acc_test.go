package provider

// The acceptance test harness: the tests of this package run the real
// terraform binary (TF_ACC_TERRAFORM_PATH, from the PATH) against a real
// carbide-api --dev that TestMain builds and starts on the embedded store,
// on a loopback port, with the provider served in process through
// provider factories. Nothing comes from a registry.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// bootAgentTimeout is how long the API waits for a machine's agent.
const bootAgentTimeout = 6 * time.Second

// testAPI is the carbide-api the tests share; TestMain starts it.
var testAPI *accAPI

// accAPI is a running carbide-api --dev.
type accAPI struct {
	bin      string // the carbide-api binary
	endpoint string // https://127.0.0.1:<port>
	pki      string // its development PKI: ca.crt, admin.crt, admin.key, ...
	dataDir  string
	client   *carbide.Client // an admin client, for checks and drift
	log      *logBuffer
}

// logBuffer collects the API's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// protoV6ProviderFactories serves the provider in process to terraform.
var protoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"carbide": providerserver.NewProtocol6WithError(New("test")()),
}

func TestMain(m *testing.M) {
	code, err := runTests(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider acceptance tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// runTests sets up terraform and carbide-api for the tests, runs them and
// tears everything down.
func runTests(m *testing.M) (int, error) {
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		var err error
		if tf, err = exec.LookPath("terraform"); err != nil {
			return 0, fmt.Errorf("the acceptance tests need the terraform CLI on the PATH, or its path in TF_ACC_TERRAFORM_PATH "+
				"(terraform 1.11 or later, for write-only attributes): %w", err)
		}
	}
	if out, err := exec.Command(tf, "version").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("run %s version: %w\n%s", tf, err, out)
	}
	// The tests are acceptance tests through and through: they run under a
	// plain `go test`, never skipped.
	os.Setenv("TF_ACC", "1")
	os.Setenv("TF_ACC_TERRAFORM_PATH", tf)
	os.Setenv("CHECKPOINT_DISABLE", "1") // terraform must not call home
	// Provider settings of the developer's environment would change what
	// the tests configure.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CARBIDE_") && name != testsecret.EnvFile {
			os.Unsetenv(name)
		}
	}

	tmp, err := os.MkdirTemp("", "carbide-tf-acc-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	// An empty CLI configuration: the developer's ~/.terraformrc (say, its
	// dev_overrides) must not change what the tests run.
	rc := filepath.Join(tmp, "terraform.rc")
	if err := os.WriteFile(rc, nil, 0o644); err != nil {
		return 0, err
	}
	os.Setenv("TF_CLI_CONFIG_FILE", rc)
	bin := filepath.Join(tmp, "carbide-api")
	build := exec.Command("go", "build", "-o", bin, "github.com/carbide-dev/carbide/backend/cmd/carbide-api")
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build carbide-api: %w\n%s", err, out)
	}
	api, stop, err := startAPI(bin, filepath.Join(tmp, "data"))
	if err != nil {
		return 0, err
	}
	testAPI = api
	code := m.Run()
	stop()
	if code != 0 || os.Getenv(testsecret.EnvFile) != "" {
		fmt.Fprintf(os.Stderr, "output of carbide-api:\n%s\n", tail(api.log.String(), 80))
	}
	return code, nil
}

var listening = regexp.MustCompile(`msg="carbide-api listening" address=(\S+)`)

// startAPI starts carbide-api --dev on a free loopback port with its
// embedded store in dataDir, and waits until it listens and answers.
func startAPI(bin, dataDir string) (*accAPI, func(), error) {
	a := &accAPI{bin: bin, dataDir: dataDir, pki: filepath.Join(dataDir, "pki"), log: &logBuffer{}}
	// A machine that is given an instance here never boots: its agent
	// step fails after a few seconds instead of the default minutes, so
	// that the instance tests see the failure.
	cmd := exec.Command(bin, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--timeout-boot-agent", bootAgentTimeout.String())
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start carbide-api: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(exited)
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			fmt.Fprintln(a.log, sc.Text())
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(a.log, pr)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case a.endpoint = <-addr:
		a.endpoint = "https://" + a.endpoint
	case <-exited:
		return nil, nil, fmt.Errorf("carbide-api exited before it listened:\n%s", tail(a.log.String(), 40))
	case <-time.After(60 * time.Second):
		stop()
		return nil, nil, fmt.Errorf("carbide-api did not listen within 60 s:\n%s", tail(a.log.String(), 40))
	}
	c, err := carbide.New(a.endpoint, carbide.WithClientCertificate(a.file("admin.crt"), a.file("admin.key"), a.file("ca.crt")))
	if err != nil {
		stop()
		return nil, nil, err
	}
	a.client = c
	if err := waitHealthy(c); err != nil {
		stop()
		return nil, nil, err
	}
	return a, stop, nil
}

// waitHealthy waits until an authenticated call succeeds.
func waitHealthy(c *carbide.Client) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{PageSize: 1}))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("carbide-api did not answer ListMachines within 30 s: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// file is the path of a file of the API's development PKI.
func (a *accAPI) file(name string) string { return filepath.Join(a.pki, name) }

// api returns the shared carbide-api, registering its keys as the test's
// secrets, and logs the tail of the API's output when the test fails.
func api(t *testing.T) *accAPI {
	t.Helper()
	testsecret.RegisterFiles(t, filepath.Join(testAPI.pki, "*.key"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carbide-api output (tail):\n%s", tail(testAPI.log.String(), 40))
		}
	})
	return testAPI
}

// providerConfig is the provider block that authenticates as the admin
// with the API's development certificates.
func (a *accAPI) providerConfig() string {
	return fmt.Sprintf(`
provider "carbide" {
  endpoint    = %q
  ca_cert     = %q
  client_cert = %q
  client_key  = %q
}
`, a.endpoint, a.file("ca.crt"), a.file("admin.crt"), a.file("admin.key"))
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// expectError matches a diagnostic that terraform may have wrapped over
// lines: each space of pattern matches any run of white space.
func expectError(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?s)` + strings.ReplaceAll(pattern, " ", `\s+`))
}
