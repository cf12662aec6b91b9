package dnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Addrs are the addresses the daemon listens on, for tests and logs.
type Addrs struct {
	UDP, TCP []net.Addr
	Metrics  net.Addr
}

// Run serves DNS until ctx is done.
func (c *Config) Run(ctx context.Context, logger *slog.Logger) error {
	return c.run(ctx, logger, nil)
}

func (c *Config) run(ctx context.Context, logger *slog.Logger, ready func(Addrs)) error {
	if err := c.Validate(); err != nil {
		return err
	}
	reg, err := daemon.NewRegistry()
	if err != nil {
		return err
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	store := NewStore(c.zoneParams(), logger)
	store.onChange = metrics.storeChanged
	client, err := c.APIConfig.Client(Role)
	if err != nil {
		return fmt.Errorf("create API client: %w", err)
	}
	w := newWatcher(client.Watch, store, metrics, logger)
	if err := daemon.Register(reg, newLagGauge(w.lag)); err != nil {
		return err
	}
	h := NewHandler(store, metrics, logger, uint16(c.UDPSize), c.RRLRate, c.RRLBurst)
	var transfers Transfers
	if c.NewTransfers != nil {
		if transfers, err = c.NewTransfers(store, reg, logger); err != nil {
			return fmt.Errorf("set up zone transfers: %w", err)
		}
		h.SetTransfers(transfers)
	}

	var servers []*dns.Server
	var addrs Addrs
	closeAll := func() {
		for _, s := range servers {
			if s.PacketConn != nil {
				s.PacketConn.Close()
			}
			if s.Listener != nil {
				s.Listener.Close()
			}
		}
	}
	for _, l := range c.Listen {
		udp, tcp, err := c.listen(l)
		if err != nil {
			closeAll()
			return err
		}
		for _, pc := range udp {
			servers = append(servers, c.server(h, &dns.Server{PacketConn: pc}))
			addrs.UDP = append(addrs.UDP, pc.LocalAddr())
		}
		servers = append(servers, c.server(h, &dns.Server{Listener: netutil.LimitListener(tcp, c.MaxTCPConnections)}))
		addrs.TCP = append(addrs.TCP, tcp.Addr())
	}
	ms, err := c.listenMetrics(reg, store, logger)
	if err != nil {
		closeAll()
		return err
	}
	addrs.Metrics = ms.Addr()
	logger.Info("carbide-dns listening", "udp", addrs.UDP, "tcp", addrs.TCP, "metrics", addrs.Metrics,
		"api", daemon.RedactURL(c.APIURL))
	if ready != nil {
		ready(addrs)
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		g.Go(func() error {
			if err := s.ActivateAndServe(); err != nil && gctx.Err() == nil {
				return fmt.Errorf("serve DNS: %w", err)
			}
			return nil
		})
	}
	g.Go(ms.Serve)
	g.Go(func() error { return w.run(gctx) })
	if transfers != nil {
		g.Go(func() error { return transfers.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		for _, s := range servers {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.ShutdownContext(sctx)
			cancel()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ms.Shutdown(sctx)
	})
	return g.Wait()
}

// server sets up s to answer through h.
func (c *Config) server(h *Handler, s *dns.Server) *dns.Server {
	s.Handler = h
	s.TsigSecret = c.TSIGSecrets
	s.UDPSize = dns.MaxMsgSize
	s.DecorateReader = h.decorate
	s.MsgAcceptFunc = h.acceptMsg
	s.MsgInvalidFunc = h.invalidMsg
	idle := c.TCPIdleTimeout
	s.IdleTimeout = func() time.Duration { return idle }
	s.ReadTimeout = idle
	s.WriteTimeout = 5 * time.Second
	return s
}

// listen opens c.UDPSockets UDP sockets sharing addr (SO_REUSEPORT; the
// kernel spreads the clients over them) and a TCP listener on the same
// port. With port 0 the first socket picks the port, and when that port
// is taken for TCP it tries another.
func (c *Config) listen(addr string) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pcs, l, err := c.listenOnce(addr)
		if err == nil || port != "0" || try == 10 {
			return pcs, l, err
		}
	}
}

func (c *Config) listenOnce(addr string) ([]net.PacketConn, net.Listener, error) {
	host, _, _ := net.SplitHostPort(addr)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	var pcs []net.PacketConn
	fail := func(err error) ([]net.PacketConn, net.Listener, error) {
		for _, pc := range pcs {
			pc.Close()
		}
		return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	for i := range c.UDPSockets {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return fail(err)
		}
		pcs = append(pcs, pc)
		if i == 0 {
			addr = net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return fail(err)
	}
	return pcs, tcp, nil
}

// listenMetrics serves /metrics, and /healthz answering 503 until the
// first snapshot is in memory.
func (c *Config) listenMetrics(reg *prometheus.Registry, store *Store, logger *slog.Logger) (*daemon.MetricsServer, error) {
	return daemon.ListenMetricsHealth(c.MetricsListen, c.MetricsTimeouts, reg, c.DebugPprof,
		slog.NewLogLogger(logger.Handler(), slog.LevelWarn), func() error {
			if !store.Synced() {
				return errors.New("not synced: the first snapshot from the API is not in memory yet")
			}
			return nil
		})
}
