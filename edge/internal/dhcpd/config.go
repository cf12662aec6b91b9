package dhcpd

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
)

// Role is the daemon's role in the Carbide API: its client certificate is
// dhcp.crt in the PKI directory.
const Role = "dhcp"

// MACPlaceholder is replaced by the client's MAC address in the iPXE
// script URL.
const MACPlaceholder = "{mac}"

// Config is the configuration of the DHCP daemon. The zero value is not
// usable: start from [DefaultConfig].
type Config struct {
	// APIConfig is how the daemon reaches the Carbide API, with the
	// client certificate of the dhcp role (Role).
	daemon.APIConfig

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
	// APICalls is how many lease calls to the API the daemon makes at
	// once; the requests that arrive meanwhile go together in the next
	// call (LeaseBatch). More calls keep the API and PostgreSQL busy while
	// one waits for its commit to reach the disk; fewer make bigger
	// batches, which cost less per request.
	APICalls int
	// TentativeOfferLimit: while at most this many DISCOVERs are being
	// answered at once, an offer to a new client is made without a write
	// (the REQUEST that accepts it writes); past it, the lease is written
	// at the DISCOVER. 0 writes at every DISCOVER.
	TentativeOfferLimit int

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
	// MetricsTimeouts bound the connections of the Prometheus endpoint.
	MetricsTimeouts daemon.HTTPTimeouts
	// DebugPprof also serves the runtime profiles of net/http/pprof under
	// /debug/pprof/ on MetricsListen, to anyone who can reach it: for
	// finding where the time goes in a lab or a benchmark.
	DebugPprof bool
}

// DefaultConfig returns the defaults; only the interfaces and the
// credentials are left to set.
func DefaultConfig() Config {
	return Config{
		APIConfig:   daemon.DefaultAPIConfig(),
		Port:        67,
		ClientPort:  68,
		MaxInFlight: 256,
		APICalls:    2,

		TentativeOfferLimit: 2,
		BIOSFile:            "undionly.kpxe",
		EFIX64File:          "snponly.efi",
		MetricsListen:       "127.0.0.1:9167",
		MetricsTimeouts:     daemon.DefaultMetricsTimeouts(),
	}
}

// Validate reports every problem of the configuration at once, each saying
// what to change.
func (c *Config) Validate() error {
	errs := c.APIConfig.Validate(Role)
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

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
	if c.TentativeOfferLimit < 0 || c.TentativeOfferLimit > 1024 {
		add("tentative-offer-limit: %d; give 0 to 1024", c.TentativeOfferLimit)
	}
	if c.APICalls < 1 || c.APICalls > 64 {
		add("api-calls: %d; give 1 to 64", c.APICalls)
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
		if err := daemon.CheckListen(c.MetricsListen); err != nil {
			add("metrics-listen: %w", err)
		}
		errs = append(errs, c.MetricsTimeouts.Check("metrics-")...)
	} else if c.DebugPprof {
		add("debug-pprof: the profiles are served on --metrics-listen, which is empty; give it an address")
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
