package bmcd

import (
	"context"
	"log/slog"
	"net"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"golang.org/x/sync/errgroup"
)

// Run claims machines' BMC work from the API and does it until ctx is
// done; it then lets the work in progress finish (for up to
// ShutdownTimeout), releases its leases and returns nil. It returns an
// error when the configuration is invalid or the metrics socket cannot be
// opened.
func (c *Config) Run(ctx context.Context, logger *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	dial, err := c.dialer()
	if err != nil {
		return err
	}
	return c.run(ctx, logger, dial, nil)
}

// run is Run with the BMC dialer given; ready, if set, is called with the
// metrics address (nil when off) once the daemon is up.
func (c *Config) run(ctx context.Context, logger *slog.Logger, dial Dialer, ready func(metrics net.Addr)) error {
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
	e, err := newEngine(c, client.BMC, dial, m, logger)
	if err != nil {
		return err
	}
	errorLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	metrics, err := daemon.ListenMetrics(c.MetricsListen, c.MetricsTimeouts, reg, c.DebugPprof, errorLog)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var addr net.Addr
	if metrics != nil {
		addr = metrics.Addr()
		g.Go(metrics.Serve)
	}
	g.Go(func() error {
		err := e.run(gctx)
		if metrics != nil {
			metrics.Shutdown(context.Background())
		}
		return err
	})
	attrs := []any{"worker", c.Worker, "api", daemon.RedactURL(c.APIURL), "max_concurrent", c.MaxConcurrent,
		"poll_interval", c.PollInterval, "providers", c.Providers}
	if addr != nil {
		attrs = append(attrs, "metrics", addr.String())
	}
	logger.Info("claiming BMC work", attrs...)
	if ready != nil {
		ready(addr)
	}
	err = g.Wait()
	logger.Info("stopped")
	return err
}
