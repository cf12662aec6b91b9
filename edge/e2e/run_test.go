package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// TestRunLab runs the README's "Start it" and "Try it" steps with the
// binaries `make run` builds: carbide-run starts the API and the edge
// daemons on a lab network in a namespace of its own; `carbide-run lab`
// boots a machine of the virtual rack through its ipmi_sim BMC to Ready;
// the carbide CLI registers the Debian image and allocates the machine
// with --wait; ssh (from the namespace) logs into the instance with the
// key given; the CLI releases it. Then a Ctrl-C (SIGINT) to carbide-run
// must stop everything: no process it or the lab started is left, the
// lab command ends by itself, and the namespace with its bridge and tap
// devices is gone.
func TestRunLab(t *testing.T) {
	requireRoot(t)
	lookPaths(t, "ip", "qemu-system-x86_64")
	for prog, pkg := range map[string]string{"ipmi_sim": "openipmi", "ssh": "openssh-client", "ssh-keygen": "openssh-client"} {
		if _, err := findProgram(prog); err != nil {
			t.Fatalf("%s is not installed (apt-get install %s)", prog, pkg)
		}
	}
	img := findOSImage(t)
	artifacts := artifactsWith(t, map[string]string{osImageName: img.path})

	// What `make run` builds into bin/: carbide-run finds the daemons
	// next to itself.
	dir := filepath.Dir(bins.api)
	runBin, cli := filepath.Join(dir, "carbide-run"), filepath.Join(dir, "carbide")
	if err := buildAll(map[string]string{
		runBin:                            "github.com/carbide-dev/carbide/edge/cmd/carbide-run",
		filepath.Join(dir, "carbide-dns"): "github.com/carbide-dev/carbide/edge/cmd/carbide-dns",
		cli:                               "github.com/carbide-dev/carbide/sdk/cmd/carbide",
	}); err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	data := filepath.Join(work, "carbide-data")
	ns := nsPrefix + "run"
	listen := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	hostLinks := linkNames(t, "")

	// make run
	stack := startProc(t, nil, "carbide-run", runBin, "--data-dir", data, "--artifacts-dir", artifacts, "--netns", ns, "--listen", listen)
	stack.waitOutput(t, regexp.MustCompile(`carbide-run +\| Carbide is running`), 2*time.Minute)
	testsecret.RegisterFiles(t, filepath.Join(data, "pki", "*.key"))
	for _, name := range []string{"carbide-api", "carbide-dhcp", "carbide-pxe", "carbide-dns", "carbide-bmc"} {
		stack.waitOutput(t, regexp.MustCompile(`(?m)^`+name+` +\| `), 30*time.Second)
	}

	// make lab (one machine: two firmware boots under TCG would share
	// the two cores with everything else)
	lab := startProc(t, nil, "carbide-run lab", runBin, "lab", "--data-dir", data, "--machines", "1", "--accel", "tcg")
	lab.waitOutput(t, regexp.MustCompile(`all 1 machines are Ready`), 5*time.Minute)
	if !regexp.MustCompile(`lab-01 +52:54:00:79:00:01 +ready +10\.79\.0\.\d+ +Ready in \d`).MatchString(lab.out.String()) {
		t.Errorf("the live view shows no Ready line with the time it took:\n%s", lab.out.String())
	}

	// Try it: the CLI, as the README runs it.
	env := append(os.Environ(), "CARBIDE_CONFIG="+filepath.Join(work, "config.yaml"))
	carbide := func(timeout time.Duration, args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, args...)
		cmd.Env = env
		cmd.Stderr = new(strings.Builder)
		cmd.WaitDelay = time.Second
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		timer := time.AfterFunc(timeout, func() { _ = cmd.Process.Kill() })
		defer timer.Stop()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("carbide %s: %v\n%s%s\nlab:\n%s", strings.Join(args, " "), err, out, cmd.Stderr, tail(lab.out.String(), 10))
		}
		return string(out)
	}
	pki := filepath.Join(data, "pki")
	carbide(30*time.Second, "config", "set-context", "lab", "--endpoint", "https://"+listen, "--ca-cert", filepath.Join(pki, "ca.crt"),
		"--client-cert", filepath.Join(pki, "admin.crt"), "--client-key", filepath.Join(pki, "admin.key"))
	carbide(30*time.Second, "image", "create", "--name", "debian", "--version", "12", "--architecture", "amd64", "--firmware", "bios",
		"--disk-format", "raw", "--disk-compression", "zstd",
		"--disk-file-url", "http://10.79.0.1:8080/artifacts/"+osImageName, "--disk-file-sha256", img.sha256)
	key := filepath.Join(work, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	testsecret.RegisterFiles(t, key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	created := carbide(12*time.Minute, "instance", "create", "--hostname", "web1", "--image-id", "debian:12", "--selector-label", "rack=lab",
		"--ssh-authorized-key", strings.TrimSpace(string(pub)), "--wait", "--timeout", "11m", "-o", "json")
	var inst struct {
		State   string `json:"state"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(created), &inst); err != nil || inst.Address == "" {
		t.Fatalf("instance create printed %q (%v): want the instance with its address", created, err)
	}
	var hostname string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		out, err := exec.Command("ip", "netns", "exec", ns, "ssh", "-i", key, "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
			"debian@"+inst.Address, "hostname").Output()
		if hostname = strings.TrimSpace(string(out)); err == nil {
			break
		}
	}
	if hostname != "web1" {
		t.Errorf("ssh to the instance at %s printed host name %q, want web1", inst.Address, hostname)
	}
	carbide(6*time.Minute, "instance", "delete", "web1", "--wait", "--timeout", "5m")

	// Ctrl-C: everything stops, and nothing is left.
	nsPids, err := netnsPidsOf(ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(nsPids) < 7 { // the five components, radvd, ipmi_sim
		t.Errorf("%d processes in the lab namespace, want at least the five components, radvd and the BMC: %v", len(nsPids), nsPids)
	}
	nsLinks := linkNames(t, ns)
	if !nsLinks["br0"] || !nsLinks["labtap1"] {
		t.Errorf("the lab namespace has links %v, want br0 and labtap1", nsLinks)
	}
	stack.signal(t, syscall.SIGINT)
	if err := stack.wait(t, time.Minute); err != nil {
		t.Errorf("carbide-run exited with %v after Ctrl-C, want 0", err)
	}
	if !regexp.MustCompile(`carbide-run +\| stopped`).MatchString(stack.out.String()) {
		t.Errorf("carbide-run did not say it stopped:\n%s", tail(stack.out.String(), 20))
	}
	if err := lab.wait(t, 30*time.Second); err != nil { // it ends by itself when the stack is gone
		t.Errorf("the lab exited with %v when carbide-run stopped, want 0", err)
	}
	if _, err := os.Stat(filepath.Join(nsenter.Dir, ns)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("network namespace %s is left (%v)", ns, err)
	}
	for _, pid := range append(nsPids, stack.cmd.Process.Pid, lab.cmd.Process.Pid) {
		if alive(pid) {
			t.Errorf("process %d (%s) is still running", pid, comm(pid))
		}
	}
	if left := processesMentioning(data); len(left) > 0 {
		t.Errorf("processes using the data directory are left: %v", left)
	}
	for name := range linkNames(t, "") {
		if !hostLinks[name] && (nsLinks[name] || strings.HasPrefix(name, "labtap")) {
			t.Errorf("link %s is left in the host's namespace", name)
		}
	}
	if l, err := net.Listen("tcp", listen); err != nil {
		t.Errorf("the API's host address %s is still taken: %v", listen, err)
	} else {
		l.Close()
	}
}

// freeTCPPort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// linkNames returns the names of the network devices of namespace ns (the
// host's when empty).
func linkNames(t testing.TB, ns string) map[string]bool {
	t.Helper()
	args := []string{"-o", "link", "show"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out := ipCmd(t, args...)
	names := map[string]bool{}
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names[name] = true
		}
	}
	return names
}

// netnsPidsOf returns the processes running in namespace name.
func netnsPidsOf(name string) ([]int, error) {
	out, err := runIP("netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// processesMentioning lists the running processes whose command line
// holds s, as "pid comm".
func processesMentioning(s string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) && alive(pid) {
			found = append(found, fmt.Sprintf("%d %s", pid, comm(pid)))
		}
	}
	return found
}
