package main

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/dhcpd"
	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		args []string
		env  map[string]string
		want func(*dhcpd.Config)
	}{
		"defaults": {
			want: func(*dhcpd.Config) {},
		},
		"flags": {
			args: []string{"--interface", "eth1,eth2", "--interface=eth3", "--pki-dir", "/pki", "--server-id", "10.0.0.1",
				"--tftp-server", "10.0.0.5", "--api-timeout", "500ms", "--efi-arm64-file", "arm64.efi",
				"--http-boot-url", "http://10.0.0.1/boot.efi", "--ipxe-script-url", "http://x/{mac}", "--metrics-listen", ""},
			want: func(c *dhcpd.Config) {
				c.Interfaces = []string{"eth1", "eth2", "eth3"}
				c.PKIDir = "/pki"
				c.ServerID = netip.MustParseAddr("10.0.0.1")
				c.TFTPServer = netip.MustParseAddr("10.0.0.5")
				c.APITimeout = 500 * time.Millisecond
				c.EFIARM64File = "arm64.efi"
				c.HTTPBootURL = "http://10.0.0.1/boot.efi"
				c.IPXEScriptURL = "http://x/{mac}"
				c.MetricsListen = ""
			},
		},
		"environment": {
			env: map[string]string{"CARBIDE_DHCP_INTERFACE": "eth1, eth2", "CARBIDE_DHCP_API_URL": "https://api:1079",
				"CARBIDE_DHCP_EFI_X64_FILE": "ipxe.efi", "CARBIDE_DHCP_MAX_IN_FLIGHT": "16"},
			want: func(c *dhcpd.Config) {
				c.Interfaces = []string{"eth1", "eth2"}
				c.APIURL = "https://api:1079"
				c.EFIX64File = "ipxe.efi"
				c.MaxInFlight = 16
			},
		},
		"profiles": {
			args: []string{"--debug-pprof"},
			want: func(c *dhcpd.Config) { c.DebugPprof = true },
		},
		"the command line wins over the environment": {
			args: []string{"--interface", "eth9", "--api-url", "https://other:1079"},
			env:  map[string]string{"CARBIDE_DHCP_INTERFACE": "eth1,eth2", "CARBIDE_DHCP_API_URL": "https://api:1079"},
			want: func(c *dhcpd.Config) {
				c.Interfaces = []string{"eth9"}
				c.APIURL = "https://other:1079"
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, _, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			want := dhcpd.DefaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(&want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		args []string
		env  map[string]string
		want []string
	}{
		"help":           {args: []string{"--help"}, want: []string{"CARBIDE_DHCP_INTERFACE", "-efi-arm64-file", "-ipxe-script-url", "-debug-pprof"}},
		"bad flag value": {args: []string{"--server-id", "not-an-ip"}, want: []string{"invalid value"}},
		"bad environment value": {env: map[string]string{"CARBIDE_DHCP_API_TIMEOUT": "soon"},
			want: []string{"CARBIDE_DHCP_API_TIMEOUT"}},
		"invalid config": {args: []string{"--api-url", "ftp://x", "--max-in-flight", "0"},
			want: []string{"api-url", "interface: none given", "max-in-flight"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			err := run(t.Context(), tt.args, env(tt.env), &stderr)
			if err == nil {
				t.Fatal("run succeeded")
			}
			out := err.Error() + "\n" + stderr.String()
			if name == "help" && !errors.Is(err, flag.ErrHelp) {
				t.Errorf("run(--help) = %v, want flag.ErrHelp", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
		})
	}
}
