package bmcsim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func startRedfish(t *testing.T, m Machine) *Redfish {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := StartRedfish(ctx, RedfishConfig{Password: "rf-pw", Systems: map[string]Machine{"1": m}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return r
}

type rfClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (c rfClient) do(method, path, body string, auth func(*http.Request)) (int, http.Header, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &v); err != nil {
			c.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, resp.Header, v
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func token(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("X-Auth-Token", tok) }
}

func TestRedfishProtocol(t *testing.T) {
	t.Parallel()
	m := &MemoryMachine{}
	r := startRedfish(t, m)
	c := rfClient{t: t, base: r.URL(), c: httpsClient()}

	code, _, root := c.do("GET", "/redfish/v1/", "", nil)
	if code != 200 || root["RedfishVersion"] == nil {
		t.Fatalf("service root: %d %v", code, root)
	}
	if code, _, _ := c.do("GET", "/redfish/v1/Systems", "", nil); code != 401 {
		t.Errorf("systems without credentials: %d, want 401", code)
	}
	if code, _, _ := c.do("GET", "/redfish/v1/Systems", "", basic("admin", "wrong")); code != 401 {
		t.Errorf("systems with a wrong password: %d, want 401", code)
	}
	if code, _, _ := c.do("POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"wrong"}`, nil); code != 401 {
		t.Errorf("session with a wrong password: %d, want 401", code)
	}
	code, _, coll := c.do("GET", "/redfish/v1/Systems", "", basic("admin", "rf-pw"))
	if code != 200 || coll["Members@odata.count"] != 1.0 {
		t.Fatalf("systems: %d %v", code, coll)
	}

	code, h, _ := c.do("POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"rf-pw"}`, nil)
	tok, loc := h.Get("X-Auth-Token"), h.Get("Location")
	if code != 201 || tok == "" || loc == "" {
		t.Fatalf("create session: %d token %q location %q", code, tok, loc)
	}
	code, _, sys := c.do("GET", "/redfish/v1/Systems/1", "", token(tok))
	if code != 200 || sys["PowerState"] != "Off" {
		t.Fatalf("system: %d %v", code, sys)
	}
	target := sys["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)["target"].(string)
	for _, rt := range []string{"On", "ForceRestart", "GracefulRestart", "PowerCycle", "GracefulShutdown", "On", "ForceOff"} {
		if code, _, body := c.do("POST", target, `{"ResetType":"`+rt+`"}`, token(tok)); code != 204 {
			t.Fatalf("reset %s: %d %v", rt, code, body)
		}
	}
	if code, _, _ := c.do("POST", target, `{"ResetType":"Nmi"}`, token(tok)); code != 400 {
		t.Errorf("reset Nmi: %d, want 400", code)
	}
	if code, _, _ := c.do("PATCH", "/redfish/v1/Systems/1", `{"Boot":{"BootSourceOverrideTarget":"Floppy"}}`, token(tok)); code != 400 {
		t.Errorf("boot override Floppy: %d, want 400", code)
	}
	code, _, sys = c.do("PATCH", "/redfish/v1/Systems/1",
		`{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"UEFI"}}`, token(tok))
	if code != 200 || sys["Boot"].(map[string]any)["BootSourceOverrideTarget"] != "Pxe" {
		t.Fatalf("boot override: %d %v", code, sys)
	}
	if got, want := m.Boot(), (Boot{Target: "Pxe", Enabled: "Once", Mode: "UEFI"}); got != want {
		t.Errorf("machine boot = %+v, want %+v", got, want)
	}
	// Powering on uses up the one-time override.
	c.do("POST", target, `{"ResetType":"On"}`, token(tok))
	_, _, sys = c.do("GET", "/redfish/v1/Systems/1", "", token(tok))
	if b := sys["Boot"].(map[string]any); b["BootSourceOverrideEnabled"] != "Disabled" || sys["PowerState"] != "On" {
		t.Errorf("after power on: PowerState %v, Boot %v; want On and the override Disabled", sys["PowerState"], b)
	}

	if code, _, _ := c.do("DELETE", loc, "", token(tok)); code != 204 {
		t.Errorf("delete session: %d", code)
	}
	if code, _, _ := c.do("GET", "/redfish/v1/Systems/1", "", token(tok)); code != 401 {
		t.Errorf("ended session still works: %d", code)
	}
	want := []string{"reset On", "reset ForceRestart", "reset GracefulRestart", "reset PowerCycle",
		"reset GracefulShutdown", "reset On", "reset ForceOff", "boot Pxe Once UEFI", "reset On"}
	if diff := cmp.Diff(want, Names(r.Actions())); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}

// TestRedfishWithSushy checks the service with OpenStack's sushy library.
func TestRedfishWithSushy(t *testing.T) {
	t.Parallel()
	py := need(t, "/usr/bin/python3", "python3")
	if err := exec.Command(py, "-c", "import sushy").Run(); err != nil {
		t.Fatal("python3 cannot import sushy: apt-get install python3-sushy")
	}
	m := &MemoryMachine{}
	r := startRedfish(t, m)
	script := `
import sys, sushy
root = sushy.Sushy(sys.argv[1] + "/redfish/v1", username="admin", password="rf-pw", verify=sys.argv[2])
s = root.get_system("/redfish/v1/Systems/1")
print("power", s.power_state)
s.reset_system(sushy.RESET_ON)
s.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_CONTINUOUS)
s.refresh()
print("power", s.power_state, "boot", s.boot.target, s.boot.enabled)
try:
    sushy.Sushy(sys.argv[1] + "/redfish/v1", username="admin", password="wrong", verify=sys.argv[2]).get_system("/redfish/v1/Systems/1")
    print("wrong password accepted")
except sushy.exceptions.AccessError as e:
    print("refused", e.status_code)
`
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-W", "ignore", "-c", script, r.URL(), ca)
	cmd.Env = pythonEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sushy: %v\n%s", err, out)
	}
	want := "power PowerState.OFF\npower PowerState.ON boot BootSource.PXE BootSourceOverrideEnabled.CONTINUOUS\nrefused 401\n"
	if got := string(out); got != want {
		t.Errorf("sushy printed %q, want %q", got, want)
	}
	if diff := cmp.Diff([]string{"reset On", "boot Pxe Continuous Legacy"}, Names(r.Actions())); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}

// TestRedfishWithRedfishtool checks the service with DMTF's redfishtool.
func TestRedfishWithRedfishtool(t *testing.T) {
	t.Parallel()
	tool := need(t, "redfishtool", "redfishtool")
	r := startRedfish(t, &MemoryMachine{})
	host := strings.TrimPrefix(r.URL(), "https://")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		argv := append([]string{"-r", host, "-S", "Always", "-u", "admin", "-p", "rf-pw"}, args...)
		cmd := exec.CommandContext(ctx, tool, argv...)
		cmd.Env = pythonEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("redfishtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("root"); !strings.Contains(out, `"RedfishVersion": "1.11.0"`) {
		t.Errorf("redfishtool root: %s", out)
	}
	if out := run("Systems", "-I", "1"); !strings.Contains(out, `"PowerState": "Off"`) {
		t.Errorf("redfishtool Systems -I 1: %s", out)
	}
	run("Systems", "-I", "1", "reset", "ForceRestart")
	run("Systems", "-I", "1", "setBootOverride", "Once", "Pxe")
	if out := run("Systems", "-I", "1"); !strings.Contains(out, `"PowerState": "On"`) || !strings.Contains(out, `"BootSourceOverrideTarget": "Pxe"`) {
		t.Errorf("redfishtool Systems -I 1 after reset and boot override: %s", out)
	}
	if diff := cmp.Diff([]string{"reset ForceRestart", "boot Pxe Once Legacy"}, Names(r.Actions())); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}

// pythonEnv is the environment for a Python Redfish client: without
// REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which python3-requests lets
// override a session's own verify setting.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") && !strings.HasPrefix(kv, "CURL_CA_BUNDLE=") {
			env = append(env, kv)
		}
	}
	return env
}

// httpsClient trusts the services' certificate.
func httpsClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: CertPool()}}}
}
