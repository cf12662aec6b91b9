// Command carbide-pxe is Carbide's PXE daemon: it serves the iPXE binaries
// over TFTP, and per-machine iPXE scripts, the discovery agent's
// configuration, boot artifacts and cloud-init data over HTTP, asking the
// Carbide API how each machine boots. See package pxed for what it does,
// and --help for how to run it.
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
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/carbide-dev/carbide/edge/internal/pxed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-pxe:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-pxe --pki-dir /etc/carbide [flags]

carbide-pxe is Carbide's network boot server. It keeps no state: for every
machine that boots it asks the Carbide API (carbide.boot.v1.BootService)
what the machine boots, so any number of replicas agree.

TFTP (--tftp-listen, UDP port 69; needs root or CAP_NET_BIND_SERVICE)
serves the files under --tftp-root read-only, at most --tftp-max-transfers
at a time, with the blksize and tsize options: the iPXE binaries carbide-dhcp names (undionly.kpxe, snponly.efi).

HTTP (--http-listen) serves:
  /ipxe/<mac>                   the machine's iPXE script
  /agent/<mac>.json             the discovery agent's configuration and token
  /artifacts/<path>             files under --artifacts-dir (kernel, initrd)
  /cloud-init/<mac>/meta-data   a NoCloud seed (also user-data, vendor-data)

It authenticates to the API with a client certificate of the pxe role. With
the API's development PKI, point --pki-dir at <api-data-dir>/pki, which holds
pxe.crt, pxe.key and ca.crt.

Metrics (Prometheus) are served on --metrics-listen at /metrics:
carbide_pxe_http_requests_total{route,code}, carbide_pxe_scripts_total{action},
carbide_pxe_api_errors_total{code}, carbide_pxe_tftp_transfers_total{result},
carbide_pxe_tftp_bytes_total and others; /healthz answers ok.

Every flag can also be set as an environment variable: --pki-dir as
CARBIDE_PXE_PKI_DIR, --tftp-root as CARBIDE_PXE_TFTP_ROOT, and so on. Flags
on the command line win.

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
func parseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*pxed.Config, *slog.Logger, error) {
	fs := daemon.NewFlagSet("carbide-pxe", usage, stderr)
	cfg := pxed.DefaultConfig()
	cfg.APIConfig.AddFlags(fs, pxed.Role, "a request whose call fails gets 503 with Retry-After, and iPXE asks again")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "host:port of the HTTP server (scripts, agent configuration, artifacts, cloud-init)")
	cfg.HTTPTimeouts.AddFlags(fs, "http-", "how long an HTTP response may go without progress (each MiB of an artifact must go out within it)")
	fs.StringVar(&cfg.PublicURL, "public-url", "", "base `URL` machines reach the HTTP server at, placed into the scripts (e.g. http://10.0.0.1:8080); empty: http://<Host header of the request>")
	fs.StringVar(&cfg.ArtifactsDir, "artifacts-dir", cfg.ArtifactsDir, "directory served under /artifacts/ (the discovery kernel and initrd); empty: none")
	fs.StringVar(&cfg.TFTPListen, "tftp-listen", cfg.TFTPListen, "host:port of the TFTP server; empty: off")
	fs.StringVar(&cfg.TFTPRoot, "tftp-root", cfg.TFTPRoot, "directory served over TFTP (Debian's ipxe package puts undionly.kpxe, ipxe.efi and snponly.efi in /usr/lib/ipxe)")
	fs.DurationVar(&cfg.TFTPTimeout, "tftp-timeout", cfg.TFTPTimeout, "how long a TFTP transfer waits for each acknowledgement before it sends again (5 tries)")
	fs.IntVar(&cfg.TFTPMaxTransfers, "tftp-max-transfers", cfg.TFTPMaxTransfers, "most TFTP transfers in progress at once; more are refused with an error packet, and the client tries again")
	fs.StringVar(&cfg.DiscoveryKernel, "discovery-kernel", cfg.DiscoveryKernel, "kernel of the discovery image: a path under --artifacts-dir or an http(s) URL")
	fs.StringVar(&cfg.DiscoveryInitrd, "discovery-initrd", cfg.DiscoveryInitrd, "initrd of the discovery image: a path under --artifacts-dir or an http(s) URL")
	fs.StringVar(&cfg.DiscoveryKernelArgs, "discovery-kernel-args", cfg.DiscoveryKernelArgs, "extra kernel arguments of the discovery image, separated by spaces")
	fs.DurationVar(&cfg.RetryInterval, "retry-interval", cfg.RetryInterval, "how long the script of a MAC the API does not know waits before it asks again (whole seconds)")
	fs.StringVar(&cfg.AgentAPIURL, "agent-api-url", "", "API URL handed to the discovery agent, as booted machines reach it; empty: --api-url")
	fs.StringVar(&cfg.AgentCAFile, "agent-ca-file", "", "CA bundle (PEM) handed to the discovery agent; empty: the CA the daemon trusts for the API (--ca, or ca.crt in --pki-dir)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "host:port of the Prometheus /metrics and /healthz endpoint; empty: off")
	cfg.MetricsTimeouts.AddFlags(fs, "metrics-", "how long a scrape of the Prometheus endpoint may take to write")
	logFlags := daemon.AddLogFlags(fs, "log level: debug, info (every request and transfer), warn or error")
	if err := daemon.Parse(fs, "CARBIDE_PXE_", args, lookupEnv); err != nil {
		return nil, nil, err
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	return &cfg, logger, nil
}
