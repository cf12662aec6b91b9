package dhcpd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MACPlaceholder is replaced by the client's MAC address in the iPXE
// script URL.
const MACPlaceholder = "{mac}"

// Config is the configuration of the DHCP daemon. The zero value is not
// usable: start from [DefaultConfig].
type Config struct {
	// APIURL is the base URL of the Carbide API, e.g.
	// https://carbide.example:1079.
	APIURL string
	// PKIDir is a directory holding dhcp.crt, dhcp.key and ca.crt, as the
	// API's development PKI writes them (<api-data-dir>/pki). CertFile,
	// KeyFile and CAFile override the files in it.
	PKIDir string
	// CertFile and KeyFile are the daemon's client certificate (of the
	// dhcp role) and its key; CAFile is the CA bundle that the API's
	// certificate must chain to ("" for the system roots).
	CertFile, KeyFile, CAFile string
	// APITimeout bounds every API call.
	APITimeout time.Duration

	// Interfaces are the network interfaces to serve on.
	Interfaces []string
	// Port is the UDP port to listen on, and the port replies to relay
	// agents go to (67).
	Port int
	// ClientPort is the UDP port replies to clients go to (68).
	ClientPort int
	// ServerID, if valid, is the server identifier (option 54) of every
	// reply; otherwise each interface's own address is.
	ServerID netip.Addr
	// MaxInFlight is how many packets each interface handles at once;
	// more are dropped. Keep it small: past what the API answers within
	// APITimeout, more packets in flight only queue up in the API until
	// every call misses its deadline and no client gets an answer.
	MaxInFlight int

	// TFTPServer, if valid, is the next server (siaddr, option 66) of boot
	// replies; otherwise the server identifier is.
	TFTPServer netip.Addr
	// IPXEScriptURL is the boot file of iPXE clients, with MACPlaceholder
	// replaced by the client's MAC; "" means
	// http://<server-id>:8080/ipxe/{mac}.
	IPXEScriptURL string
	// BIOSFile is the boot file of x86 BIOS clients (arch 0); "" for none.
	BIOSFile string
	// EFIX64File is the boot file of x86-64 UEFI clients (arch 7 and 9);
	// "" for none.
	EFIX64File string
	// EFIARM64File is the boot file of arm64 UEFI clients (arch 11); ""
	// for none.
	EFIARM64File string
	// HTTPBootURL is the boot file of x86-64 UEFI HTTP boot clients (arch
	// 16); "" for none.
	HTTPBootURL string

	// MetricsListen is the host:port of the Prometheus endpoint; "" turns
	// it off.
	MetricsListen string
}

// DefaultConfig returns the defaults; only the interfaces and the
// credentials are left to set.
func DefaultConfig() Config {
	return Config{
		APIURL:        "https://127.0.0.1:1079",
		APITimeout:    2 * time.Second,
		Port:          67,
		ClientPort:    68,
		MaxInFlight:   32,
		BIOSFile:      "undionly.kpxe",
		EFIX64File:    "snponly.efi",
		MetricsListen: "127.0.0.1:9167",
	}
}

// credentials returns the client certificate, key and CA files: the
// explicit ones, else those in PKIDir.
func (c *Config) credentials() (cert, key, ca string) {
	cert, key, ca = c.CertFile, c.KeyFile, c.CAFile
	if c.PKIDir != "" {
		if cert == "" {
			cert = filepath.Join(c.PKIDir, "dhcp.crt")
		}
		if key == "" {
			key = filepath.Join(c.PKIDir, "dhcp.key")
		}
		if ca == "" {
			ca = filepath.Join(c.PKIDir, "ca.crt")
		}
	}
	return cert, key, ca
}

// Validate reports every problem of the configuration at once, each saying
// what to change.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	u, err := url.Parse(c.APIURL)
	switch {
	case c.APIURL == "":
		add("api-url: empty; give the Carbide API's URL, e.g. https://carbide.example:1079")
	case err != nil:
		// url.Error quotes the whole URL, which may hold a password.
		add("api-url: not a URL; give one like https://carbide.example:1079")
		u = nil
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		add("api-url: %q is not an http:// or https:// URL with a host", u.Redacted())
	}
	cert, key, ca := c.credentials()
	if u != nil && u.Scheme == "https" {
		if cert == "" || key == "" {
			add("no client certificate: give --pki-dir (the API's <data-dir>/pki, holding dhcp.crt and dhcp.key) or --cert and --key")
		}
	}
	if u != nil && u.Scheme == "http" && (cert != "" || key != "" || ca != "") {
		add("api-url: %q is plain http; client certificates need an https:// URL", u.Redacted())
	}
	for _, f := range []struct{ flag, path string }{{"cert", cert}, {"key", key}, {"ca", ca}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add("%s: %w", f.flag, err)
		}
	}
	if c.APITimeout <= 0 {
		add("api-timeout: %s; give a positive duration, e.g. 2s", c.APITimeout)
	}

	if len(c.Interfaces) == 0 {
		add("interface: none given; name at least one network interface to serve on (--interface eth1)")
	}
	seen := make(map[string]bool, len(c.Interfaces))
	for _, name := range c.Interfaces {
		switch {
		case name == "":
			add("interface: empty name")
		case len(name) > 15 || strings.ContainsAny(name, "/ \t\n:"):
			add("interface: %q is not a network interface name", name)
		case seen[name]:
			add("interface: %q given twice", name)
		}
		seen[name] = true
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"port", c.Port}, {"client-port", c.ClientPort}} {
		if p.port < 1 || p.port > 65535 {
			add("%s: %d is not a UDP port (1-65535)", p.flag, p.port)
		}
	}
	if err := checkHostAddr(c.ServerID); err != nil {
		add("server-id: %w", err)
	}
	if c.MaxInFlight < 1 {
		add("max-in-flight: %d; give at least 1", c.MaxInFlight)
	}

	if err := checkHostAddr(c.TFTPServer); err != nil {
		add("tftp-server: %w", err)
	}
	if c.IPXEScriptURL != "" {
		if err := checkHTTPURL(strings.ReplaceAll(c.IPXEScriptURL, MACPlaceholder, "52:54:00:12:34:56")); err != nil {
			add("ipxe-script-url: %w", err)
		}
	}
	if c.HTTPBootURL != "" {
		if err := checkHTTPURL(c.HTTPBootURL); err != nil {
			add("http-boot-url: %w", err)
		}
	}
	for _, f := range []struct{ flag, name string }{
		{"bios-file", c.BIOSFile}, {"efi-x64-file", c.EFIX64File}, {"efi-arm64-file", c.EFIARM64File},
	} {
		if len(f.name) > 255 || strings.ContainsAny(f.name, "\x00\n") {
			add("%s: %q is not a usable boot file name", f.flag, f.name)
		}
	}

	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			add("metrics-listen: %w", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add("metrics-listen: %q has no valid port", c.MetricsListen)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	return nil
}

// checkHostAddr accepts an unset address or a unicast IPv4 address.
func checkHostAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return nil
	case !a.Is4():
		return fmt.Errorf("%s is not an IPv4 address", a)
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not a unicast address", a)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", s)
	}
	return nil
}
