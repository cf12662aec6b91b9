package dhcpd

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	for _, f := range []string{"dhcp.crt", "dhcp.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(pki, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	valid := func() Config {
		c := DefaultConfig()
		c.Interfaces = []string{"eth1", "eth2"}
		c.PKIDir = pki
		return c
	}
	tests := map[string]struct {
		edit func(*Config)
		want []string // substrings of the error; none for a valid config
	}{
		"defaults with interfaces and a PKI directory": {},
		"every boot option set": {edit: func(c *Config) {
			c.IPXEScriptURL = "https://carbide.example/ipxe/{mac}"
			c.HTTPBootURL = "http://10.0.0.1:8080/ipxe.efi"
			c.EFIARM64File = "arm64.efi"
			c.TFTPServer = netip.MustParseAddr("10.0.0.5")
			c.ServerID = netip.MustParseAddr("10.0.0.1")
		}},
		"many problems at once": {
			edit: func(c *Config) {
				c.APIURL = "ftp://carbide.example"
				c.Interfaces = nil
				c.APITimeout = 0
				c.ServerID = netip.MustParseAddr("224.0.0.1")
				c.TFTPServer = netip.MustParseAddr("2001:db8::1")
				c.MaxInFlight = 0
				c.Port = 70000
				c.IPXEScriptURL = "/relative/{mac}"
				c.HTTPBootURL = "ftp://x/y"
				c.MetricsListen = "9167"
			},
			want: []string{
				"api-url:", "interface: none given", "api-timeout:", "server-id: 224.0.0.1 is not a unicast",
				"tftp-server: 2001:db8::1 is not an IPv4", "max-in-flight:", "port: 70000",
				"ipxe-script-url:", "http-boot-url:", "metrics-listen:",
			},
		},
		"profiles on the metrics listener": {edit: func(c *Config) { c.DebugPprof = true }},
		"profiles without a metrics listener": {
			edit: func(c *Config) { c.DebugPprof, c.MetricsListen = true, "" },
			want: []string{"debug-pprof: the profiles are served on --metrics-listen, which is empty"},
		},
		"bad interface names": {
			edit: func(c *Config) { c.Interfaces = []string{"eth1", "", "a-very-long-interface-name", "eth1", "a/b"} },
			want: []string{`interface: empty name`, `"a-very-long-interface-name" is not`, `"eth1" given twice`, `"a/b" is not`},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			if tt.edit != nil {
				tt.edit(&c)
			}
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if lines := strings.Count(err.Error(), "\n") + 1; lines != len(tt.want) {
				t.Errorf("error has %d lines, want one per problem (%d):\n%v", lines, len(tt.want), err)
			}
		})
	}
}
