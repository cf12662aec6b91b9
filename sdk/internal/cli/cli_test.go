package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// commandPaths lists every command of the tree, as argument lists.
func commandPaths() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Hidden || strings.HasPrefix(sub.Name(), "__") {
				continue
			}
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(newRoot(&app{}), nil)
	return out
}

// TestHelp runs --help of every command: each has examples, and its text is
// the golden file's.
func TestHelp(t *testing.T) {
	t.Parallel()
	paths := commandPaths()
	if len(paths) < 60 {
		t.Fatalf("only %d commands; want one per RPC", len(paths))
	}
	for _, path := range paths {
		name := "carbide"
		if len(path) > 0 {
			name += "_" + strings.Join(path, "_")
		}
		r := cli(t, nil, "", append(path, "--help")...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, r.code, r.stderr)
			continue
		}
		if !strings.Contains(r.stdout, "Examples:\n") {
			t.Errorf("%s --help has no examples", strings.ReplaceAll(name, "_", " "))
		}
		golden(t, filepath.Join("help", name+".txt"), r.stdout)
	}
}

// TestEveryRPCHasACommand checks that each unary RPC of the services has a
// command, and that the commands the documentation names exist.
func TestEveryRPCHasACommand(t *testing.T) {
	t.Parallel()
	have := map[string]bool{}
	for _, p := range commandPaths() {
		have[strings.Join(p, " ")] = true
	}
	for _, sd := range services {
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			if md.IsStreamingServer() || md.IsStreamingClient() {
				continue
			}
			s := newSpec(md)
			if !have[s.noun+" "+s.verb] {
				t.Errorf("%s has no command %q", md.FullName(), s.noun+" "+s.verb)
			}
		}
	}
	for _, want := range []string{"machine list", "machine get", "machine create", "machine update", "machine wait",
		"machine list-transitions", "segment get", "segment create", "address list-leases", "image create",
		"instance create", "instance delete", "bmc set", "audit list", "watch", "config set-context",
		"config use-context", "config get-contexts", "config current-context", "config view", "completion bash"} {
		if !have[want] {
			t.Errorf("no command %q", want)
		}
	}
}

// TestCompletion loads the bash completion script into bash, and checks
// the zsh and fish scripts are produced.
func TestCompletion(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not found (apt-get install bash)")
	}
	out, err := exec.Command(bash, "-c", "source <('"+bins.carbide+"' completion bash) && complete -p carbide").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "carbide") {
		t.Errorf("bash could not load the completion script: %v\n%s", err, out)
	}
	for shell, want := range map[string]string{"zsh": "#compdef carbide", "fish": "complete -c carbide"} {
		r := cli(t, nil, "", "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, script without %q", shell, r.code, want)
		}
	}
}

// TestOutput checks table, wide, JSON and YAML output against golden
// files, on resources created through the CLI on a real API.
func TestOutput(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	n := normalizer{}
	const password = "s3cret-bmc-password"
	testsecret.Register(t, password)
	steps := []struct {
		name  string
		stdin string
		args  []string
	}{
		{"segment_create.txt", "", []string{"segment", "create", "--name", "rack1", "--prefix", "10.0.1.0/24", "--gateway", "10.0.1.1",
			"--dns-server", "10.0.0.53", "--domain", "rack1.example.net", "--range", "10.0.1.100-10.0.1.200", "--reservation", "52:54:00:00:00:09=10.0.1.9"}},
		{"segment_get.json", "", []string{"segment", "get", "rack1", "-o", "json"}},
		{"segment_list_wide.txt", "", []string{"segment", "list", "-o", "wide"}},
		{"segment_list.yaml", "", []string{"segment", "list", "-o", "yaml"}},
		{"segment_update.txt", "", []string{"segment", "update", "rack1", "--mtu", "9000", "-o", "wide"}},
		{"machine_create.txt", "", []string{"machine", "create", "--hostname", "node1", "--mac", "52:54:00:00:00:01", "--label", "rack=r1"}},
		{"machine_update.txt", "", []string{"machine", "update", "node1", "--maintenance"}},
		{"machine_list_wide.txt", "", []string{"machine", "list", "--label", "rack=r1", "-o", "wide"}},
		{"machine_get.json", "", []string{"machine", "get", "node1", "-o", "json"}},
		{"machine_list_transitions.txt", "", []string{"machine", "list-transitions", "node1"}},
		{"bmc_set.txt", password + "\n", []string{"bmc", "set", "node1", "--address", "127.0.0.1", "--protocol", "ipmi", "--username", "admin", "--password", "-"}},
		{"bmc_get.json", "", []string{"bmc", "get", "node1", "-o", "json"}},
		{"image_create.txt", "", []string{"image", "create", "--name", "debian", "--version", "12", "--architecture", "amd64", "--firmware", "uefi",
			"--disk-format", "raw", "--disk-file-url", "http://127.0.0.1:1/debian-12.raw", "--disk-file-sha256", strings.Repeat("0", 64)}},
		{"image_get.yaml", "", []string{"image", "get", "debian:12", "-o", "yaml"}},
		{"image_list.txt", "", []string{"image", "list"}},
	}
	for _, s := range steps {
		r := cli(t, a.env, s.stdin, s.args...)
		if r.code != 0 {
			t.Fatalf("carbide %s: exit %d\n%s%s", strings.Join(s.args, " "), r.code, r.stdout, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, password) {
			t.Errorf("carbide %s printed the BMC password", strings.Join(s.args, " "))
		}
		golden(t, filepath.Join("output", s.name), n.apply(r.stdout, strings.HasSuffix(s.name, ".txt")))
	}
	// The JSON of a list is an array of the resources.
	var segs []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, a.env, "segment", "list", "-o", "json")), &segs); err != nil || len(segs) != 1 || segs[0]["name"] != "rack1" {
		t.Errorf("segment list -o json = %v (%v), want an array with rack1", segs, err)
	}
	// config view never shows a token.
	mustCLI(t, a.env, "config", "set-context", "tok", "--endpoint", "https://127.0.0.1:1", "--token", "header.payload.signature")
	if out := mustCLI(t, a.env, "config", "view"); strings.Contains(out, "payload") || !strings.Contains(out, "<hidden>") {
		t.Errorf("config view shows the token:\n%s", out)
	}
}

// TestExitCodes checks the exit code of each kind of failure.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	mustCLI(t, a.env, "machine", "create", "--hostname", "node1", "--mac", "52:54:00:00:00:01")
	mustCLI(t, a.env, "machine", "create", "--hostname", "twin", "--mac", "52:54:00:00:00:02")
	mustCLI(t, a.env, "machine", "create", "--hostname", "twin", "--mac", "52:54:00:00:00:03")
	for _, version := range []string{"11", "12"} {
		mustCLI(t, a.env, "image", "create", "--name", "debian", "--version", version, "--architecture", "amd64", "--firmware", "bios",
			"--disk-format", "raw", "--disk-file-url", "http://127.0.0.1:1/debian.raw", "--disk-file-sha256", strings.Repeat("0", 64))
	}
	noAuth := []string{"CARBIDE_ENDPOINT=https://" + a.addr, "CARBIDE_CA_CERT=" + filepath.Join(a.pki, "ca.crt")}
	closed := append([]string{}, a.env...)
	closed = append(closed, "CARBIDE_ENDPOINT=https://127.0.0.1:1")
	tests := map[string]struct {
		env  []string
		args []string
		want int
		msg  string
	}{
		"unknown command":    {a.env, []string{"machine", "bogus"}, ExitUsage, `unknown command "bogus"`},
		"unknown flag":       {a.env, []string{"machine", "list", "--bogus"}, ExitUsage, "unknown flag: --bogus"},
		"bad enum":           {a.env, []string{"machine", "list", "--state", "sleeping"}, ExitUsage, "want one of discovered, inventoried, ready"},
		"too many arguments": {a.env, []string{"machine", "get", "a", "b"}, ExitUsage, "takes one argument"},
		"bad output format":  {a.env, []string{"machine", "list", "-o", "xml"}, ExitUsage, "-o xml"},
		"nothing to update":  {a.env, []string{"machine", "update", "node1"}, ExitUsage, "nothing to update"},
		"unreadable file":    {a.env, []string{"segment", "create", "-f", "/nonexistent.yaml"}, ExitError, "read the request"},
		"no endpoint":        {nil, []string{"machine", "list"}, ExitUsage, "no endpoint"},
		"name not found":     {a.env, []string{"machine", "get", "nope"}, ExitNotFound, `no machine is named "nope"`},
		"ambiguous name":     {a.env, []string{"image", "get", "debian"}, ExitConflict, `"debian" names 2 images; give name:version or the id`},
		"shared hostname":    {a.env, []string{"machine", "get", "twin"}, ExitConflict, `"twin" names 2 machines; give the id`},
		"not a hostname":     {a.env, []string{"machine", "get", "Node_1"}, ExitNotFound, `no machine is named "Node_1"`},
		"no such instance":   {a.env, []string{"instance", "get", "web1"}, ExitNotFound, `no instance is named "web1"`},
		"not an instance":    {a.env, []string{"instance", "get", "Web_1"}, ExitNotFound, `no instance is named "Web_1"`},
		"id not found":       {a.env, []string{"segment", "get", "00000000-0000-4000-8000-000000000000"}, ExitNotFound, "not_found"},
		"already exists":     {a.env, []string{"machine", "create", "--mac", "52:54:00:00:00:01"}, ExitConflict, "already_exists"},
		"invalid argument":   {a.env, []string{"segment", "create", "--name", "Bad Name", "--prefix", "10.0.2.0/24"}, ExitInvalid, "segment.name"},
		"unauthenticated":    {noAuth, []string{"machine", "list"}, ExitPermission, "unauthenticated"},
		"unavailable":        {closed, []string{"machine", "list"}, ExitUnavailable, "unavailable"},
		"wait timeout":       {a.env, []string{"machine", "wait", "node1", "--state", "ready", "--timeout", "1s"}, ExitWaitTimeout, "gave up after 1s"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := cli(t, tc.env, "", tc.args...)
			if r.code != tc.want || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("carbide %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want, tc.msg)
			}
		})
	}
}

// TestProtoDocsGenerated checks that protodocs_gen.go holds the proto
// files' current comments (go generate ./sdk/internal/cli rewrites it).
func TestProtoDocsGenerated(t *testing.T) {
	t.Parallel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "protodocs_gen.go")
	cmd := exec.Command("go", "run", "./gendocs", "-proto", filepath.Join(root, "proto"), "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./gendocs: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("protodocs_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(have) {
		t.Error("protodocs_gen.go is out of date with the proto files: run go generate ./sdk/internal/cli")
	}
	for _, name := range []protoreflect.FullName{"carbide.machine.v1.MachineService.ListMachines", "carbide.machine.v1.ListMachinesRequest.states", "carbide.instance.v1.Selector.min_cpus"} {
		if protoDocs[name] == "" {
			t.Errorf("no comment for %s", name)
		}
	}
}

// TestEndToEnd runs testdata/e2e.sh: a segment, a machine, an image and an
// instance that runs and is released, with the CLI alone.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not found (apt-get install bash)")
	}
	cmd := exec.Command(bash, filepath.Join("testdata", "e2e.sh"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"CARBIDE=" + bins.carbide, "CARBIDE_API=" + bins.api, "DATA_DIR=" + a.dataDir,
		"ENDPOINT=https://" + a.addr, "CARBIDE_CONFIG=" + filepath.Join(t.TempDir(), "config.yaml"),
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "OK") {
		t.Fatalf("e2e.sh: %v\n%s", err, out)
	}
	t.Logf("e2e.sh:\n%s", out)
}

// TestWatch streams changes with carbide watch -o json while another
// command creates a segment.
func TestWatch(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	cmd := exec.Command(bins.carbide, "watch", "--kind", "segment", "-o", "json")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}, a.env...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The watch may start after the segment is created: it then sees it
	// with --existing only, so create segments until one shows.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; !strings.Contains(out.String(), `"EVENT_TYPE_CREATED"`); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no created event within 30s; watch printed:\n%s", out.String())
		}
		mustCLI(t, a.env, "segment", "create", "--name", fmt.Sprintf("w%d", i), "--prefix", fmt.Sprintf("10.9.%d.0/24", i))
		time.Sleep(200 * time.Millisecond)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	var ev struct {
		Revision string `json:"revision"`
		Type     string `json:"type"`
		Kind     string `json:"kind"`
		Segment  struct {
			Name string `json:"name"`
		} `json:"segment"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Kind != "RESOURCE_KIND_SEGMENT" || !strings.HasPrefix(ev.Segment.Name, "w") {
		t.Errorf("first line of carbide watch -o json = %q (%v), want a segment event", line, err)
	}
}

// TestConnection authenticates with a token command instead of a client
// certificate, and speaks gRPC and gRPC-Web as well as Connect.
func TestConnection(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	mustCLI(t, a.env, "segment", "create", "--name", "rack1", "--prefix", "10.0.1.0/24")
	tokenCommand := fmt.Sprintf("'%s' dev-token --data-dir '%s'", bins.api, a.dataDir)
	env := []string{"CARBIDE_ENDPOINT=https://" + a.addr, "CARBIDE_CA_CERT=" + filepath.Join(a.pki, "ca.crt")}
	for _, protocol := range []string{"connect", "grpc", "grpc-web"} {
		out := mustCLI(t, env, "segment", "get", "rack1", "--token-command", tokenCommand, "--protocol", protocol)
		if !strings.Contains(out, "10.0.1.0/24") {
			t.Errorf("segment get over %s with a token command printed:\n%s", protocol, out)
		}
	}
	// A context with the token command, chosen with --context.
	mustCLI(t, a.env, "config", "set-context", "tok", "--endpoint", "https://"+a.addr,
		"--ca-cert", filepath.Join(a.pki, "ca.crt"), "--token-command", tokenCommand)
	if out := mustCLI(t, a.env, "--context", "tok", "segment", "list"); !strings.Contains(out, "rack1") {
		t.Errorf("segment list in context tok printed:\n%s", out)
	}
	if out := mustCLI(t, a.env, "config", "get-contexts"); !strings.Contains(out, "tok") || !strings.Contains(out, "token command") {
		t.Errorf("config get-contexts printed:\n%s", out)
	}
	mustCLI(t, a.env, "config", "use-context", "tok")
	if out := mustCLI(t, a.env, "config", "current-context"); strings.TrimSpace(out) != "tok" {
		t.Errorf("current context after use-context tok: %q", out)
	}
	if r := cli(t, a.env, "", "config", "use-context", "nope"); r.code != ExitNotFound {
		t.Errorf("use-context of a missing context: exit %d, want %d", r.code, ExitNotFound)
	}
}
