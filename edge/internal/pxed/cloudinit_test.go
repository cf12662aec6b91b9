package pxed

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v2"
)

// The SSH keys of the test instance: one plain, one whose comment holds
// characters YAML would otherwise read as syntax.
const (
	testKey1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1b3JlbWlwc3VtZG9sb3JzaXRhbWV0Y29uc2VjdGV0 alice@laptop"
	testKey2 = `ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob "the admin" #1: C:\keys é`
)

// testUserData is the tenant's user data: a script with bytes that are
// not UTF-8.
var testUserData = []byte("#!/bin/sh\necho 'hello' > /tmp/x\n\x00\xff\xfe\r\nend")

// testCloudInit is the cloud-init data of the instance of testMAC.
func testCloudInit() *bootv1.CloudInit {
	return &bootv1.CloudInit{
		InstanceId:        testInstance,
		Hostname:          "web-1.tenant.example",
		UserData:          testUserData,
		SshAuthorizedKeys: []string{testKey1, testKey2},
		Mac:               testMAC,
		Address:           testLease,
		PrefixLength:      24,
		Gateway:           "10.0.0.1",
		DnsServers:        []string{"10.0.0.2", "10.0.0.3"},
		Domain:            "lab.example",
		Mtu:               9000,
		PhoneHome:         true,
	}
}

// newInstanceEnv is a test environment whose machine boots from its disk
// and has an instance.
func newInstanceEnv(t *testing.T, edit func(*Config)) *testEnv {
	t.Helper()
	env := newTestEnv(t, edit)
	env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: testHostname, Action: bootv1.BootAction_BOOT_ACTION_LOCAL_DISK})
	env.fake.setCloudInit(testMAC, testCloudInit())
	return env
}

func TestInstanceSeed(t *testing.T) {
	t.Parallel()
	const base = "http://198.18.0.2:8080"
	tests := map[string]struct {
		contentType string
		want        string
	}{
		"meta-data": {
			contentType: "text/plain; charset=utf-8",
			want: `instance-id: "0b7e3c1a-5d2f-4e8a-9c6b-1f2e3d4c5b6a"
local-hostname: "web-1.tenant.example"
public-keys:
  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1b3JlbWlwc3VtZG9sb3JzaXRhbWV0Y29uc2VjdGV0 alice@laptop"
  - "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob \"the admin\" #1: C:\\keys \u00e9"
`,
		},
		"user-data": {contentType: "application/octet-stream", want: string(testUserData)},
		"network-config": {
			contentType: "text/plain; charset=utf-8",
			want: `version: 2
ethernets:
  id0:
    match:
      macaddress: "52:54:00:12:34:56"
    addresses:
      - "10.0.0.50/24"
    gateway4: "10.0.0.1"
    nameservers:
      addresses:
        - "10.0.0.2"
        - "10.0.0.3"
      search:
        - "lab.example"
    mtu: 9000
`,
		},
		"vendor-data": {
			contentType: "text/plain; charset=utf-8",
			want: `#cloud-config
phone_home:
  url: "` + base + `/phone-home/52:54:00:12:34:56"
  post:
    - instance_id
    - hostname
  tries: 10
`,
		},
	}
	for file, tt := range tests {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			env := newInstanceEnv(t, nil)
			w := env.get("/cloud-init/52-54-00-12-34-56/"+file, machineRemote, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, body %q", w.Code, w.Body)
			}
			if diff := cmp.Diff(tt.want, w.Body.String()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", file, diff)
			}
			if got := w.Header().Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			// The API is asked for the cloud-init data, with the address
			// the request came from.
			if call := env.fake.lastCall(t); call.GetMac() != testMAC || call.GetClientAddress() != testLease || !call.GetCloudInit() || call.GetStartBoot() || call.GetBootNonce() != "" {
				t.Errorf("API call %v, want cloud_init for %s from %s", call, testMAC, testLease)
			}
			if got := testutil.ToFloat64(env.metrics.httpRequests.WithLabelValues(routeCloudInit, "200")); got != 1 {
				t.Errorf("carbide_pxe_http_requests_total{route=cloud_init,code=200} = %v, want 1", got)
			}
			if !strings.Contains(env.log.String(), "instance_id="+testInstance) {
				t.Errorf("the log does not name the instance:\n%s", env.log)
			}
			if file == "user-data" && strings.Contains(env.log.String(), "hello") {
				t.Errorf("the log holds the user data:\n%s", env.log)
			}
		})
	}
}

// TestInstanceSeedParses reads the rendered YAML back with a YAML 1.1
// parser, as cloud-init's PyYAML does: each value is the string (or
// number) it was meant to be.
func TestInstanceSeedParses(t *testing.T) {
	t.Parallel()
	env := newInstanceEnv(t, nil)
	get := func(file string, v any) {
		t.Helper()
		w := env.get("/cloud-init/"+testMAC+"/"+file, machineRemote, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d, body %q", file, w.Code, w.Body)
		}
		if err := yaml.UnmarshalStrict(w.Body.Bytes(), v); err != nil {
			t.Fatalf("%s does not parse: %v\n%s", file, err, w.Body)
		}
	}

	var meta struct {
		InstanceID    string   `yaml:"instance-id"`
		LocalHostname string   `yaml:"local-hostname"`
		PublicKeys    []string `yaml:"public-keys"`
	}
	get("meta-data", &meta)
	if meta.InstanceID != testInstance || meta.LocalHostname != "web-1.tenant.example" {
		t.Errorf("meta-data: %+v", meta)
	}
	if diff := cmp.Diff([]string{testKey1, testKey2}, meta.PublicKeys); diff != "" {
		t.Errorf("public-keys (-want +got):\n%s", diff)
	}

	type ethernet struct {
		Match struct {
			MACAddress string `yaml:"macaddress"`
		} `yaml:"match"`
		Addresses   []string `yaml:"addresses"`
		Gateway4    string   `yaml:"gateway4"`
		Nameservers struct {
			Addresses []string `yaml:"addresses"`
			Search    []string `yaml:"search"`
		} `yaml:"nameservers"`
		MTU int `yaml:"mtu"`
	}
	var network struct {
		Version   int                 `yaml:"version"`
		Ethernets map[string]ethernet `yaml:"ethernets"`
	}
	get("network-config", &network)
	eth, ok := network.Ethernets["id0"]
	if network.Version != 2 || len(network.Ethernets) != 1 || !ok {
		t.Fatalf("network-config: %+v", network)
	}
	if eth.Match.MACAddress != testMAC || eth.MTU != 9000 ||
		!cmp.Equal(eth.Addresses, []string{"10.0.0.50/24"}) ||
		eth.Gateway4 != "10.0.0.1" ||
		!cmp.Equal(eth.Nameservers.Addresses, []string{"10.0.0.2", "10.0.0.3"}) ||
		!cmp.Equal(eth.Nameservers.Search, []string{"lab.example"}) {
		t.Errorf("network-config: %+v", eth)
	}

	var vendor struct {
		PhoneHome struct {
			URL   string   `yaml:"url"`
			Post  []string `yaml:"post"`
			Tries int      `yaml:"tries"`
		} `yaml:"phone_home"`
	}
	get("vendor-data", &vendor)
	if ph := vendor.PhoneHome; ph.URL != "http://198.18.0.2:8080/phone-home/"+testMAC || !cmp.Equal(ph.Post, []string{"instance_id", "hostname"}) || ph.Tries != 10 {
		t.Errorf("vendor-data: %+v", ph)
	}
}

// TestInstanceSeedOptional: an instance without keys, gateway, name
// servers, domain, MTU or phone-home, with a short host name, on a daemon
// with --public-url.
func TestInstanceSeedOptional(t *testing.T) {
	t.Parallel()
	env := newInstanceEnv(t, func(c *Config) { c.PublicURL = "https://boot.example/pxe/" })
	env.fake.setCloudInit(testMAC, &bootv1.CloudInit{
		InstanceId: testInstance, Hostname: "web-1", Mac: strings.ToUpper(testMAC), Address: "192.0.2.7", PrefixLength: 32,
	})
	for file, want := range map[string]string{
		"meta-data":      "instance-id: \"" + testInstance + "\"\nlocal-hostname: \"web-1\"\n",
		"user-data":      "",
		"network-config": "version: 2\nethernets:\n  id0:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    addresses:\n      - \"192.0.2.7/32\"\n",
		"vendor-data":    "",
	} {
		w := env.get("/cloud-init/"+testMAC+"/"+file, machineRemote, nil)
		if w.Code != http.StatusOK {
			t.Errorf("%s: status %d, body %q", file, w.Code, w.Body)
			continue
		}
		if diff := cmp.Diff(want, w.Body.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", file, diff)
		}
	}
	// Without an address (the API found no lease), there is no
	// network-config, as for a machine without an instance.
	env.fake.setCloudInit(testMAC, &bootv1.CloudInit{InstanceId: testInstance, Hostname: "web-1", Mac: testMAC})
	if w := env.get("/cloud-init/"+testMAC+"/network-config", machineRemote, nil); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "fallback network") {
		t.Errorf("network-config without an address: status %d, body %q; want 404", w.Code, w.Body)
	}
	// The phone-home URL is built on --public-url.
	ci := testCloudInit()
	env.fake.setCloudInit(testMAC, ci)
	w := env.get("/cloud-init/"+testMAC+"/vendor-data", machineRemote, nil)
	if !strings.Contains(w.Body.String(), `url: "https://boot.example/pxe/phone-home/52:54:00:12:34:56"`) {
		t.Errorf("vendor-data with --public-url:\n%s", w.Body)
	}
	// Without a host name of its own, the instance takes its machine's.
	ci.Hostname = ""
	env.fake.setCloudInit(testMAC, ci)
	w = env.get("/cloud-init/"+testMAC+"/meta-data", machineRemote, nil)
	if !strings.Contains(w.Body.String(), "local-hostname: \""+testHostname+"\"\n") {
		t.Errorf("meta-data without an instance host name:\n%s", w.Body)
	}
}

// TestInstanceSeedHostHeader: without --public-url, the phone-home URL of
// the vendor-data is built on the Host header, which must be a host.
func TestInstanceSeedHostHeader(t *testing.T) {
	t.Parallel()
	env := newInstanceEnv(t, nil)
	for file, want := range map[string]int{"meta-data": http.StatusOK, "user-data": http.StatusOK, "network-config": http.StatusOK, "vendor-data": http.StatusBadRequest} {
		req := httptestRequest("/cloud-init/"+testMAC+"/"+file, machineRemote)
		req.Host = "pxe.example\nruncmd: [reboot]"
		w := serve(env.h, req)
		if w.Code != want || strings.Contains(w.Body.String(), "phone_home") {
			t.Errorf("%s: status %d, want %d; body %q", file, w.Code, want, w.Body)
		}
	}
}

// TestInstanceSeedOtherAddress: from an address that does not hold the
// machine's lease, the API returns no cloud-init data, and the daemon
// serves the machine's own seed: never the instance's user data or keys.
func TestInstanceSeedOtherAddress(t *testing.T) {
	t.Parallel()
	env := newInstanceEnv(t, nil)
	for remote, wantAddr := range map[string]string{
		"10.0.0.99:40000":          "10.0.0.99",
		"[::ffff:10.0.0.99]:40000": "10.0.0.99",
		"[2001:db8::5]:40000":      "", // no IPv4 address to pass
	} {
		for _, file := range []string{"meta-data", "user-data", "network-config", "vendor-data"} {
			w := env.get("/cloud-init/"+testMAC+"/"+file, remote, nil)
			body := w.Body.String()
			if strings.Contains(body, "hello") || strings.Contains(body, "ssh-") || strings.Contains(body, testInstance) || strings.Contains(body, "phone_home") {
				t.Errorf("%s from %s: the instance's data was served:\n%s", file, remote, body)
			}
			want := http.StatusOK
			if file == "network-config" {
				want = http.StatusNotFound
			}
			if w.Code != want {
				t.Errorf("%s from %s: status %d, want %d", file, remote, w.Code, want)
			}
			if call := env.fake.lastCall(t); call.GetClientAddress() != wantAddr || !call.GetCloudInit() {
				t.Errorf("%s from %s: API call %v, want cloud_init with client_address %q", file, remote, call, wantAddr)
			}
		}
	}
	w := env.get("/cloud-init/"+testMAC+"/meta-data", "10.0.0.99:40000", nil)
	if want := "instance-id: \"" + testMachineID + "\"\nlocal-hostname: \"" + testHostname + "\"\n"; w.Body.String() != want {
		t.Errorf("meta-data from another address: %q, want the machine's %q", w.Body, want)
	}
}

// TestInstanceSeedRefused gives the instance's data values that must not
// reach a seed: each file that holds the value is refused with 500 and
// logged, and its body carries none of it.
func TestInstanceSeedRefused(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		edit  func(*bootv1.CloudInit)
		files []string
	}{
		"host name with a newline":     {edit: func(c *bootv1.CloudInit) { c.Hostname = "web\nruncmd: [reboot]" }, files: []string{"meta-data"}},
		"host name with a quote":       {edit: func(c *bootv1.CloudInit) { c.Hostname = `web"1` }, files: []string{"meta-data"}},
		"host name with a colon":       {edit: func(c *bootv1.CloudInit) { c.Hostname = "web: 1" }, files: []string{"meta-data"}},
		"instance id not a UUID":       {edit: func(c *bootv1.CloudInit) { c.InstanceId = "i-1\nruncmd" }, files: []string{"meta-data"}},
		"key with a newline":           {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{testKey1 + "\nssh-rsa AAAA evil"} }, files: []string{"meta-data"}},
		"key with a carriage return":   {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{testKey1 + "\rx"} }, files: []string{"meta-data"}},
		"key with a NUL":               {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{testKey1 + "\x00"} }, files: []string{"meta-data"}},
		"key of another format":        {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{`command="sh" ` + testKey1} }, files: []string{"meta-data"}},
		"key with a quote in its type": {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{`ssh-"x AAAA`} }, files: []string{"meta-data"}},
		"key without a body":           {edit: func(c *bootv1.CloudInit) { c.SshAuthorizedKeys = []string{"ssh-ed25519"} }, files: []string{"meta-data"}},
		"MAC":                          {edit: func(c *bootv1.CloudInit) { c.Mac = "52:54:00:12:34:5\"" }, files: []string{"network-config"}},
		"address":                      {edit: func(c *bootv1.CloudInit) { c.Address = "10.0.0.50\n" }, files: []string{"network-config"}},
		"IPv6 address":                 {edit: func(c *bootv1.CloudInit) { c.Address = "2001:db8::5" }, files: []string{"network-config"}},
		"prefix length 0":              {edit: func(c *bootv1.CloudInit) { c.PrefixLength = 0 }, files: []string{"network-config"}},
		"prefix length 33":             {edit: func(c *bootv1.CloudInit) { c.PrefixLength = 33 }, files: []string{"network-config"}},
		"gateway":                      {edit: func(c *bootv1.CloudInit) { c.Gateway = "10.0.0.1 # x" }, files: []string{"network-config"}},
		"name server":                  {edit: func(c *bootv1.CloudInit) { c.DnsServers = []string{"10.0.0.2", "evil\"]"} }, files: []string{"network-config"}},
		"domain":                       {edit: func(c *bootv1.CloudInit) { c.Domain = "lab.example\nruncmd: [reboot]" }, files: []string{"network-config"}},
		"MTU":                          {edit: func(c *bootv1.CloudInit) { c.Mtu = 70000 }, files: []string{"network-config"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newInstanceEnv(t, nil)
			ci := testCloudInit()
			tt.edit(ci)
			env.fake.setCloudInit(testMAC, ci)
			for _, file := range tt.files {
				w := env.get("/cloud-init/"+testMAC+"/"+file, machineRemote, nil)
				if w.Code != http.StatusInternalServerError {
					t.Errorf("%s: status %d, want 500; body:\n%s", file, w.Code, w.Body)
				}
				if body := w.Body.String(); strings.Contains(body, "runcmd") || strings.Contains(body, "evil") || strings.Contains(body, "10.0.0") {
					t.Errorf("%s: the body carries the value: %q", file, body)
				}
			}
			if got := testutil.ToFloat64(env.metrics.apiErrors.WithLabelValues(codeInvalidResponse)); got != float64(len(tt.files)) {
				t.Errorf("carbide_pxe_api_errors_total{code=invalid_response} = %v, want %d", got, len(tt.files))
			}
			if !strings.Contains(env.log.String(), "invalid") && !strings.Contains(env.log.String(), "authorized_keys") {
				t.Errorf("the refusal is not logged:\n%s", env.log)
			}
		})
	}
}

func TestYAMLQuote(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "plain", `a "quoted" word`, `back\slash`, "tab\there", "# not a comment", "key: value", "- item", "[x]", "{a: b}",
		"yes", "no", "~", "null", "1:2:3", "0x1f", "é ü ß", "\u2028\u2029\u0085", "\ufeffbom", "emoji \U0001F600", "\x01\x1f\x7f",
		"&anchor *alias !tag %directive @reserved `backtick`", "'single'",
	} {
		q, err := yamlQuote(s)
		if err != nil {
			t.Errorf("yamlQuote(%q): %v", s, err)
			continue
		}
		if strings.ContainsAny(q, "\r\n") {
			t.Errorf("yamlQuote(%q) = %q holds a line break", s, q)
		}
		var got struct{ V string }
		if err := yaml.UnmarshalStrict([]byte("v: "+q+"\n"), &got); err != nil {
			t.Errorf("yamlQuote(%q) = %s does not parse: %v", s, q, err)
			continue
		}
		if got.V != s {
			t.Errorf("yamlQuote(%q) = %s reads back as %q", s, q, got.V)
		}
	}
	if q, err := yamlQuote("bad \xff"); err == nil {
		t.Errorf("yamlQuote of invalid UTF-8 = %s, want an error", q)
	}
}

func TestValidSSHKey(t *testing.T) {
	t.Parallel()
	for key, ok := range map[string]bool{
		testKey1: true,
		testKey2: true,
		"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ==":                            true,
		"sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t": true,
		"ssh-ed25519 AAAA comment with\ttab":                                  true,
		"ssh-ed25519 AAAA comment\n":                                          false,
		"ssh-ed25519 AAAA\nssh-rsa BBBB":                                      false,
		"ssh-ed25519  AAAA":                                                   false,
		"rsa AAAA":                                                            false,
		"ssh-ed25519 AAAA \xff":                                               false, // not UTF-8, which protobuf refuses to carry anyway
		"ssh-ed25519 AA\"AA":                                                  false,
		"":                                                                    false,
	} {
		if got := validSSHKey(key); got != ok {
			t.Errorf("validSSHKey(%q) = %v, want %v", key, got, ok)
		}
	}
}

func TestPhoneHome(t *testing.T) {
	t.Parallel()
	form := func(id string) string { return url.Values{"instance_id": {id}, "hostname": {"web-1"}}.Encode() }
	tests := map[string]struct {
		path   string
		remote string
		body   string
		setup  func(*fakeBoot)
		code   int
		says   string // in the body
		called bool   // the API was called
	}{
		"accepted":         {body: form(testInstance), code: http.StatusOK, says: "phoned home", called: true},
		"upper-case id":    {body: form(strings.ToUpper(testInstance)), code: http.StatusOK, called: true},
		"hyphenated MAC":   {path: "/phone-home/52-54-00-12-34-56", body: form(testInstance), code: http.StatusOK, called: true},
		"all fields":       {body: form(testInstance) + "&fqdn=web-1.example&pub_key_rsa=N%2FA&pub_key_ed25519=ssh-ed25519+AAAA+root%40web-1", code: http.StatusOK, called: true},
		"bad MAC":          {path: "/phone-home/52:54:00:12:34", body: form(testInstance), code: http.StatusBadRequest, says: "not a MAC"},
		"bad instance id":  {body: form("i-12345"), code: http.StatusBadRequest, says: "not an instance id"},
		"no instance id":   {body: "hostname=web-1", code: http.StatusBadRequest, says: "not an instance id"},
		"not a form":       {body: "instance_id=%zz", code: http.StatusBadRequest},
		"oversized body":   {body: form(testInstance) + "&pad=" + strings.Repeat("x", maxPhoneHomeBody), code: http.StatusRequestEntityTooLarge},
		"another address":  {remote: "10.0.0.99:40000", body: form(testInstance), code: http.StatusForbidden, says: "does not hold the lease", called: true},
		"IPv6":             {remote: "[2001:db8::5]:40000", body: form(testInstance), code: http.StatusForbidden, says: "IPv4"},
		"another instance": {body: form("11111111-2222-3333-4444-555555555555"), code: http.StatusForbidden, says: "not booting instance", called: true},
		"unknown MAC":      {path: "/phone-home/52:54:00:00:00:01", body: form(testInstance), code: http.StatusNotFound, says: "no machine has MAC", called: true},
		"API unavailable": {body: form(testInstance), setup: func(f *fakeBoot) {
			f.phoneHomeErr = connect.NewError(connect.CodeUnavailable, errors.New("database down"))
		}, code: http.StatusServiceUnavailable, called: true},
		"API unimplemented": {body: form(testInstance), setup: func(f *fakeBoot) { f.phoneHomeErr = connect.NewError(connect.CodeUnimplemented, nil) }, code: http.StatusServiceUnavailable, called: true},
		"API failed precond": {body: form(testInstance), setup: func(f *fakeBoot) {
			f.phoneHomeErr = connect.NewError(connect.CodeFailedPrecondition, errors.New("instance is releasing"))
		}, code: http.StatusForbidden, says: "instance is releasing", called: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newInstanceEnv(t, nil)
			if tt.setup != nil {
				tt.setup(env.fake)
			}
			path, remote := tt.path, tt.remote
			if path == "" {
				path = "/phone-home/" + testMAC
			}
			if remote == "" {
				remote = machineRemote
			}
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = remote
			w := serve(env.h, req)
			if w.Code != tt.code {
				t.Errorf("status %d, want %d; body %q", w.Code, tt.code, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.says) {
				t.Errorf("body %q does not say %q", w.Body, tt.says)
			}
			if tt.code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") != retryAfterSeconds {
				t.Errorf("Retry-After = %q, want %s", w.Header().Get("Retry-After"), retryAfterSeconds)
			}
			calls := env.fake.phoneHomeCalls()
			if !tt.called {
				if len(calls) != 0 {
					t.Errorf("the API was called: %v", calls)
				}
			} else {
				wantMAC := testMAC
				if strings.HasSuffix(path, "00:00:01") {
					wantMAC = "52:54:00:00:00:01"
				}
				addr, _, _ := strings.Cut(remote, ":")
				want := []*bootv1.PhoneHomeRequest{{Mac: wantMAC, ClientAddress: addr, InstanceId: strings.ToLower(readForm(t, tt.body).Get("instance_id"))}}
				if diff := cmp.Diff(want, calls, cmp.Comparer(proto.Equal)); diff != "" {
					t.Errorf("PhoneHome calls (-want +got):\n%s", diff)
				}
			}
			if got := testutil.ToFloat64(env.metrics.httpRequests.WithLabelValues(routePhoneHome, strconv.Itoa(tt.code))); got != 1 {
				t.Errorf("carbide_pxe_http_requests_total{route=phone_home,code=%d} = %v, want 1", tt.code, got)
			}
			if tt.code == http.StatusOK && !strings.Contains(env.log.String(), "path=/phone-home/") {
				t.Errorf("the phone-home is not logged:\n%s", env.log)
			}
		})
	}

	// Only POST.
	env := newInstanceEnv(t, nil)
	if w := env.get("/phone-home/"+testMAC, machineRemote, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", w.Code)
	}
}

func readForm(t *testing.T, body string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(body)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNetbootScript(t *testing.T) {
	t.Parallel()
	const base = "http://198.18.0.2:8080"
	netboot := func(nb *bootv1.NetbootConfig) *bootv1.GetBootConfigResponse {
		return &bootv1.GetBootConfigResponse{MachineId: testMachineID, Hostname: testHostname, Action: bootv1.BootAction_BOOT_ACTION_NETBOOT, Netboot: nb}
	}
	tests := map[string]struct {
		edit    func(*Config)
		machine *bootv1.GetBootConfigResponse
		want    string
	}{
		"kernel, initrd and command line": {
			machine: netboot(&bootv1.NetbootConfig{
				KernelUrl: "http://images.example/debian/vmlinuz",
				InitrdUrl: "https://images.example/debian/initrd.img?v=2",
				Cmdline:   "console=ttyS0,115200  root=live:http://images.example/debian/root.squashfs ip=dhcp",
			}),
			want: `#!ipxe
echo Carbide: machine 6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b, host name node-1.lab.example
echo Carbide: booting the netboot image of the instance
kernel http://images.example/debian/vmlinuz initrd=initrd.img console=ttyS0,115200 root=live:http://images.example/debian/root.squashfs ip=dhcp ds=nocloud-net;s=` + base + `/cloud-init/52:54:00:12:34:56/
initrd --name initrd.img https://images.example/debian/initrd.img?v=2
boot
`,
		},
		"kernel only, public URL": {
			edit:    func(c *Config) { c.PublicURL = "https://boot.example/pxe/" },
			machine: netboot(&bootv1.NetbootConfig{KernelUrl: "http://images.example/bzImage"}),
			want: `#!ipxe
echo Carbide: machine 6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b, host name node-1.lab.example
echo Carbide: booting the netboot image of the instance
kernel http://images.example/bzImage ds=nocloud-net;s=https://boot.example/pxe/cloud-init/52:54:00:12:34:56/
boot
`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t, tt.edit)
			env.fake.set(testMAC, tt.machine)
			w := env.get("/ipxe/"+testMAC, machineRemote, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, body %q", w.Code, w.Body)
			}
			if diff := cmp.Diff(tt.want, w.Body.String()); diff != "" {
				t.Errorf("script (-want +got):\n%s", diff)
			}
			if got := testutil.ToFloat64(env.metrics.scripts.WithLabelValues(scriptNetboot)); got != 1 {
				t.Errorf("carbide_pxe_scripts_total{action=netboot} = %v, want 1", got)
			}
		})
	}
}

// TestNetbootInjection: a netboot image whose kernel, initrd or command
// line would add iPXE commands or kernel arguments is refused with 500.
func TestNetbootInjection(t *testing.T) {
	t.Parallel()
	const kernel, initrd = "http://images.example/vmlinuz", "http://images.example/initrd.img"
	tests := map[string]*bootv1.NetbootConfig{
		"no kernel":                     {},
		"kernel not a URL":              {KernelUrl: "vmlinuz"},
		"kernel of another scheme":      {KernelUrl: "tftp://images.example/vmlinuz"},
		"kernel with a space":           {KernelUrl: kernel + " shell"},
		"kernel with a newline":         {KernelUrl: kernel + "\nshell"},
		"initrd not a URL":              {KernelUrl: kernel, InitrdUrl: "initrd.img"},
		"initrd with a semicolon":       {KernelUrl: kernel, InitrdUrl: initrd + ";shell"},
		"initrd named a directory":      {KernelUrl: kernel, InitrdUrl: "http://images.example/"},
		"command line with ;":           {KernelUrl: kernel, Cmdline: "quiet ds=nocloud;s=http://evil.example/"},
		"command line with a newline":   {KernelUrl: kernel, Cmdline: "quiet\nshell"},
		"command line with a tab":       {KernelUrl: kernel, Cmdline: "quiet\tshell"},
		"command line with ${}":         {KernelUrl: kernel, Cmdline: "x=${net0/mac}"},
		"command line with ||":          {KernelUrl: kernel, Cmdline: "quiet || shell"},
		"command line with &&":          {KernelUrl: kernel, Cmdline: "quiet && shell"},
		"command line with a quote":     {KernelUrl: kernel, Cmdline: `init="/bin/sh"`},
		"command line with a #":         {KernelUrl: kernel, Cmdline: "quiet #"},
		"command line with a backslash": {KernelUrl: kernel, Cmdline: `a\b`},
	}
	for name, nb := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t, nil)
			env.fake.set(testMAC, &bootv1.GetBootConfigResponse{MachineId: testMachineID, Action: bootv1.BootAction_BOOT_ACTION_NETBOOT, Netboot: nb})
			w := env.get("/ipxe/"+testMAC, machineRemote, nil)
			if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "#!ipxe") || strings.Contains(w.Body.String(), "shell") {
				t.Errorf("status %d, body %q; want 500 and no script", w.Code, w.Body)
			}
			if got := testutil.ToFloat64(env.metrics.apiErrors.WithLabelValues(codeInvalidResponse)); got != 1 {
				t.Errorf("carbide_pxe_api_errors_total{code=invalid_response} = %v, want 1", got)
			}
		})
	}
}

// TestAgentConfigCloudInitURL: the agent's configuration names the seed of
// its machine, on --public-url when it is set.
func TestAgentConfigCloudInitURL(t *testing.T) {
	t.Parallel()
	for public, want := range map[string]string{
		"":                          "http://198.18.0.2:8080/cloud-init/52:54:00:12:34:56/",
		"https://boot.example/pxe/": "https://boot.example/pxe/cloud-init/52:54:00:12:34:56/",
	} {
		env := newTestEnv(t, func(c *Config) { c.PublicURL = public })
		w := env.get("/agent/52-54-00-12-34-56.json?boot="+testNonce, machineRemote, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d, body %q", w.Code, w.Body)
		}
		var got agentconfig.Config
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got.CloudInitURL != want {
			t.Errorf("--public-url %q: cloud_init_url %q, want %q", public, got.CloudInitURL, want)
		}
		if !strings.Contains(w.Body.String(), `"cloud_init_url":"`+want+`"`) {
			t.Errorf("the JSON does not carry cloud_init_url: %s", w.Body)
		}
	}
}
