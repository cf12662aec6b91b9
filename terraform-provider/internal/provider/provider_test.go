package provider

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/config"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// machinesConfig reads carbide_machines, which needs a working client.
const machinesConfig = `
data "carbide_machines" "all" {}
`

// okStep is a step whose read must succeed.
func okStep(config string) resource.TestStep {
	return resource.TestStep{
		Config: config,
		Check:  resource.TestCheckResourceAttrSet("data.carbide_machines.all", "ids.#"),
	}
}

// devToken is a bearer token of the API's development issuer, registered
// as a secret.
func devToken(t *testing.T, a *accAPI) string {
	t.Helper()
	out, err := exec.Command(a.bin, "dev-token", "--data-dir", a.dataDir, "--role", "admin").Output()
	if err != nil {
		t.Fatalf("carbide-api dev-token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	testsecret.Register(t, tok)
	return tok
}

func TestProviderCertificateFromEnvironment(t *testing.T) {
	a := api(t)
	t.Setenv("CARBIDE_ENDPOINT", a.endpoint)
	t.Setenv("CARBIDE_CA_CERT", a.file("ca.crt"))
	t.Setenv("CARBIDE_CLIENT_CERT", a.file("admin.crt"))
	t.Setenv("CARBIDE_CLIENT_KEY", a.file("admin.key"))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps:                    []resource.TestStep{okStep(`provider "carbide" {}` + machinesConfig)},
	})
}

func TestProviderConfigurationWinsOverEnvironment(t *testing.T) {
	a := api(t)
	// A wrong endpoint in the environment: the configuration's wins.
	t.Setenv("CARBIDE_ENDPOINT", "https://127.0.0.1:1")
	t.Setenv("CARBIDE_CA_CERT", a.file("ca.crt"))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps:                    []resource.TestStep{okStep(a.providerConfig() + machinesConfig)},
	})
}

func TestProviderToken(t *testing.T) {
	a := api(t)
	tok := devToken(t, a)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withToken := func(s resource.TestStep) resource.TestStep {
		s.ConfigVariables = config.Variables{"token": config.StringVariable(tok)}
		return s
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			// A token given in the configuration (from a variable here).
			withToken(okStep(`
variable "token" {
  type      = string
  sensitive = true
}
provider "carbide" {
  endpoint = "` + a.endpoint + `"
  ca_cert  = "` + a.file("ca.crt") + `"
  token    = var.token
}` + machinesConfig)),
			// A token printed by a command.
			okStep(`
provider "carbide" {
  endpoint      = "` + a.endpoint + `"
  ca_cert       = "` + a.file("ca.crt") + `"
  token_command = "cat ` + tokenFile + `"
}` + machinesConfig),
		},
	})
}

func TestProviderTokenFromEnvironment(t *testing.T) {
	a := api(t)
	t.Setenv("CARBIDE_ENDPOINT", a.endpoint)
	t.Setenv("CARBIDE_CA_CERT", a.file("ca.crt"))
	t.Setenv("CARBIDE_TOKEN", devToken(t, a))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps:                    []resource.TestStep{okStep(machinesConfig)},
	})
}

// TestProviderConfigurationErrors checks that a wrong configuration gets a
// diagnostic that says what to fix.
func TestProviderConfigurationErrors(t *testing.T) {
	a := api(t)
	closed := closedPort(t)
	tests := map[string]struct {
		provider string
		want     string
	}{
		"no endpoint": {
			provider: `provider "carbide" {}`,
			want:     `Invalid Carbide provider configuration.*endpoint.*CARBIDE_ENDPOINT`,
		},
		"endpoint without scheme": {
			provider: `provider "carbide" {
  endpoint = "carbide.example:1079"
}`,
			want: `carbide\.example:1079`,
		},
		"certificate without key": {
			provider: `provider "carbide" {
  endpoint    = "` + a.endpoint + `"
  client_cert = "` + a.file("admin.crt") + `"
}`,
			want: `Invalid Carbide provider configuration.*key`,
		},
		"token and token command": {
			provider: `provider "carbide" {
  endpoint      = "` + a.endpoint + `"
  token         = "x"
  token_command = "echo x"
}`,
			want: `Invalid Carbide provider configuration.*token`,
		},
		"unknown protocol": {
			provider: `provider "carbide" {
  endpoint = "` + a.endpoint + `"
  protocol = "http3"
}`,
			want: `protocol.*value must be one of`,
		},
		"missing certificate file": {
			provider: `provider "carbide" {
  endpoint    = "` + a.endpoint + `"
  client_cert = "/nonexistent/admin.crt"
  client_key  = "/nonexistent/admin.key"
}`,
			want: `/nonexistent/admin\.crt`,
		},
		"nothing listens at the endpoint": {
			provider: `provider "carbide" {
  endpoint    = "https://` + closed + `"
  ca_cert     = "` + a.file("ca.crt") + `"
  client_cert = "` + a.file("admin.crt") + `"
  client_key  = "` + a.file("admin.key") + `"
}`,
			want: `Cannot list machines.*unavailable.*Check the provider's endpoint`,
		},
		"no credentials": {
			provider: `provider "carbide" {
  endpoint = "` + a.endpoint + `"
  ca_cert  = "` + a.file("ca.crt") + `"
}`,
			want: `Cannot list machines.*unauthenticated.*Check the provider's credentials`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      tc.provider + machinesConfig,
					ExpectError: expectError(tc.want),
				}},
			})
		})
	}
}

// closedPort is a loopback host:port that nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestProviderProtocols reads through each wire protocol the API serves,
// through a TLS proxy in front of the API that records the content type
// of each call, so the test sees the protocol the provider spoke.
func TestProviderProtocols(t *testing.T) {
	a := api(t)
	proxy, seen := contentTypeProxy(t, a)
	for protocol, want := range map[string]string{
		"connect":  "application/proto",
		"grpc":     "application/grpc",
		"grpc-web": "application/grpc-web+proto",
	} {
		t.Run(protocol, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{okStep(fmt.Sprintf(`
provider "carbide" {
  endpoint    = %q
  ca_cert     = %q
  client_cert = %q
  client_key  = %q
  protocol    = %q
}
`, proxy, a.file("ca.crt"), a.file("admin.crt"), a.file("admin.key"), protocol) + machinesConfig)},
			})
			if got := seen(); !slices.Contains(got, want) {
				t.Errorf("protocol %s: the calls had content types %v, want %s", protocol, got, want)
			}
		})
	}
}

// contentTypeProxy is an HTTPS reverse proxy to the API, with the API's
// server certificate and the admin's client certificate; seen returns the
// content types of the calls since it was last called.
func contentTypeProxy(t *testing.T, a *accAPI) (url string, seen func() []string) {
	t.Helper()
	serverCert, err := tls.LoadX509KeyPair(a.file("server.crt"), a.file("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(a.file("admin.crt"), a.file("admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(a.file("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	upstream, err := neturl.Parse(a.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}},
	}
	var mu sync.Mutex
	var types []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		types = append(types, r.Header.Get("Content-Type"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := types
		types = nil
		return out
	}
}
