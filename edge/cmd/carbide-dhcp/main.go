// Command carbide-dhcp is Carbide's DHCPv4 daemon: it answers DHCP clients
// and relay agents on the interfaces it is given, and asks the Carbide API
// for every lease. See package dhcpd for what it does, and --help for how
// to run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/carbide-dev/carbide/edge/internal/dhcpd"
)

func main() {
	// The daemon mostly waits on the network and the API. Running its
	// goroutines on one thread spares the wake-ups of idle threads that
	// each packet would otherwise cost, a large share of its CPU time
	// (docs/benchmarks.md). GOMAXPROCS in the environment overrides this.
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-dhcp:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-dhcp --interface eth1 [--interface eth2,eth3] --pki-dir /etc/carbide [flags]

carbide-dhcp is Carbide's DHCPv4 server. It keeps no leases: for every
request it asks the Carbide API (carbide.dhcp.v1.DHCPService), which picks
the segment, enrols unknown MACs and allocates the address, so any number of
carbide-dhcp replicas behind any number of relays agree.

It listens on UDP port 67 on each --interface (bound to that device; it
needs root, or CAP_NET_BIND_SERVICE and CAP_NET_RAW). A request sent on the
interface's own link is placed by the interface's IPv4 address; a relayed
one by the relay's giaddr and the relay agent information option 82 (circuit
id, remote id and link selection). Replies to relays go to giaddr:67.

It authenticates to the API with a client certificate of the dhcp role. With
the API's development PKI, point --pki-dir at <api-data-dir>/pki, which holds
dhcp.crt, dhcp.key and ca.crt.

Network boot: a client sending option 93 gets a boot file by architecture:
iPXE (user class "iPXE") gets --ipxe-script-url with {mac} replaced by its
MAC address; x86 BIOS (0) --bios-file; x86-64 UEFI (7, 9) --efi-x64-file;
arm64 UEFI (11) --efi-arm64-file; x86-64 UEFI HTTP boot (16, vendor class
HTTPClient) --http-boot-url. The next server (siaddr, option 66) is
--tftp-server.

Metrics (Prometheus) are served on --metrics-listen at /metrics:
carbide_dhcp_requests_total{type}, carbide_dhcp_replies_total{type},
carbide_dhcp_drops_total{reason}, carbide_dhcp_api_errors_total{code},
carbide_dhcp_handle_seconds{type} and carbide_dhcp_offer_acks_total;
/healthz answers ok. With --debug-pprof, /debug/pprof/ serves the
runtime profiles (go tool pprof http://127.0.0.1:9167/debug/pprof/profile).

A DHCPREQUEST accepting an offer the daemon made in the last 10 s is
acknowledged without a second API call: the API wrote the lease when it
was offered. Every other request asks the API.

The daemon runs its goroutines on one thread unless GOMAXPROCS is set.

Every flag can also be set as an environment variable: --interface as
CARBIDE_DHCP_INTERFACE (a comma-separated list), --pki-dir as
CARBIDE_DHCP_PKI_DIR, and so on. Flags on the command line win.

Flags:
`

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	cfg, logger, err := parseFlags(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	return cfg.Run(ctx, logger)
}

// parseFlags reads the configuration from the environment and args; it
// leaves checking it to Config.Validate.
func parseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*dhcpd.Config, *slog.Logger, error) {
	fs := daemon.NewFlagSet("carbide-dhcp", usage, stderr)
	cfg := dhcpd.DefaultConfig()
	cfg.APIConfig.AddFlags(fs, dhcpd.Role, "a request whose call fails gets no reply, and the client retries")
	fs.Var(daemon.NewListFlag(&cfg.Interfaces), "interface", "`name` of a network interface to serve on; repeat the flag or give a comma-separated list (required)")
	fs.TextVar(&cfg.ServerID, "server-id", cfg.ServerID, "server identifier (option 54, an IPv4 `address`) of every reply; empty: the daemon's IPv4 address on the receiving interface")
	fs.IntVar(&cfg.Port, "port", cfg.Port, "UDP port to listen on and to send replies to relay agents to (change only for testing)")
	fs.IntVar(&cfg.ClientPort, "client-port", cfg.ClientPort, "UDP port to send replies to clients to (change only for testing)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "packets handled at once per interface; more are dropped (carbide_dhcp_drops_total{reason=\"busy\"})")
	fs.IntVar(&cfg.TentativeOfferLimit, "tentative-offer-limit", cfg.TentativeOfferLimit, "while at most this many DISCOVERs are answered at once, a new client's offer is made without a write (the REQUEST writes it), which answers sooner; past it the lease is written at the DISCOVER, in batches, which costs less; 0: always at the DISCOVER")
	fs.IntVar(&cfg.APICalls, "api-calls", cfg.APICalls, "lease calls to the API at once; requests that arrive meanwhile go together in the next call (carbide_dhcp_lease_batch_size)")
	fs.TextVar(&cfg.TFTPServer, "tftp-server", cfg.TFTPServer, "next server (siaddr, option 66; an IPv4 `address`) of replies with a boot file; empty: the server identifier")
	fs.StringVar(&cfg.IPXEScriptURL, "ipxe-script-url", "", "boot file of iPXE clients, with "+dhcpd.MACPlaceholder+" replaced by the client's MAC (52:54:00:12:34:56); empty: http://<server-id>:8080/ipxe/"+dhcpd.MACPlaceholder)
	fs.StringVar(&cfg.BIOSFile, "bios-file", cfg.BIOSFile, "boot file of x86 BIOS PXE clients (arch 0); empty: none")
	fs.StringVar(&cfg.EFIX64File, "efi-x64-file", cfg.EFIX64File, "boot file of x86-64 UEFI PXE clients (arch 7 and 9), e.g. snponly.efi or ipxe.efi; empty: none")
	fs.StringVar(&cfg.EFIARM64File, "efi-arm64-file", "", "boot file of arm64 UEFI PXE clients (arch 11); empty: none")
	fs.StringVar(&cfg.HTTPBootURL, "http-boot-url", "", "boot URL of x86-64 UEFI HTTP boot clients (arch 16, vendor class HTTPClient); empty: none")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "host:port of the Prometheus /metrics and /healthz endpoint; empty: off")
	cfg.MetricsTimeouts.AddFlags(fs, "metrics-", "how long a scrape of the Prometheus endpoint may take to write")
	fs.BoolVar(&cfg.DebugPprof, "debug-pprof", false, "also serve the runtime profiles (net/http/pprof) at /debug/pprof/ on --metrics-listen, without authentication: for a lab or a benchmark, never in production")
	logFlags := daemon.AddLogFlags(fs, "log level: debug (every packet), info, warn or error")
	if err := daemon.Parse(fs, "CARBIDE_DHCP_", args, lookupEnv); err != nil {
		return nil, nil, err
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	return &cfg, logger, nil
}
