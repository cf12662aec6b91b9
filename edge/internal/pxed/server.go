package pxed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/pin/tftp/v3"
	"golang.org/x/sync/errgroup"
)

// shutdownGrace is how long HTTP requests in progress (an artifact download,
// say) may take to finish once the daemon stops.
const shutdownGrace = 10 * time.Second

// Addrs are the addresses the daemon listens on; nil for a listener that
// is off.
type Addrs struct {
	HTTP    net.Addr
	TFTP    net.Addr
	Metrics net.Addr
}

// Run serves HTTP, TFTP and metrics until ctx is done; it then stops
// accepting, lets requests and transfers in progress finish (HTTP for up
// to 10 s) and returns nil. It returns an error when the configuration is
// invalid, a socket cannot be opened, or a server fails.
func (c *Config) Run(ctx context.Context, logger *slog.Logger) error {
	return c.run(ctx, logger, nil)
}

// run is Run; ready, if set, is called with the listening addresses once
// every socket is open.
func (c *Config) run(ctx context.Context, logger *slog.Logger, ready func(Addrs)) error {
	if err := c.Validate(); err != nil {
		return err
	}
	client, err := c.Client(Role)
	if err != nil {
		return err
	}

	reg, err := daemon.NewRegistry()
	if err != nil {
		return err
	}
	m, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	httpHandler, err := NewHTTPHandler(c, NewSDKAPI(client.Boot), m, logger)
	if err != nil {
		return err
	}
	defer httpHandler.Close()

	// Open every socket before serving on any, so that a port in use
	// fails the start.
	var closers []func()
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	var addrs Addrs
	httpListener, err := net.Listen("tcp", c.HTTPListen)
	if err != nil {
		return fmt.Errorf("listen for HTTP: %w", err)
	}
	closers = append(closers, func() { httpListener.Close() })
	addrs.HTTP = httpListener.Addr()

	var tftpConn net.PacketConn
	var tftpRoot *os.Root
	if c.TFTPListen != "" {
		tftpRoot, err = os.OpenRoot(c.TFTPRoot)
		if err != nil {
			closeAll()
			return fmt.Errorf("open the TFTP root: %w", err)
		}
		defer tftpRoot.Close()
		tftpConn, err = ListenTFTP(c.TFTPListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen for TFTP: %w (port 69 needs root or CAP_NET_BIND_SERVICE)", err)
		}
		closers = append(closers, func() { tftpConn.Close() })
		addrs.TFTP = tftpConn.LocalAddr()
	}

	errorLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	metrics, err := daemon.ListenMetrics(c.MetricsListen, c.MetricsTimeouts, reg, false, errorLog)
	if err != nil {
		closeAll()
		return err
	}
	closers = append(closers, func() { metrics.Close() })
	addrs.Metrics = metrics.Addr()

	httpServer := &http.Server{
		Handler:           httpHandler,
		ReadHeaderTimeout: 10 * time.Second,
		// The handler moves the write deadline on as a response makes
		// progress, so that a large artifact on a slow link completes.
		WriteTimeout: c.HTTPTimeouts.Write,
		IdleTimeout:  c.HTTPTimeouts.Idle,
		ConnState:    daemon.NewTimeoutHits(m.httpTimeouts, c.HTTPTimeouts.Idle).ConnState,
		ErrorLog:     errorLog,
	}
	var tftpServer *tftp.Server
	if tftpConn != nil {
		th := NewTFTPHandler(tftpRoot, c.TFTPMaxTransfers, m, logger)
		tftpServer = tftp.NewServer(th.Read, th.Write)
		tftpServer.SetTimeout(c.TFTPTimeout)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpServer.Serve(httpListener); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(metrics.Serve)
	if tftpServer != nil {
		g.Go(func() error {
			if err := tftpServer.Serve(tftpConn); err != nil && gctx.Err() == nil {
				return fmt.Errorf("serve TFTP: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := httpServer.Shutdown(sctx); err != nil {
			httpServer.Close()
		}
		metrics.Shutdown(sctx)
		if tftpServer != nil {
			// Shutdown closes the socket and waits for the transfers in
			// progress, each of which ends within its retries.
			tftpServer.Shutdown()
		}
		closeAll()
		return nil
	})

	public := c.PublicURL
	if public == "" {
		public = "http://<Host header>"
	}
	attrs := []any{slog.String("address", addrs.HTTP.String()), slog.String("public_url", public),
		slog.String("api", daemon.RedactURL(c.APIURL)), slog.String("agent_api", daemon.RedactURL(c.agentAPIURL()))}
	if c.ArtifactsDir != "" {
		attrs = append(attrs, slog.String("artifacts", c.ArtifactsDir))
	}
	if addrs.Metrics != nil {
		attrs = append(attrs, slog.String("metrics", addrs.Metrics.String()))
	}
	logger.Info("serving HTTP", attrs...)
	if addrs.TFTP != nil {
		logger.Info("serving TFTP", "address", addrs.TFTP.String(), "root", c.TFTPRoot)
	}
	if loopbackURL(c.agentAPIURL()) {
		logger.Warn("the discovery agent gets a loopback API URL, which a booted machine cannot reach; set --agent-api-url",
			"agent_api_url", daemon.RedactURL(c.agentAPIURL()))
	}
	if ready != nil {
		ready(addrs)
	}
	err = g.Wait()
	logger.Info("stopped serving")
	return err
}

// loopbackURL reports whether u names a loopback host.
func loopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	if p.Hostname() == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(p.Hostname())
	return err == nil && a.IsLoopback()
}
