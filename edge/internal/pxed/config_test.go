package pxed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	for _, f := range []string{"pxe.crt", "pxe.key"} {
		mustWrite(t, filepath.Join(pki, f), []byte("x"))
	}
	writeCA(t, pki, "ca.crt")
	dirs := t.TempDir()
	tftpRoot, artifacts := filepath.Join(dirs, "ipxe"), filepath.Join(dirs, "artifacts")
	for _, d := range []string{tftpRoot, artifacts} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	notCA := filepath.Join(dirs, "not-a-ca.pem")
	mustWrite(t, notCA, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	valid := func() Config {
		c := DefaultConfig()
		c.PKIDir = pki
		c.TFTPRoot = tftpRoot
		c.ArtifactsDir = artifacts
		return c
	}
	tests := map[string]struct {
		edit func(*Config)
		want []string // substrings of the error; none for a valid config
	}{
		"defaults with a PKI directory": {},
		"TFTP off: its root need not exist": {edit: func(c *Config) {
			c.TFTPListen, c.TFTPRoot = "", "/nonexistent"
		}},
		"no artifacts directory, discovery image by URL": {edit: func(c *Config) {
			c.ArtifactsDir = ""
			c.DiscoveryKernel = "http://images.example/vmlinuz"
			c.DiscoveryInitrd = "https://images.example/scout.img"
		}},
		"everything set": {edit: func(c *Config) {
			c.PublicURL = "http://10.0.0.1:8080/"
			c.AgentAPIURL = "https://198.18.0.1:1079"
			c.AgentCAFile = filepath.Join(pki, "ca.crt")
			c.DiscoveryKernelArgs = "console=ttyS1,9600n8 ip=dhcp  quiet"
			c.RetryInterval = 30 * time.Second
			c.MetricsListen = ""
		}},
		"many problems at once": {
			edit: func(c *Config) {
				c.APIURL = "ftp://carbide.example"
				c.APITimeout = 0
				c.HTTPListen = "8080"
				c.PublicURL = "http://10.0.0.1:8080/?x=1"
				c.ArtifactsDir = filepath.Join(dirs, "missing")
				c.TFTPListen = ":70000"
				c.TFTPRoot = filepath.Join(pki, "pxe.crt")
				c.TFTPTimeout = 0
				c.DiscoveryKernel = "../vmlinuz"
				c.DiscoveryInitrd = "/abs/initrd"
				c.DiscoveryKernelArgs = "console=tty0 ${evil}"
				c.RetryInterval = 1500 * time.Millisecond
				c.AgentAPIURL = "tcp://x"
				c.AgentCAFile = notCA
				c.MetricsListen = "9168"
			},
			want: []string{
				"api-url:", "api-timeout:", "http-listen:", "public-url:", "artifacts-dir:", "tftp-listen:",
				"tftp-root:", "is not a directory", "tftp-timeout:", `discovery-kernel: "../vmlinuz"`,
				`discovery-initrd: "/abs/initrd"`, `discovery-kernel-args: "${evil}"`, "retry-interval:",
				"agent-api-url:", "agent-ca-file:", "holds a PRIVATE KEY block", "metrics-listen:",
			},
		},
		"a CA file that is not one": {
			edit: func(c *Config) { c.CAFile = filepath.Join(pki, "pxe.crt") },
			want: []string{"ca:", "holds no PEM certificate"},
		},
		"unsafe public URL": {
			edit: func(c *Config) { c.PublicURL = "http://10.0.0.1:8080/a;b" },
			want: []string{"public-url:", "cannot carry safely"},
		},
		"public URL with a user": {
			edit: func(c *Config) { c.PublicURL = "http://u:p@10.0.0.1:8080" },
			want: []string{"public-url:", "without user"},
		},
		"artifact paths without an artifacts directory": {
			edit: func(c *Config) { c.ArtifactsDir = "" },
			want: []string{"discovery-kernel: \"scout/vmlinuz\" is a path under --artifacts-dir, which is off"},
		},
		"an initrd URL without a file name": {
			edit: func(c *Config) { c.DiscoveryInitrd = "http://images.example/" },
			want: []string{"discovery-initrd: its file name"},
		},
		"kernel arguments with a command": {
			edit: func(c *Config) { c.DiscoveryKernelArgs = "quiet\nshell" },
			want: []string{`discovery-kernel-args: "quiet`},
		},
		"kernel arguments with a chain": {
			edit: func(c *Config) { c.DiscoveryKernelArgs = "quiet || shell" },
			want: []string{`discovery-kernel-args: "||"`},
		},
		"no HTTP listener": {
			edit: func(c *Config) { c.HTTPListen = "" },
			want: []string{"http-listen: empty"},
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
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateHidesPasswords(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.APIURL = "ftp://user:hunter2@carbide.example"
	c.AgentAPIURL = "ftp://user:hunter2@carbide.example"
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate() = %v; want an error without the password", err)
	}
}
