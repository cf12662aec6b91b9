package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/pxed"
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
		want func(*pxed.Config)
	}{
		"defaults": {
			want: func(*pxed.Config) {},
		},
		"flags": {
			args: []string{"--pki-dir", "/pki", "--api-url", "https://api:1079", "--api-timeout", "500ms",
				"--http-listen", "10.0.0.1:8080", "--public-url", "http://10.0.0.1:8080", "--artifacts-dir", "/srv/artifacts",
				"--tftp-listen", "", "--tftp-root", "/srv/ipxe", "--tftp-timeout", "2s",
				"--discovery-kernel", "scout/bzImage", "--discovery-initrd", "http://images/scout.img",
				"--discovery-kernel-args", "console=ttyS1,9600", "--retry-interval", "30s",
				"--agent-api-url", "https://198.18.0.1:1079", "--agent-ca-file", "/pki/agent-ca.crt", "--metrics-listen", ""},
			want: func(c *pxed.Config) {
				c.PKIDir = "/pki"
				c.APIURL = "https://api:1079"
				c.APITimeout = 500 * time.Millisecond
				c.HTTPListen = "10.0.0.1:8080"
				c.PublicURL = "http://10.0.0.1:8080"
				c.ArtifactsDir = "/srv/artifacts"
				c.TFTPListen = ""
				c.TFTPRoot = "/srv/ipxe"
				c.TFTPTimeout = 2 * time.Second
				c.DiscoveryKernel = "scout/bzImage"
				c.DiscoveryInitrd = "http://images/scout.img"
				c.DiscoveryKernelArgs = "console=ttyS1,9600"
				c.RetryInterval = 30 * time.Second
				c.AgentAPIURL = "https://198.18.0.1:1079"
				c.AgentCAFile = "/pki/agent-ca.crt"
				c.MetricsListen = ""
			},
		},
		"environment": {
			env: map[string]string{"CARBIDE_PXE_PKI_DIR": "/pki", "CARBIDE_PXE_TFTP_ROOT": "/srv/ipxe",
				"CARBIDE_PXE_PUBLIC_URL": "http://pxe:8080", "CARBIDE_PXE_RETRY_INTERVAL": "5s", "CARBIDE_PXE_CERT": "/c.crt"},
			want: func(c *pxed.Config) {
				c.PKIDir = "/pki"
				c.TFTPRoot = "/srv/ipxe"
				c.PublicURL = "http://pxe:8080"
				c.RetryInterval = 5 * time.Second
				c.CertFile = "/c.crt"
			},
		},
		"the command line wins over the environment": {
			args: []string{"--tftp-root", "/other", "--api-url", "https://other:1079"},
			env:  map[string]string{"CARBIDE_PXE_TFTP_ROOT": "/srv/ipxe", "CARBIDE_PXE_API_URL": "https://api:1079"},
			want: func(c *pxed.Config) {
				c.TFTPRoot = "/other"
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
			want := pxed.DefaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A PKI directory with the key but not the certificate.
	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pki, "pxe.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		env  map[string]string
		want []string
	}{
		"help":           {args: []string{"--help"}, want: []string{"CARBIDE_PXE_PKI_DIR", "-tftp-root", "-public-url", "/ipxe/<mac>", "pxe.crt"}},
		"bad flag value": {args: []string{"--api-timeout", "soon"}, want: []string{"invalid value"}},
		"bad environment value": {env: map[string]string{"CARBIDE_PXE_RETRY_INTERVAL": "later"},
			want: []string{"CARBIDE_PXE_RETRY_INTERVAL"}},
		"bad URLs": {args: []string{"--api-url", "ftp://x", "--public-url", "carbide.example", "--agent-api-url", "::"},
			want: []string{"api-url: \"ftp://x\" is not an http:// or https:// URL", "public-url:", "agent-api-url:"}},
		"missing certificate": {args: []string{"--pki-dir", pki, "--tftp-root", dir, "--artifacts-dir", dir},
			want: []string{"cert: stat " + filepath.Join(pki, "pxe.crt") + ": no such file or directory", "ca: stat"}},
		"no credentials": {args: []string{"--tftp-root", dir, "--artifacts-dir", dir},
			want: []string{"no client certificate: give --pki-dir"}},
		"missing directories": {args: []string{"--api-url", "http://127.0.0.1:1079", "--tftp-root", filepath.Join(dir, "none"), "--artifacts-dir", filepath.Join(dir, "none")},
			want: []string{"tftp-root:", "apt install ipxe", "artifacts-dir:"}},
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
