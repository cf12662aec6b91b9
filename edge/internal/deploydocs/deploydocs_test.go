package deploydocs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
	"gopkg.in/yaml.v2"
)

// daemons are the packages of the programs docs/deploy/systemd has a unit
// for, by unit name, with the prefix of their environment variables.
var daemons = map[string]struct{ pkg, envPrefix string }{
	"carbide-api":  {"github.com/carbide-dev/carbide/backend/cmd/carbide-api", "CARBIDE_"},
	"carbide-dhcp": {"github.com/carbide-dev/carbide/edge/cmd/carbide-dhcp", "CARBIDE_DHCP_"},
	"carbide-pxe":  {"github.com/carbide-dev/carbide/edge/cmd/carbide-pxe", "CARBIDE_PXE_"},
	"carbide-dns":  {"github.com/carbide-dev/carbide/edge/cmd/carbide-dns", "CARBIDE_DNS_"},
	"carbide-bmc":  {"github.com/carbide-dev/carbide/edge/cmd/carbide-bmc", "CARBIDE_BMC_"},
}

var (
	// root is the repository's top directory.
	root string
	// bins are the binaries TestMain builds, by daemon name.
	bins = map[string]string{}
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	var err error
	if root, err = repoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "carbide-deploydocs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for name, d := range daemons {
		out := filepath.Join(dir, name)
		bins[name] = out
		wg.Go(func() {
			cmd := exec.CommandContext(ctx, "go", "build", "-o", out, d.pkg)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("go build %s: %v\n%s", d.pkg, err, b))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n(these tests build binaries of several modules: run them inside the go.work workspace)\n", err)
		return 1
	}
	return m.Run()
}

// repoRoot is the directory of the go.work file of the workspace.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOWORK: %w", err)
	}
	work := strings.TrimSpace(string(out))
	if work == "" || work == "off" {
		return "", errors.New("no go.work workspace: run the tests from the repository, without GOWORK=off")
	}
	return filepath.Dir(work), nil
}

// unit is what the tests read from a systemd unit of docs/deploy/systemd.
type unit struct {
	name, path string
	// exec is ExecStart's command line, split at spaces.
	exec []string
	// env are the CARBIDE_* variables the unit's comments give as
	// examples of its environment file, with their values.
	env map[string]string
}

var envExample = regexp.MustCompile(`^#\s+(CARBIDE_[A-Z0-9_]+)=(\S+)$`)

// readUnits reads every unit of docs/deploy/systemd.
func readUnits(t *testing.T) []unit {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "docs", "deploy", "systemd", "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	var units []unit
	for _, p := range paths {
		u := unit{name: strings.TrimSuffix(filepath.Base(p), ".service"), path: p, env: map[string]string{}}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var logical []string
		var cont strings.Builder
		for line := range strings.SplitSeq(string(b), "\n") {
			if s, ok := strings.CutSuffix(line, `\`); ok {
				cont.WriteString(s + " ")
				continue
			}
			cont.WriteString(line)
			logical = append(logical, cont.String())
			cont.Reset()
		}
		for _, line := range logical {
			if m := envExample.FindStringSubmatch(line); m != nil {
				u.env[m[1]] = m[2]
			}
			if cmd, ok := strings.CutPrefix(line, "ExecStart="); ok {
				if strings.ContainsAny(cmd, `"'`) {
					t.Fatalf("%s: ExecStart has quotes, which this test does not parse: keep its words plain", p)
				}
				u.exec = strings.Fields(cmd)
			}
		}
		if len(u.exec) == 0 {
			t.Fatalf("%s has no ExecStart", p)
		}
		units = append(units, u)
	}
	return units
}

// specifiers replaces the systemd specifiers the units use; any other one
// fails the test, so that a new one is given a value here first.
func specifiers(t *testing.T, u unit, args []string, credentials string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "%d", credentials)
		a = strings.ReplaceAll(a, "%H", "host1.carbide.example")
		if strings.Contains(a, "%") {
			t.Fatalf("%s: argument %q has a systemd specifier this test does not know", u.path, args[i])
		}
		out[i] = a
	}
	return out
}

var helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// flagsOf runs bin --help and returns the names of its flags.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	cmd := exec.Command(bin, "--help")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("%s --help listed %d flags; did its format change?\n%s", bin, len(flags), out)
	}
	return flags
}

// TestUnitsCoverEveryDaemon checks that each daemon has exactly one unit,
// which starts it.
func TestUnitsCoverEveryDaemon(t *testing.T) {
	units := readUnits(t)
	var got []string
	for _, u := range units {
		got = append(got, u.name)
		if want := "/usr/local/bin/" + u.name; u.exec[0] != want {
			t.Errorf("%s runs %s, want %s", u.path, u.exec[0], want)
		}
	}
	var want []string
	for name := range daemons {
		want = append(want, name)
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("units in docs/deploy/systemd: %v, want one per daemon: %v", got, want)
	}
}

// TestUnitFlags checks every flag of every unit's ExecStart against its
// daemon: the flag exists (it is in --help), and the whole command line
// parses (the daemon run with it and --help exits 0; a flag it does not
// know, or a value that does not parse, makes it exit 1). The
// environment-file examples in the units' comments are checked the same
// way: each names a flag, and the values parse.
func TestUnitFlags(t *testing.T) {
	for _, u := range readUnits(t) {
		t.Run(u.name, func(t *testing.T) {
			d, ok := daemons[u.name]
			if !ok {
				t.Fatalf("%s: no daemon of that name", u.path)
			}
			bin := bins[u.name]
			flags := flagsOf(t, bin)
			args := specifiers(t, u, u.exec[1:], t.TempDir())
			for _, a := range args {
				if !strings.HasPrefix(a, "-") {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !flags[name] {
					t.Errorf("%s passes %s, which %s does not have", u.path, a, u.name)
				}
			}
			run := func(env []string, args ...string) {
				t.Helper()
				cmd := exec.Command(bin, append(args, "--help")...)
				cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s %s --help (env %v): %v; the unit's settings do not parse:\n%s",
						u.name, strings.Join(args, " "), env, err, lastLines(string(out), 3))
				}
			}
			run(nil, args...)

			var env []string
			for name, value := range u.env {
				flag, ok := strings.CutPrefix(name, d.envPrefix)
				flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
				if !ok || !flags[flag] {
					t.Errorf("%s names %s, which is no flag of %s (its variables are %s<FLAG>)", u.path, name, u.name, d.envPrefix)
					continue
				}
				env = append(env, name+"="+value)
			}
			if len(u.env) == 0 {
				t.Errorf("%s gives no example of its environment file", u.path)
			}
			run(env)
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// need returns the path of program, and fails the test naming the Debian
// package to install when it is missing.
func need(t *testing.T, program, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s is not installed: apt-get install %s", program, pkg)
	}
	return p
}

// TestSystemdVerify runs systemd-analyze verify on the units, with
// ExecStart pointing at the built binaries. It warns without failing about
// an unknown setting or a bad value, so any output fails the test.
func TestSystemdVerify(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	var files []string
	for _, u := range readUnits(t) {
		b, err := os.ReadFile(u.path)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), "ExecStart="+u.exec[0], "ExecStart="+bins[u.name], 1)
		f := filepath.Join(dir, filepath.Base(u.path))
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, files...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestHAProxyConfig checks docs/deploy/haproxy.cfg with haproxy -c, and
// that its API servers use the port of the API's unit.
func TestHAProxyConfig(t *testing.T) {
	haproxy := need(t, "haproxy", "haproxy")
	cfg := filepath.Join(root, "docs", "deploy", "haproxy.cfg")
	if out, err := exec.Command(haproxy, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c -f %s: %v\n%s", cfg, err, out)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apiPort := listenPort(t, unitNamed(t, "carbide-api"), "listen")
	servers := regexp.MustCompile(`(?m)^\s+server api\d+ \S+:(\d+)`).FindAllStringSubmatch(string(b), -1)
	if len(servers) < 2 {
		t.Errorf("%s has %d API servers, want two or more", cfg, len(servers))
	}
	for _, s := range servers {
		if s[1] != apiPort {
			t.Errorf("%s: %s, but carbide-api.service listens on port %s", cfg, strings.TrimSpace(s[0]), apiPort)
		}
	}
}

func unitNamed(t *testing.T, name string) unit {
	t.Helper()
	for _, u := range readUnits(t) {
		if u.name == name {
			return u
		}
	}
	t.Fatalf("no unit %s", name)
	return unit{}
}

// listenPort is the port of the unit's --<flag> host:port.
func listenPort(t *testing.T, u unit, flag string) string {
	t.Helper()
	for i, a := range u.exec {
		if a == "--"+flag && i+1 < len(u.exec) {
			_, port, err := net.SplitHostPort(u.exec[i+1])
			if err != nil {
				t.Fatalf("%s: --%s %s: %v", u.path, flag, u.exec[i+1], err)
			}
			return port
		}
	}
	t.Fatalf("%s passes no --%s", u.path, flag)
	return ""
}

// TestPrometheusConfig checks docs/deploy/prometheus.yml and the rules it
// loads (alerts.yml) with promtool, and that it scrapes every daemon on
// the port its unit serves metrics on.
func TestPrometheusConfig(t *testing.T) {
	promtool := need(t, "promtool", "prometheus")
	cfg := filepath.Join(root, "docs", "deploy", "prometheus.yml")
	if out, err := exec.Command(promtool, "check", "config", cfg).CombinedOutput(); err != nil {
		t.Errorf("promtool check config %s: %v\n%s", cfg, err, out)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	jobs := map[string][]string{}
	for _, sc := range c.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], s.Targets...)
		}
	}
	for _, u := range readUnits(t) {
		flag := "metrics-listen"
		if u.name == "carbide-api" {
			flag = "listen"
		}
		port := listenPort(t, u, flag)
		targets := jobs[u.name]
		if len(targets) == 0 {
			t.Errorf("%s has no job %s", cfg, u.name)
		}
		for _, target := range targets {
			if _, p, err := net.SplitHostPort(target); err != nil || p != port {
				t.Errorf("%s: job %s scrapes %s, but its unit serves metrics on port %s (--%s)", cfg, u.name, target, port, flag)
			}
		}
	}
}

// TestPatroniConfig checks docs/deploy/patroni.yml with patroni
// --validate-config. The validator also refuses listen addresses whose
// port is in use on this machine, which says nothing about the file: the
// copy it reads listens on free loopback ports instead.
func TestPatroniConfig(t *testing.T) {
	patroni := need(t, "patroni", "patroni")
	b, err := os.ReadFile(filepath.Join(root, "docs", "deploy", "patroni.yml"))
	if err != nil {
		t.Fatal(err)
	}
	listen := regexp.MustCompile(`(?m)^(\s+listen: )\S+$`)
	if n := len(listen.FindAll(b, -1)); n != 2 {
		t.Fatalf("patroni.yml has %d listen addresses, want 2 (restapi and postgresql)", n)
	}
	s := listen.ReplaceAllStringFunc(string(b), func(line string) string {
		m := listen.FindStringSubmatch(line)
		return m[1] + "127.0.0.1:" + strconv.Itoa(freePort(t))
	})
	f := filepath.Join(t.TempDir(), "patroni.yml")
	if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(patroni, "--validate-config", f).CombinedOutput(); err != nil {
		t.Errorf("patroni --validate-config docs/deploy/patroni.yml: %v\n%s", err, out)
	}
	if !strings.Contains(string(b), "listen: 10.0.0.21:8008") {
		t.Error("patroni.yml's REST API does not listen on port 8008, which haproxy.cfg's check asks")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMetricNames checks that every carbide_* metric the alert rules, the
// scrape configuration and docs/monitoring.md name is one the code
// registers (histograms with their _bucket, _sum and _count series).
func TestMetricNames(t *testing.T) {
	registered, histograms := registeredMetrics(t)
	if len(registered) < 20 {
		t.Fatalf("found %d metric registrations in the code; did their form change?", len(registered))
	}
	name := regexp.MustCompile(`\bcarbide_[a-z0-9_]+\b`)
	for _, doc := range []string{"docs/deploy/alerts.yml", "docs/deploy/prometheus.yml", "docs/monitoring.md"} {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, m := range name.FindAllString(string(b), -1) {
			seen++
			if registered[m] {
				continue
			}
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(m, suffix); ok && histograms[s] {
					base = ""
				}
			}
			if base != "" {
				t.Errorf("%s names %s, which no code registers", doc, m)
			}
		}
		if doc != "docs/deploy/prometheus.yml" && seen == 0 {
			t.Errorf("%s names no metric", doc)
		}
	}
}

// registeredMetrics returns the names of the carbide_* metrics that the
// non-test Go files of backend and edge register: the Name of a
// prometheus *Opts literal, or the first argument of prometheus.NewDesc
// or daemon.NewTimeoutCounter. histograms holds those of HistogramOpts.
func registeredMetrics(t *testing.T) (registered, histograms map[string]bool) {
	t.Helper()
	registered, histograms = map[string]bool{}, map[string]bool{}
	fset := token.NewFileSet()
	for _, module := range []string{"backend", "edge"} {
		err := filepath.WalkDir(filepath.Join(root, module), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CompositeLit:
					sel, ok := n.Type.(*ast.SelectorExpr)
					if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
						return true
					}
					for _, e := range n.Elts {
						kv, ok := e.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "Name" {
							if s, ok := metricLiteral(kv.Value); ok {
								registered[s] = true
								if sel.Sel.Name == "HistogramOpts" {
									histograms[s] = true
								}
							}
						}
					}
				case *ast.CallExpr:
					var fn string
					switch f := n.Fun.(type) {
					case *ast.SelectorExpr:
						fn = f.Sel.Name
					case *ast.Ident:
						fn = f.Name
					}
					if (fn == "NewDesc" || fn == "NewTimeoutCounter") && len(n.Args) > 0 {
						if s, ok := metricLiteral(n.Args[0]); ok {
							registered[s] = true
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return registered, histograms
}

func metricLiteral(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil || !strings.HasPrefix(s, "carbide_") {
		return "", false
	}
	return s, true
}

// TestRulesAreTheAsked checks that the alert rules cover what the
// monitoring docs promise: a full DHCP pool, failing BMC operations,
// carbide-dns's Watch lag and the API's error rate.
func TestRulesAreTheAsked(t *testing.T) {
	f, err := os.Open(filepath.Join(root, "docs", "deploy", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.NewDecoder(bufio.NewReader(f)).Decode(&rules); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs[r.Alert] = r.Expr
		}
	}
	for alert, metric := range map[string]string{
		"CarbideDHCPPoolNearlyFull":   "carbide_ipam_pool_leased",
		"CarbideBMCOperationsFailing": "carbide_bmc_operations_total",
		"CarbideDNSWatchLagging":      "carbide_dns_stream_lag_seconds",
		"CarbideAPIErrorRate":         "carbide_rpc_requests_total",
	} {
		if !strings.Contains(exprs[alert], metric) {
			t.Errorf("alerts.yml: alert %s is missing or does not use %s", alert, metric)
		}
	}
}

// TestHAProxyHealthCheck runs HAProxy with docs/deploy/haproxy.cfg, its
// addresses moved to loopback ports, in front of a real carbide-api and
// two ports where nothing listens: the API's server must come up through
// the gRPC health check, the others stay down, a health call through the
// frontend reaches the API, and the API's server goes down once the API
// stops.
func TestHAProxyHealthCheck(t *testing.T) {
	haproxy := need(t, "haproxy", "haproxy")
	dataDir := t.TempDir()
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	api := exec.Command(bins["carbide-api"], "--dev", "--listen", apiAddr, "--data-dir", dataDir)
	api.Env = []string{"PATH=" + os.Getenv("PATH")}
	apiLog := &syncBuffer{}
	api.Stdout, api.Stderr = apiLog, apiLog
	if err := api.Start(); err != nil {
		t.Fatal(err)
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- api.Wait() }()
	t.Cleanup(func() {
		api.Process.Kill()
		<-apiDone
	})

	b, err := os.ReadFile(filepath.Join(root, "docs", "deploy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	front, stats := freePort(t), freePort(t)
	cfg := string(b)
	for old, repl := range map[string]string{
		"bind :1079":                   fmt.Sprintf("bind 127.0.0.1:%d", front),
		"bind :5000":                   fmt.Sprintf("bind 127.0.0.1:%d", freePort(t)),
		"bind 127.0.0.1:8404":          fmt.Sprintf("bind 127.0.0.1:%d", stats),
		"maxconn 20000":                "maxconn 1000", // the test's file limit may be low
		"10.0.0.11:1079":               apiAddr,
		"10.0.0.12:1079":               fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"10.0.0.13:1079":               fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"check port 8008":              fmt.Sprintf("check port %d", freePort(t)),
		"pg1 10.0.0.21:5432":           "pg1 127.0.0.1:1",
		"pg2 10.0.0.22:5432":           "pg2 127.0.0.1:1",
		"pg3 10.0.0.23:5432":           "pg3 127.0.0.1:1",
		"log stdout format raw local0": "log stdout format raw local0 notice",
	} {
		if !strings.Contains(cfg, old) {
			t.Fatalf("haproxy.cfg no longer has %q, which this test moves to loopback", old)
		}
		cfg = strings.ReplaceAll(cfg, old, repl)
	}
	if m := regexp.MustCompile(`\b\d+\.\d+\.\d+\.\d+\b`).FindAllString(cfg, -1); slices.ContainsFunc(m, func(a string) bool { return !strings.HasPrefix(a, "127.") }) {
		t.Fatalf("the test's copy of haproxy.cfg still names addresses beyond loopback: %v", m)
	}
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hap := exec.Command(haproxy, "-db", "-f", cfgFile)
	hapLog := &syncBuffer{}
	hap.Stdout, hap.Stderr = hapLog, hapLog
	if err := hap.Start(); err != nil {
		t.Fatal(err)
	}
	hapDone := make(chan error, 1)
	go func() { hapDone <- hap.Wait() }()
	t.Cleanup(func() {
		hap.Process.Kill()
		<-hapDone
	})

	statsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", stats)
	waitState := func(server, state string) {
		t.Helper()
		want := fmt.Sprintf(`haproxy_server_status{proxy="carbide-api",server=%q,state=%q} 1`, server, state)
		deadline := time.Now().Add(30 * time.Second)
		for {
			body, err := httpGet(statsURL)
			if err == nil && strings.Contains(body, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("HAProxy never reported %s %s (last error %v)\nHAProxy:\n%s\ncarbide-api:\n%s",
					server, state, err, lastLines(hapLog.String(), 10), lastLines(apiLog.String(), 10))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitState("api1", "UP")
	// The development PKI's keys must never show in the output.
	testsecret.RegisterFiles(t, filepath.Join(dataDir, "pki", "*.key"))
	waitState("api2", "DOWN")
	waitState("api3", "DOWN")

	// Through the frontend, TLS passes to the API, which presents its
	// own certificate.
	ca := filepath.Join(dataDir, "pki", "ca.crt")
	health, err := healthThrough(fmt.Sprintf("127.0.0.1:%d", front), ca)
	if err != nil {
		t.Fatalf("health check through HAProxy: %v", err)
	}
	if !strings.Contains(health, "SERVING_STATUS_SERVING") {
		t.Errorf("health check through HAProxy answered %s", health)
	}

	if err := api.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitState("api1", "DOWN")
}

// syncBuffer is a buffer that two processes' output may share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
