package dhcpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sync/errgroup"
)

// Run serves DHCP on every configured interface, and metrics, until ctx
// is done; it then stops reading, lets the packets in hand finish (their
// API calls are cancelled) and returns nil. It returns an error when the
// configuration is invalid, a socket cannot be opened, or a socket fails.
func (c *Config) Run(ctx context.Context, logger *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	client, err := c.Client(Role)
	if err != nil {
		return err
	}
	ifaces, err := resolveInterfaces(c.Interfaces)
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
	h := NewHandler(c, NewSDKAPI(client.DHCP, m, c.APICalls), m, logger)

	var conns []net.PacketConn
	closeAll := func() {
		for _, conn := range conns {
			conn.Close()
		}
	}
	for _, iface := range ifaces {
		conn, err := server4.NewIPv4UDPConn(iface.Name, &net.UDPAddr{Port: c.Port})
		if err != nil {
			closeAll()
			return fmt.Errorf("listen on %s port %d: %w (the daemon needs root or CAP_NET_BIND_SERVICE and CAP_NET_RAW)", iface.Name, c.Port, err)
		}
		conns = append(conns, conn)
	}
	metrics, err := daemon.ListenMetrics(c.MetricsListen, c.MetricsTimeouts, reg, c.DebugPprof, nil)
	if err != nil {
		closeAll()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	for i, iface := range ifaces {
		conn := conns[i]
		g.Go(func() error { return h.serve(gctx, conn, iface, c.MaxInFlight) })
	}
	g.Go(metrics.Serve)
	g.Go(func() error {
		<-gctx.Done()
		closeAll()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		metrics.Shutdown(sctx)
		return nil
	})
	attrs := []any{slog.String("api", daemon.RedactURL(c.APIURL)), slog.Int("port", c.Port), slog.String("metrics", c.MetricsListen)}
	for _, iface := range ifaces {
		attrs = append(attrs, slog.String("interface."+iface.Name, iface.Addr.String()))
	}
	if c.DebugPprof {
		logger.Warn("profiling enabled (--debug-pprof): /debug/pprof/ on the metrics listener serves the daemon's runtime profiles to anyone who can reach it; keep it off in production",
			"address", metrics.Addr().String())
	}
	logger.Info("serving DHCP", attrs...)
	err = g.Wait()
	logger.Info("stopped serving DHCP")
	return err
}

// resolveInterfaces finds each named interface and its first IPv4 address.
func resolveInterfaces(names []string) ([]Interface, error) {
	var ifaces []Interface
	var errs []error
	for _, name := range names {
		ni, err := net.InterfaceByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
			continue
		}
		addrs, err := ni.Addrs()
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: read its addresses: %w", name, err))
			continue
		}
		iface := Interface{Name: name}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap().Is4() {
					iface.Addr = ip.Unmap()
					break
				}
			}
		}
		if !iface.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("interface %s has no IPv4 address: give it the address the daemon answers from", name))
			continue
		}
		ifaces = append(ifaces, iface)
	}
	return ifaces, errors.Join(errs...)
}

// serve reads packets from conn, which receives on iface, and hands each
// to a worker. It keeps two lanes of maxInFlight workers each: one for
// DHCPDISCOVERs, which start exchanges, and one for every other packet,
// which finishes one (a DHCPREQUEST that leases an address the daemon
// offered). A packet that finds every worker of its lane
// busy is dropped and counted. So under overload the daemon sheds new
// exchanges, not the requests of offers it has already made and paid
// for. serve returns nil once ctx is done and conn is closed, after the
// workers have finished.
//
// The workers live as long as serve: a goroutine per packet would grow a
// fresh stack for every request on its way through the API client.
func (h *Handler) serve(ctx context.Context, conn net.PacketConn, iface Interface, maxInFlight int) error {
	var wg sync.WaitGroup
	starting, finishing := newLane(maxInFlight), newLane(maxInFlight)
	defer func() {
		starting.close()
		finishing.close()
		wg.Wait()
	}()
	for _, l := range []*lane{starting, finishing} {
		for range maxInFlight {
			wg.Go(func() {
				for pkt := range l.work {
					h.answer(ctx, conn, iface, pkt)
					<-l.sem
				}
			})
		}
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := conn.ReadFrom(buf)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil // Run closed conn to stop
		case errors.Is(err, net.ErrClosed):
			return fmt.Errorf("read on %s: %w", iface.Name, err)
		default:
			// Transient (ENOBUFS and the like): keep serving.
			if ok, suppressed := h.throttle.allow("read", time.Now()); ok {
				h.logger.Error("read a DHCP packet", "interface", iface.Name, "error", err.Error(), "suppressed", suppressed)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l := finishing
		if t := messageType(buf[:n]); t == dhcpv4.MessageTypeDiscover || t == dhcpv4.MessageTypeNone {
			l = starting
		}
		if !l.take(bytes.Clone(buf[:n])) {
			h.drop(ctx, reasonBusy, iface, nil)
		}
	}
}

// lane is a pool of workers: a slot in sem is a packet taken and not yet
// answered; work holds the taken packets until a worker is free, which is
// at once unless the worker has not got back to it yet.
type lane struct {
	sem  chan struct{}
	work chan []byte
}

func newLane(n int) *lane {
	return &lane{sem: make(chan struct{}, n), work: make(chan []byte, n)}
}

// take hands pkt to a worker, or returns false when all are busy.
func (l *lane) take(pkt []byte) bool {
	select {
	case l.sem <- struct{}{}:
		l.work <- pkt
		return true
	default:
		return false
	}
}

func (l *lane) close() { close(l.work) }

// messageType finds the DHCP message type (option 53) of a packet without
// parsing the rest; MessageTypeNone when it has none or is cut short. The
// handler checks the packet in full.
func messageType(b []byte) dhcpv4.MessageType {
	const optionsAt = 240 // the fixed header and the magic cookie
	for i := optionsAt; i < len(b); {
		code := b[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			return dhcpv4.MessageTypeNone
		}
		if i+1 >= len(b) {
			return dhcpv4.MessageTypeNone
		}
		size := int(b[i+1])
		if code == byte(dhcpv4.OptionDHCPMessageType.Code()) {
			if size != 1 || i+2 >= len(b) {
				return dhcpv4.MessageTypeNone
			}
			return dhcpv4.MessageType(b[i+2])
		}
		i += 2 + size
	}
	return dhcpv4.MessageTypeNone
}

// answer handles one packet and sends the reply, if any.
func (h *Handler) answer(ctx context.Context, conn net.PacketConn, iface Interface, pkt []byte) {
	reply, dest := h.HandlePacket(ctx, iface, pkt)
	if reply == nil {
		return
	}
	if _, err := conn.WriteTo(reply.ToBytes(), dest); err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		h.drop(ctx, reasonSendError, iface, reply)
		if ok, suppressed := h.throttle.allow("send", time.Now()); ok {
			h.logger.Error("send a DHCP reply", "interface", iface.Name, "to", dest.String(),
				"error", err.Error(), "suppressed", suppressed)
		}
		return
	}
	h.countSent(reply)
}
