package pxed

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
)

// Role is the daemon's role in the Carbide API: its client certificate is
// pxe.crt in the PKI directory.
const Role = "pxe"

// Config is the configuration of the PXE daemon. The zero value is not
// usable: start from [DefaultConfig].
type Config struct {
	// APIConfig is how the daemon reaches the Carbide API, with the
	// client certificate of the pxe role (Role).
	daemon.APIConfig

	// HTTPListen is the host:port of the HTTP server (iPXE scripts, agent
	// configuration, artifacts, cloud-init).
	HTTPListen string
	// PublicURL is the base URL machines reach the HTTP server at, used
	// in the scripts it renders; "" means http://<Host header of the
	// request>.
	PublicURL string
	// ArtifactsDir is the directory served under /artifacts/ (kernels,
	// initrds); "" serves none.
	ArtifactsDir string
	// HTTPTimeouts bound the HTTP server's connections; its write timeout
	// is how long a response may go without sending (see httpChunk).
	HTTPTimeouts daemon.HTTPTimeouts

	// TFTPListen is the host:port of the TFTP server; "" turns it off.
	TFTPListen string
	// TFTPRoot is the directory served over TFTP.
	TFTPRoot string
	// TFTPTimeout is how long a TFTP transfer waits for each
	// acknowledgement before it sends again.
	TFTPTimeout time.Duration
	// TFTPMaxTransfers is the most TFTP transfers in progress at once;
	// more are refused with an error packet.
	TFTPMaxTransfers int

	// DiscoveryKernel and DiscoveryInitrd are the discovery image: paths
	// under ArtifactsDir (served at <public-url>/artifacts/<path>) or
	// absolute http(s) URLs.
	DiscoveryKernel, DiscoveryInitrd string
	// DiscoveryKernelArgs are extra kernel arguments of the discovery
	// image, separated by spaces.
	DiscoveryKernelArgs string
	// RetryInterval is how long the script of an unknown MAC waits before
	// it asks again; whole seconds.
	RetryInterval time.Duration

	// AgentAPIURL is the API URL handed to the discovery agent; "" means
	// APIURL.
	AgentAPIURL string
	// AgentCAFile is the CA bundle handed to the discovery agent; "" means
	// the one the daemon trusts for the API (CAFile, or ca.crt in PKIDir).
	AgentCAFile string

	// MetricsListen is the host:port of the Prometheus endpoint; "" turns
	// it off.
	MetricsListen string
	// MetricsTimeouts bound the connections of the Prometheus endpoint.
	MetricsTimeouts daemon.HTTPTimeouts
}

// DefaultConfig returns the defaults; only the credentials are left to
// set.
func DefaultConfig() Config {
	return Config{
		APIConfig:           daemon.DefaultAPIConfig(),
		HTTPListen:          ":8080",
		ArtifactsDir:        "/var/lib/carbide/artifacts",
		HTTPTimeouts:        daemon.HTTPTimeouts{Write: 30 * time.Second, Idle: 2 * time.Minute},
		TFTPListen:          ":69",
		TFTPRoot:            "/usr/lib/ipxe",
		TFTPTimeout:         5 * time.Second,
		TFTPMaxTransfers:    64,
		DiscoveryKernel:     "scout/vmlinuz",
		DiscoveryInitrd:     "scout/scout.cpio.gz",
		DiscoveryKernelArgs: "console=ttyS0,115200 console=tty0",
		RetryInterval:       10 * time.Second,
		MetricsListen:       "127.0.0.1:9168",
		MetricsTimeouts:     daemon.DefaultMetricsTimeouts(),
	}
}

// agentAPIURL is the API URL the discovery agent gets.
func (c *Config) agentAPIURL() string {
	if c.AgentAPIURL != "" {
		return c.AgentAPIURL
	}
	return c.APIURL
}

// agentCAFile is the CA bundle the discovery agent gets ("" for none).
func (c *Config) agentCAFile() string {
	if c.AgentCAFile != "" {
		return c.AgentCAFile
	}
	_, _, ca := c.Credentials(Role)
	return ca
}

// Validate reports every problem of the configuration at once, each saying
// what to change.
func (c *Config) Validate() error {
	errs := c.APIConfig.Validate(Role)
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.HTTPListen == "" {
		add("http-listen: empty; give the host:port to serve HTTP on, e.g. :8080")
	} else if err := daemon.CheckListen(c.HTTPListen); err != nil {
		add("http-listen: %w", err)
	}
	errs = append(errs, c.HTTPTimeouts.Check("http-")...)
	if c.PublicURL != "" {
		if err := checkPublicURL(c.PublicURL); err != nil {
			add("public-url: %w", err)
		}
	}
	if c.ArtifactsDir != "" {
		if err := checkDir(c.ArtifactsDir); err != nil {
			add("artifacts-dir: %w; create it and put the discovery kernel and initrd in it, or give --artifacts-dir \"\" to serve none", err)
		}
	}

	if c.TFTPListen != "" {
		if err := daemon.CheckListen(c.TFTPListen); err != nil {
			add("tftp-listen: %w", err)
		}
		if err := checkDir(c.TFTPRoot); err != nil {
			add("tftp-root: %w; install iPXE (Debian: apt install ipxe) or point --tftp-root at the directory holding undionly.kpxe and snponly.efi", err)
		}
	}
	if c.TFTPTimeout < time.Second {
		add("tftp-timeout: %s; give at least 1s", c.TFTPTimeout)
	}
	if c.TFTPMaxTransfers < 1 {
		add("tftp-max-transfers: %d; give at least 1", c.TFTPMaxTransfers)
	}

	for _, f := range []struct{ flag, value string }{
		{"discovery-kernel", c.DiscoveryKernel}, {"discovery-initrd", c.DiscoveryInitrd},
	} {
		if err := checkArtifactRef(f.value); err != nil {
			add("%s: %w", f.flag, err)
		} else if !isURL(f.value) && c.ArtifactsDir == "" {
			add("%s: %q is a path under --artifacts-dir, which is off; give a URL or an artifacts directory", f.flag, f.value)
		}
	}
	if err := checkArtifactRef(c.DiscoveryInitrd); err == nil {
		if name := initrdName(c.DiscoveryInitrd); !validInitrdName(name) {
			add("discovery-initrd: its file name %q is not usable as an initrd name", name)
		}
	}
	if strings.ContainsAny(c.DiscoveryKernelArgs, "\t\n\v\f\r") {
		add("discovery-kernel-args: %q: separate the arguments with spaces only", c.DiscoveryKernelArgs)
	}
	for _, arg := range strings.Fields(c.DiscoveryKernelArgs) {
		if !safeWord(arg) {
			add("discovery-kernel-args: %q has a character an iPXE script cannot carry safely; use letters, digits and -._~:/%%+@,=", arg)
		}
	}
	if c.RetryInterval < time.Second || c.RetryInterval%time.Second != 0 {
		add("retry-interval: %s; give a whole number of seconds, at least 1s", c.RetryInterval)
	}

	if c.AgentAPIURL != "" {
		if err := checkHTTPURL(c.AgentAPIURL); err != nil {
			add("agent-api-url: %w", err)
		}
	}
	// The agent gets the CA bundle as PEM text; check now that it is one.
	// (A CA file that does not exist is reported as ca: already.)
	_, _, ca := c.Credentials(Role)
	if c.AgentCAFile != "" {
		if _, err := readCAPEM(c.AgentCAFile); err != nil {
			add("agent-ca-file: %w", err)
		}
	} else if _, err := os.Stat(ca); ca != "" && err == nil {
		if _, err := readCAPEM(ca); err != nil {
			add("ca: %w", err)
		}
	}

	if c.MetricsListen != "" {
		if err := daemon.CheckListen(c.MetricsListen); err != nil {
			add("metrics-listen: %w", err)
		}
		errs = append(errs, c.MetricsTimeouts.Check("metrics-")...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	return nil
}

func checkDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL; give one like https://carbide.example:1079")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", u.Redacted())
	}
	return nil
}

// checkPublicURL accepts the base URL placed into scripts: http(s), a
// host, no user, query or fragment, and only characters a script can carry.
func checkPublicURL(s string) error {
	if err := checkHTTPURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") {
		return fmt.Errorf("%q: give a base URL without user, query or fragment, e.g. http://10.0.0.1:8080", u.Redacted())
	}
	if !safeWord(s) {
		return fmt.Errorf("%q has a character an iPXE script cannot carry safely", s)
	}
	return nil
}

// checkArtifactRef accepts an absolute http(s) URL or a relative path
// without "..", each made of characters a script can carry.
func checkArtifactRef(s string) error {
	switch {
	case s == "":
		return errors.New("empty; give a path under --artifacts-dir or a URL")
	case !safeWord(s):
		return fmt.Errorf("%q has a character an iPXE script cannot carry safely", s)
	case isURL(s):
		return checkHTTPURL(s)
	case !fs.ValidPath(s) || s == ".":
		return fmt.Errorf("%q is not a relative path inside --artifacts-dir (no leading /, no ..)", s)
	}
	return nil
}

// initrdName is the name iPXE gives the initrd, and the kernel's initrd=
// argument: the last element of its path.
func initrdName(ref string) string {
	if u, err := url.Parse(ref); err == nil && isURL(ref) {
		return path.Base(u.Path)
	}
	return path.Base(ref)
}

// validInitrdName accepts a file name for iPXE's initrd --name and the
// kernel's initrd= argument.
func validInitrdName(name string) bool {
	return safeWord(name) && !strings.Contains(name, "/") && name != "." && name != ".."
}

// readCAPEM reads a PEM bundle of CA certificates, checking that it holds
// at least one and nothing that does not parse.
func readCAPEM(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return "", fmt.Errorf("%s holds a %s block; it must hold only certificates", file, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		n++
	}
	if n == 0 {
		return "", fmt.Errorf("%s holds no PEM certificate", file)
	}
	return string(b), nil
}
