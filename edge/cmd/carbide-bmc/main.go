// Command carbide-bmc is Carbide's BMC daemon: it claims power and boot
// operations and power-state polls from the Carbide API, one machine at a
// time per lease, and carries them out over IPMI or Redfish. See package
// bmcd for what it does, and --help for how to run it.
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
	"strings"
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/bmcd"
	"github.com/carbide-dev/carbide/edge/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-bmc:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-bmc --pki-dir /etc/carbide [flags]

carbide-bmc powers machines on and off and sets how they boot, through
their BMCs (IPMI over LAN, or Redfish), and reads their power state. It
keeps no state: it claims work from the Carbide API (carbide.bmc.v1.
BMCService) under a lease per machine, so that any number of carbide-bmc
replicas share the machines and no two ever act on one machine at once. A
replica that dies stops renewing its leases; when they expire another
replica takes its machines over.

It authenticates to the API with a client certificate of the bmc role. With
the API's development PKI, point --pki-dir at <api-data-dir>/pki, which holds
bmc.crt, bmc.key and ca.crt. BMC passwords come from the API sealed to a key
the daemon makes at start; they are never written to disk or logged.

Metrics (Prometheus) are served on --metrics-listen at /metrics:
carbide_bmc_operations_total{type,result}, carbide_bmc_power_reads_total,
carbide_bmc_call_seconds{call,result}, carbide_bmc_leases_held,
carbide_bmc_leases_lost_total, carbide_bmc_takeovers_total and
carbide_bmc_api_errors_total{rpc,code}; /healthz answers ok.

Every flag can also be set as an environment variable: --pki-dir as
CARBIDE_BMC_PKI_DIR, --poll-interval as CARBIDE_BMC_POLL_INTERVAL, and so on.
Flags on the command line win.

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
func parseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*bmcd.Config, *slog.Logger, error) {
	fs := daemon.NewFlagSet("carbide-bmc", usage, stderr)
	cfg := bmcd.DefaultConfig()
	cfg.APIConfig.AddFlags(fs, bmcd.Role, "a claim, renewal or report that fails is tried again at the next turn")
	fs.StringVar(&cfg.Worker, "worker", cfg.Worker, "this daemon's name in leases and operations; must differ between replicas")
	fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", cfg.MaxConcurrent, "machines worked on at once (operations and polls); each BMC gets one call at a time")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "how often each machine's power state is read; 0: never")
	fs.DurationVar(&cfg.ClaimInterval, "claim-interval", cfg.ClaimInterval, "how long to wait before asking the API for work again after finding none")
	fs.DurationVar(&cfg.CallTimeout, "call-timeout", cfg.CallTimeout, "deadline of each call to a BMC")
	fs.IntVar(&cfg.Attempts, "attempts", cfg.Attempts, "tries of an operation whose BMC fails in a way that may pass (timeout, refused connection)")
	fs.DurationVar(&cfg.RetryBackoff, "retry-backoff", cfg.RetryBackoff, "wait after the first failed try, doubled after each")
	providers := fs.String("providers", strings.Join(cfg.Providers, ","), "protocols tried, in order, for a BMC whose protocol is auto: redfish, ipmi")
	fs.StringVar(&cfg.RedfishCAFile, "redfish-ca", "", "CA bundle (PEM) Redfish BMC certificates must chain to; empty: not verified (BMCs mostly ship self-signed certificates)")
	fs.BoolVar(&cfg.IPMIIgnoreBootValid, "ipmi-ignore-boot-valid", false,
		"on a takeover, count an IPMI boot override with the wanted device as set even when the BMC reports its boot flags valid bit clear: for BMCs that never set it (OpenIPMI's ipmi_sim)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long work in progress may take to finish when the daemon stops")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "host:port of the Prometheus /metrics and /healthz endpoint; empty: off")
	cfg.MetricsTimeouts.AddFlags(fs, "metrics-", "how long a scrape of the Prometheus endpoint may take to write")
	fs.BoolVar(&cfg.DebugPprof, "debug-pprof", false, "serve the runtime profiles under /debug/pprof/ on --metrics-listen")
	logFlags := daemon.AddLogFlags(fs, "log level: debug, info (every operation), warn or error")
	if err := daemon.Parse(fs, "CARBIDE_BMC_", args, lookupEnv); err != nil {
		return nil, nil, err
	}
	cfg.Providers = nil
	for _, p := range strings.Split(*providers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Providers = append(cfg.Providers, p)
		}
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	return &cfg, logger, nil
}
