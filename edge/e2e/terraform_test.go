package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// terraformWork is a working directory of the terraform CLI: a copy of one
// of the provider's example configurations, its variables and its state,
// run inside a lab namespace with the provider built from this workspace.
type terraformWork struct {
	bin string // the terraform CLI
	dir string
	env []string
	ns  *netns
}

// newTerraform builds the provider and copies the example configuration
// terraform-provider/examples/<example> into a new working directory for
// the terraform CLI, which runs in namespace ns. The CLI configuration it
// writes installs the provider from the build through dev_overrides and
// allows no other source: no `terraform init`, nothing from a registry.
func newTerraform(t testing.TB, ns *netns, example string) *terraformWork {
	t.Helper()
	bin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if bin == "" {
		var err error
		if bin, err = findProgram("terraform"); err != nil {
			t.Fatal("the instance test applies a configuration with the terraform CLI (1.11 or later), which is not installed: " +
				"install it (apt-get install terraform, from HashiCorp's apt repository) or name it in TF_ACC_TERRAFORM_PATH")
		}
	}
	root, err := workspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	plugins := t.TempDir()
	if err := buildAll(map[string]string{
		filepath.Join(plugins, "terraform-provider-carbide"): "github.com/carbide-dev/carbide/terraform-provider",
	}); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(plugins, "terraform.rc")
	writeFile(t, rc, fmt.Sprintf(`provider_installation {
  dev_overrides {
    "carbide-dev/carbide" = %q
  }
}
`, plugins))

	w := &terraformWork{bin: bin, dir: t.TempDir(), ns: ns}
	files, err := filepath.Glob(filepath.Join(root, "terraform-provider", "examples", example, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no configuration in terraform-provider/examples/%s (%v)", example, err)
	}
	for _, f := range files {
		copyFile(t, f, filepath.Join(w.dir, filepath.Base(f)))
	}
	// The provider is configured by the variables alone: no CARBIDE_* nor
	// TF_* setting of the caller's environment (a TF_LOG, say) applies.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(name, "CARBIDE_") && name != testsecret.EnvFile) || strings.HasPrefix(name, "TF_") {
			continue
		}
		w.env = append(w.env, kv)
	}
	w.env = append(w.env, "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1")
	return w
}

// setVars writes the configuration's variables into terraform.tfvars.json,
// which every command of the working directory reads.
func (w *terraformWork) setVars(t testing.TB, vars map[string]any) {
	t.Helper()
	b, err := json.MarshalIndent(vars, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "terraform.tfvars.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// run runs `terraform <args> -no-color` in the working directory, logging
// its output line by line as it comes, and kills it (with the provider it
// started) after timeout.
func (w *terraformWork) run(t testing.TB, timeout time.Duration, args ...string) error {
	t.Helper()
	ip, err := findProgram("ip")
	if err != nil {
		t.Fatal("ip not found (apt-get install iproute2)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{"netns", "exec", w.ns.name, w.bin, "-chdir=" + w.dir}, args...)
	argv = append(argv, "-no-color")
	cmd := exec.CommandContext(ctx, ip, argv...)
	cmd.Env = w.env
	// ip netns exec execs terraform in place; terraform and its provider
	// are one process group, killed together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := &lineLogger{t: t, prefix: "terraform " + args[0] + ": "}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.flush()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %s: %w", timeout, err)
	}
	return err
}

// outputs returns the configuration's string outputs.
func (w *terraformWork) outputs(t testing.TB) map[string]string {
	t.Helper()
	cmd := exec.Command(w.bin, "-chdir="+w.dir, "output", "-json", "-no-color")
	cmd.Env = w.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("terraform output -json: %v\n%s", err, stderr.String())
	}
	var raw map[string]struct {
		Value any `json:"value"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("terraform output -json: %v\n%s", err, b)
	}
	outs := map[string]string{}
	for name, o := range raw {
		if s, ok := o.Value.(string); ok {
			outs[name] = s
		}
	}
	return outs
}

// lineLogger logs what is written to it, a line at a time.
type lineLogger struct {
	t       testing.TB
	prefix  string
	mu      sync.Mutex
	partial []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.logLine(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.logLine(l.partial)
		l.partial = nil
	}
}

func (l *lineLogger) logLine(line []byte) {
	if s := strings.TrimRight(string(line), "\r"); strings.TrimSpace(s) != "" {
		l.t.Log(l.prefix + s)
	}
}
