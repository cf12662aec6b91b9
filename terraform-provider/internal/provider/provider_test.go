package provider

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
