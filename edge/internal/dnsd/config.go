package dnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Role is the daemon's role in the Carbide API: its client certificate is
// dns.crt in the PKI directory.
const Role = "dns"

// Transfers answers zone transfers and NOTIFY, and sends NOTIFYs after
// changes until its context ends: package xfr's Transfers.
type Transfers interface {
	ServeTransfer(w dns.ResponseWriter, r *dns.Msg)
	ServeNotify(w dns.ResponseWriter, r *dns.Msg)
	Run(ctx context.Context) error
}

// Config is the configuration of the DNS daemon. The zero value is not
// usable: start from [DefaultConfig].
type Config struct {
	// APIConfig is how the daemon reaches the Carbide API, with the
	// client certificate of the dns role (Role).
	daemon.APIConfig

	// Listen are the host:port addresses to answer on, UDP and TCP each.
	Listen []string
	// UDPSockets is how many SO_REUSEPORT UDP sockets share each listen
	// address, each read by its own goroutine (default GOMAXPROCS).
	UDPSockets int

	// PrimaryNS is the SOA MNAME; Contact the SOA RNAME, as a mail
	// address or a DNS name; NS the NS set of every zone (default
	// PrimaryNS); NSAddress (NAME=IP) the glue served for NS names inside
	// a served zone.
	PrimaryNS string
	Contact   string
	NS        []string
	NSAddress []string
	// TTL is the TTL of every record without its own.
	TTL time.Duration
	// SOA timers; SOAMinimum is the TTL of negative answers.
	SOARefresh, SOARetry, SOAExpire, SOAMinimum time.Duration

	// AllowTransfer, TSIGKeyFile and Notify configure zone transfers
	// (package xfr); JournalSize is how many diffs each zone keeps for
	// IXFR.
	AllowTransfer []string
	TSIGKeyFile   string
	Notify        []string
	JournalSize   int
	// TSIGSecrets are the TSIG keys (name -> base64 secret) the servers
	// verify requests with, read from TSIGKeyFile by the command.
	TSIGSecrets map[string]string
	// NewTransfers builds what answers AXFR, IXFR and NOTIFY and sends
	// NOTIFYs (package xfr, which imports this one, so the command
	// injects it); nil answers those NOTIMP.
	NewTransfers func(src ZoneSource, reg prometheus.Registerer, logger *slog.Logger) (Transfers, error)

	// RRLRate is the responses a second each client /24 (IPv4) or /56
	// (IPv6) gets, 0 for no limit; RRLBurst how many it may get at once.
	RRLRate, RRLBurst int
	// UDPSize is the largest EDNS payload the daemon sends.
	UDPSize int
	// TCPIdleTimeout closes a TCP connection without a query for that
	// long; MaxTCPConnections bounds the TCP connections open at once.
	TCPIdleTimeout    time.Duration
	MaxTCPConnections int

	// MetricsListen is the host:port of /metrics and /healthz; "" turns
	// it off.
	MetricsListen   string
	MetricsTimeouts daemon.HTTPTimeouts
	// DebugPprof also serves the runtime profiles on MetricsListen.
	DebugPprof bool
}

// DefaultConfig returns the defaults of every flag.
func DefaultConfig() Config {
	return Config{
		APIConfig:         daemon.DefaultAPIConfig(),
		Listen:            []string{":53"},
		UDPSockets:        runtime.GOMAXPROCS(0),
		PrimaryNS:         "ns1.carbide.invalid.",
		Contact:           "hostmaster.carbide.invalid.",
		TTL:               300 * time.Second,
		SOARefresh:        3600 * time.Second,
		SOARetry:          600 * time.Second,
		SOAExpire:         604800 * time.Second,
		SOAMinimum:        60 * time.Second,
		AllowTransfer:     []string{"127.0.0.0/8", "::1/128"},
		JournalSize:       1000,
		UDPSize:           1232,
		TCPIdleTimeout:    10 * time.Second,
		MaxTCPConnections: 1024,
		MetricsListen:     "127.0.0.1:9173",
		MetricsTimeouts:   daemon.DefaultMetricsTimeouts(),
	}
}

// Validate reports every problem of the configuration at once, each saying
// what to change.
func (c *Config) Validate() error {
	errs := c.APIConfig.Validate(Role)
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Listen) == 0 {
		add("listen: none given; give at least one host:port, e.g. :53")
	}
	for _, l := range c.Listen {
		if err := daemon.CheckListen(l); err != nil {
			add("listen: %w", err)
		}
	}
	if c.UDPSockets < 1 || c.UDPSockets > 256 {
		add("udp-sockets: %d; give 1 to 256", c.UDPSockets)
	}
	if _, ok := dns.IsDomainName(c.PrimaryNS); !ok || c.PrimaryNS == "" {
		add("primary-ns: %q is not a DNS name", c.PrimaryNS)
	}
	if _, err := contactName(c.Contact); err != nil {
		add("contact: %w", err)
	}
	for _, ns := range c.NS {
		if _, ok := dns.IsDomainName(ns); !ok || ns == "" {
			add("ns: %q is not a DNS name", ns)
		}
	}
	if _, err := parseNSAddresses(c.NSAddress); err != nil {
		add("ns-address: %w", err)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"ttl", c.TTL}, {"soa-refresh", c.SOARefresh}, {"soa-retry", c.SOARetry}, {"soa-expire", c.SOAExpire}, {"soa-minimum", c.SOAMinimum}} {
		if d.v < time.Second || d.v.Seconds() > math.MaxInt32 {
			add("%s: %s; give whole seconds from 1s to 68 years", d.flag, d.v)
		}
	}
	for _, p := range c.AllowTransfer {
		if _, err := netip.ParsePrefix(p); err != nil {
			add("allow-transfer: %q is not a CIDR prefix such as 192.0.2.0/24", p)
		}
	}
	if c.TSIGKeyFile != "" {
		if _, err := os.Stat(c.TSIGKeyFile); err != nil {
			add("tsig-keyfile: %w", err)
		}
	}
	for _, n := range c.Notify {
		if err := daemon.CheckListen(n); err != nil {
			add("notify: %w", err)
		}
	}
	if c.JournalSize < 1 {
		add("journal-size: %d; give at least 1", c.JournalSize)
	}
	if c.RRLRate < 0 || c.RRLBurst < 0 {
		add("rrl-rate, rrl-burst: give 0 or more")
	}
	if c.UDPSize < dns.MinMsgSize || c.UDPSize > dns.MaxMsgSize {
		add("udp-size: %d; give 512 to 65535 (1232 avoids IP fragments)", c.UDPSize)
	}
	if c.TCPIdleTimeout < time.Second {
		add("tcp-idle-timeout: %s; give at least 1s", c.TCPIdleTimeout)
	}
	if c.MaxTCPConnections < 1 {
		add("max-tcp-connections: %d; give at least 1", c.MaxTCPConnections)
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

// zoneParams turns the flags into the values every zone shares; Validate
// has accepted them.
func (c *Config) zoneParams() ZoneParams {
	contact, _ := contactName(c.Contact)
	nsAddr, _ := parseNSAddresses(c.NSAddress)
	ns := make([]string, 0, len(c.NS))
	for _, n := range c.NS {
		ns = append(ns, fqdn(n))
	}
	if len(ns) == 0 {
		ns = []string{fqdn(c.PrimaryNS)}
	}
	return ZoneParams{
		PrimaryNS:  fqdn(c.PrimaryNS),
		Contact:    contact,
		NS:         ns,
		NSAddress:  nsAddr,
		TTL:        uint32(c.TTL.Seconds()),
		Refresh:    uint32(c.SOARefresh.Seconds()),
		Retry:      uint32(c.SOARetry.Seconds()),
		Expire:     uint32(c.SOAExpire.Seconds()),
		Minimum:    uint32(c.SOAMinimum.Seconds()),
		JournalLen: c.JournalSize,
	}
}

// contactName turns --contact into the SOA RNAME: hostmaster@example.net
// becomes hostmaster.example.net. (a dot in the local part escaped).
func contactName(s string) (string, error) {
	if local, domain, ok := strings.Cut(s, "@"); ok {
		if local == "" || domain == "" {
			return "", fmt.Errorf("%q is not a mail address", s)
		}
		s = strings.ReplaceAll(local, ".", `\.`) + "." + domain
	}
	if _, ok := dns.IsDomainName(s); !ok || s == "" {
		return "", fmt.Errorf("%q is neither a mail address nor a DNS name", s)
	}
	return fqdn(s), nil
}

// parseNSAddresses reads NAME=IP pairs.
func parseNSAddresses(pairs []string) (map[string][]netip.Addr, error) {
	out := make(map[string][]netip.Addr)
	for _, p := range pairs {
		name, ip, ok := strings.Cut(p, "=")
		a, err := netip.ParseAddr(ip)
		if _, isName := dns.IsDomainName(name); !ok || err != nil || !isName || name == "" {
			return nil, fmt.Errorf("%q is not NAME=IP, e.g. ns1.example.net=192.0.2.53", p)
		}
		out[fqdn(name)] = append(out[fqdn(name)], a.Unmap())
	}
	return out, nil
}
