package scripttest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchDHCP runs a copy of scripts/bench-dhcp with args and env added to a
// minimal environment, as an unprivileged user when the test runs as root:
// a parameter the script wrongly accepted then stops at its root check
// instead of starting a benchmark.
func benchDHCP(t *testing.T, args []string, env ...string) (string, error) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "bench-dhcp"))
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is private to the test's user.
	dir, err := os.MkdirTemp("", "bench-dhcp-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "scripts", "bench-dhcp")
	if err := os.WriteFile(path, script, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Every BENCH_* variable the script reads is explained by --help and in
// the parameter table of docs/benchmarks.md.
func TestBenchDHCPDocumentsEveryVariable(t *testing.T) {
	root := repoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "scripts", "bench-dhcp"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	read := regexp.MustCompile(`\$\{(BENCH_[A-Z_]+)`).FindAllStringSubmatch(string(script), -1)
	var vars []string
	for _, m := range read {
		if !slices.Contains(vars, m[1]) {
			vars = append(vars, m[1])
		}
	}
	if len(vars) < 10 {
		t.Fatalf("found %d BENCH_* variables read by the script (%v), want at least 10: has the script changed how it reads them?", len(vars), vars)
	}
	help, err := benchDHCP(t, []string{"--help"})
	if err != nil {
		t.Fatalf("bench-dhcp --help: %v\n%s", err, help)
	}
	for _, v := range vars {
		if !regexp.MustCompile(`(?m)^\s*` + v + `\s`).MatchString(help) {
			t.Errorf("bench-dhcp --help does not explain %s", v)
		}
		if !strings.Contains(string(docs), "| `"+v+"` |") {
			t.Errorf("docs/benchmarks.md has no row for %s in its bench-dhcp parameter table", v)
		}
	}
}

// Parameters are checked before anything is set up, each with a message
// that names the variable and what it wants; valid ones get as far as the
// root check.
func TestBenchDHCPChecksParameters(t *testing.T) {
	smoke := []string{"BENCH_RATES=250", "BENCH_OVERLOAD=", "BENCH_RENEW=", "BENCH_DURATION=2"}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"renewals above the rate", []string{"BENCH_RENEW=100:80:30"}, "BENCH_RENEW: 100:80:30: want RATE:RENEW:RELEASE"},
		{"renewal step without release", []string{"BENCH_RENEW=100:50"}, "BENCH_RENEW: 100:50: want RATE:RENEW:RELEASE"},
		{"rate not a number", []string{"BENCH_RATES=250 fast"}, "BENCH_RATES, BENCH_OVERLOAD: fast is not a rate"},
		{"overload not a number", []string{"BENCH_OVERLOAD=lots"}, "BENCH_RATES, BENCH_OVERLOAD: lots is not a rate"},
		{"overload on the ladder", []string{"BENCH_RATES=250 1000", "BENCH_OVERLOAD=1000"}, "BENCH_OVERLOAD=1000 is also a step of BENCH_RATES"},
		{"more clients than the pool", []string{"BENCH_CLIENTS=61185"}, "BENCH_CLIENTS=61185: want 1 to 61184"},
		{"unknown server", []string{"BENCH_SERVERS=carbide-dhcp kea"}, "BENCH_SERVERS: unknown server kea"},
		{"no server", []string{"BENCH_SERVERS="}, "BENCH_SERVERS is empty"},
		{"no step", []string{"BENCH_RATES=", "BENCH_OVERLOAD=", "BENCH_RENEW="}, "no step to run"},
		{"durability not a boolean", []string{"BENCH_PG_DURABLE=yes"}, "BENCH_PG_DURABLE=yes: want true or false"},
		{"CPU list", []string{"BENCH_SERVER_CPUS=0x1"}, "0x1 is not a CPU list"},
		{"profiling not a boolean", []string{"BENCH_PROFILE=yes"}, "BENCH_PROFILE=yes: want true or false"},
		{"the smoke run of --help", smoke, "run as root"},
		{"the smoke run, profiled", append(smoke, "BENCH_PROFILE=true"), "run as root"},
		{"not pinned, fsync off", append(smoke, "BENCH_SERVER_CPUS=", "BENCH_CLIENT_CPUS=", "BENCH_PG_DURABLE=false"), "run as root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := benchDHCP(t, nil, tc.env...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("bench-dhcp with %v: %v, want exit status 1; output:\n%s", tc.env, err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("bench-dhcp with %v says:\n%s\nwant it to say %q", tc.env, out, tc.want)
			}
		})
	}
}
