// Command carbide-dns is Carbide's authoritative DNS server: it answers
// for every machine and instance from memory, fed by the Carbide API's
// Watch stream. See package dnsd for what it does, docs/dns.md for how to
// run it, and --help for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/carbide-dev/carbide/edge/internal/dnsd"
	"github.com/carbide-dev/carbide/edge/internal/dnsd/xfr"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-dns:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-dns --pki-dir /etc/carbide [--listen :53] [flags]

carbide-dns is Carbide's authoritative DNS server. It keeps every name in
memory, fed by one Watch stream of the Carbide API (machines, segments,
instances), so any number of replicas answer the same, and keep answering
while the API is down; when the API returns they resume from the last
change they applied.

Zones: each segment's domain (A/AAAA of its machines' and instances'
hostnames, and the segment's static CNAME, TXT and SRV records) and the
reverse zones of each segment's prefix (PTR; octet-aligned, a prefix
between octets split into the zones of the next octet, RFC 2317 names
such as 64-127.2.0.10.in-addr.arpa. for prefixes longer than /24). Every
zone has the SOA and NS of --primary-ns, --contact, --ns and the --soa-*
timers; its serial is the API revision of its last change, the same on
every replica.

It answers on UDP and TCP on each --listen address: authoritatively,
REFUSED for names outside its zones, EDNS0 up to --udp-size, minimal ANY
(RFC 8482), with optional response rate limiting per client /24 or /56
(--rrl-rate). Zone transfers: AXFR, and IXFR from a journal of the last
--journal-size changes of each zone, to clients in --allow-transfer and,
when --tsig-keyfile is given, signed with one of its keys; after each
change a NOTIFY goes to every --notify secondary (signed with the key
file's first key by name, if any).

It authenticates to the API with a client certificate of the dns role.
With the API's development PKI, point --pki-dir at <api-data-dir>/pki.

Metrics (Prometheus) are served on --metrics-listen at /metrics:
carbide_dns_queries_total{qtype,rcode}, carbide_dns_query_seconds,
carbide_dns_drops_total{reason}, carbide_dns_zone_records{zone},
carbide_dns_zones, carbide_dns_revision, carbide_dns_stream_lag_seconds,
carbide_dns_stream_breaks_total. /healthz answers 503 until the first
snapshot is in memory, then ok.

Every flag can also be set as an environment variable: --listen as
CARBIDE_DNS_LISTEN (a comma-separated list), --pki-dir as
CARBIDE_DNS_PKI_DIR, and so on. Flags on the command line win.

Flags:
`

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	cfg, logger, err := parseFlags(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	if err := withTransfers(cfg); err != nil {
		return err
	}
	return cfg.Run(ctx, logger)
}

// withTransfers wires zone transfers (package xfr) into cfg: the TSIG
// keys of --tsig-keyfile for the servers to verify requests with, and the
// Transfers answering AXFR, IXFR and NOTIFY and sending NOTIFYs to
// --notify.
func withTransfers(cfg *dnsd.Config) error {
	var algs map[string]string
	if cfg.TSIGKeyFile != "" {
		f, err := os.Open(cfg.TSIGKeyFile)
		if err != nil {
			return fmt.Errorf("tsig-keyfile: %w", err)
		}
		cfg.TSIGSecrets, algs, err = xfr.ParseKeyFile(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("tsig-keyfile %s: %w", cfg.TSIGKeyFile, err)
		}
	}
	var allow []netip.Prefix
	for _, p := range cfg.AllowTransfer {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("allow-transfer: %q is not a CIDR prefix such as 192.0.2.0/24", p)
		}
		allow = append(allow, prefix)
	}
	// NOTIFYs are signed with the first key of the file, when there is
	// one: the secondaries then know it is this primary.
	var notifyKey string
	for name := range cfg.TSIGSecrets {
		if notifyKey == "" || name < notifyKey {
			notifyKey = name
		}
	}
	cfg.NewTransfers = func(src dnsd.ZoneSource, reg prometheus.Registerer, logger *slog.Logger) (dnsd.Transfers, error) {
		return xfr.New(src, xfr.Config{
			AllowTransfer:  allow,
			TSIGSecrets:    cfg.TSIGSecrets,
			TSIGAlgorithms: algs,
			NotifyTargets:  cfg.Notify,
			NotifyKey:      notifyKey,
			Logger:         logger,
			Metrics:        reg,
		})
	}
	return nil
}

// parseFlags reads the configuration from the environment and args; it
// leaves checking it to Config.Validate.
func parseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*dnsd.Config, *slog.Logger, error) {
	fs := daemon.NewFlagSet("carbide-dns", usage, stderr)
	cfg := dnsd.DefaultConfig()
	cfg.APIConfig.AddFlags(fs, dnsd.Role, "the Watch stream is reopened after a failed call, and answers come from memory meanwhile")
	fs.Var(daemon.NewListFlag(&cfg.Listen), "listen", "`host:port` to answer on, UDP and TCP; repeat the flag or give a comma-separated list (default :53)")
	fs.IntVar(&cfg.UDPSockets, "udp-sockets", cfg.UDPSockets, "UDP sockets per --listen address (SO_REUSEPORT), each read by its own goroutine; default GOMAXPROCS")
	fs.StringVar(&cfg.PrimaryNS, "primary-ns", cfg.PrimaryNS, "SOA MNAME of every zone (a DNS `name`)")
	fs.StringVar(&cfg.Contact, "contact", cfg.Contact, "SOA RNAME of every zone: a mail address (hostmaster@example.net) or a DNS name")
	fs.Var(daemon.NewListFlag(&cfg.NS), "ns", "NS `name` of every zone; repeatable; default --primary-ns")
	fs.Var(daemon.NewListFlag(&cfg.NSAddress), "ns-address", "`NAME=IP` glue: an A or AAAA served for an NS name inside a served zone; repeatable")
	fs.DurationVar(&cfg.TTL, "ttl", cfg.TTL, "TTL of the records (whole seconds)")
	fs.DurationVar(&cfg.SOARefresh, "soa-refresh", cfg.SOARefresh, "SOA refresh of every zone")
	fs.DurationVar(&cfg.SOARetry, "soa-retry", cfg.SOARetry, "SOA retry of every zone")
	fs.DurationVar(&cfg.SOAExpire, "soa-expire", cfg.SOAExpire, "SOA expire of every zone")
	fs.DurationVar(&cfg.SOAMinimum, "soa-minimum", cfg.SOAMinimum, "SOA minimum of every zone: the TTL of negative answers")
	fs.Var(daemon.NewListFlag(&cfg.AllowTransfer), "allow-transfer", "`CIDR` of clients allowed zone transfers; repeatable (default 127.0.0.0/8 and ::1/128)")
	fs.StringVar(&cfg.TSIGKeyFile, "tsig-keyfile", "", "`file` of TSIG keys, lines \"name algorithm base64secret\" (hmac-sha256 or hmac-sha512; # comments); transfers then need one")
	fs.Var(daemon.NewListFlag(&cfg.Notify), "notify", "`host:port` of a secondary to send NOTIFY to after a zone changes; repeatable")
	fs.IntVar(&cfg.JournalSize, "journal-size", cfg.JournalSize, "diffs kept per zone for IXFR; an older serial gets a full transfer")
	fs.IntVar(&cfg.RRLRate, "rrl-rate", 0, "responses per second to each client /24 (IPv4) or /56 (IPv6), more are dropped (carbide_dns_drops_total{reason=\"rate_limited\"}); 0: no limit")
	fs.IntVar(&cfg.RRLBurst, "rrl-burst", 0, "responses a client network may get at once under --rrl-rate; 0: --rrl-rate")
	fs.IntVar(&cfg.UDPSize, "udp-size", cfg.UDPSize, "largest EDNS UDP payload sent, in bytes; larger answers are truncated (TC) for the client to retry over TCP")
	fs.DurationVar(&cfg.TCPIdleTimeout, "tcp-idle-timeout", cfg.TCPIdleTimeout, "close a TCP connection without a query for this long")
	fs.IntVar(&cfg.MaxTCPConnections, "max-tcp-connections", cfg.MaxTCPConnections, "TCP connections open at once per --listen address; more wait to be accepted")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "host:port of the Prometheus /metrics and /healthz endpoint; empty: off")
	cfg.MetricsTimeouts.AddFlags(fs, "metrics-", "how long a scrape of the Prometheus endpoint may take to write")
	fs.BoolVar(&cfg.DebugPprof, "debug-pprof", false, "also serve the runtime profiles (net/http/pprof) at /debug/pprof/ on --metrics-listen, without authentication: for a lab or a benchmark, never in production")
	logFlags := daemon.AddLogFlags(fs, "log level: debug, info, warn or error")
	if err := daemon.Parse(fs, "CARBIDE_DNS_", args, lookupEnv); err != nil {
		return nil, nil, err
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	return &cfg, logger, nil
}
