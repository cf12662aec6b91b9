package pxed

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// The messages of TFTP error packets: short, and never a path of the
// daemon's file system.
var (
	errTFTPNotFound = errors.New("file not found")
	errTFTPDenied   = errors.New("access violation")
	errTFTPReadOnly = errors.New("this server is read-only")
	errTFTPBusy     = errors.New("server busy: too many transfers in progress, try again")
)

// TFTPHandler serves the regular files under a root directory over TFTP,
// read-only, at most a fixed number at a time.
type TFTPHandler struct {
	root    *os.Root
	metrics *Metrics
	logger  *slog.Logger
	// slots holds a token per transfer in progress.
	slots chan struct{}
}

// NewTFTPHandler returns a handler that serves the files under root, at
// most maxTransfers at once; it refuses more with an error packet.
func NewTFTPHandler(root *os.Root, maxTransfers int, m *Metrics, logger *slog.Logger) *TFTPHandler {
	return &TFTPHandler{root: root, metrics: m, logger: logger, slots: make(chan struct{}, maxTransfers)}
}

// Read serves a read request (RRQ) for filename. It announces the file's
// size when the client asks for it (tsize, RFC 2349); pin/tftp negotiates
// the block size (blksize, RFC 2348).
func (t *TFTPHandler) Read(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	client := ""
	ot, hasAddr := rf.(tftp.OutgoingTransfer)
	if hasAddr {
		a := ot.RemoteAddr()
		client = a.IP.String()
	}
	select {
	case t.slots <- struct{}{}:
		defer func() { <-t.slots }()
	default:
		t.metrics.tftpTransfers.WithLabelValues(tftpBusy).Inc()
		t.logger.Warn("tftp read refused: too many transfers in progress (--tftp-max-transfers)",
			"client", client, "file", filename, "max", cap(t.slots))
		return errTFTPBusy
	}
	f, info, err := openFile(t.root, filename)
	if err != nil {
		result := fileRefusal(err)
		t.metrics.tftpTransfers.WithLabelValues(result).Inc()
		t.logger.Info("tftp read refused", "client", client, "file", filename, "result", result, "error", err.Error())
		if result == tftpNotFound {
			return errTFTPNotFound
		}
		return errTFTPDenied
	}
	defer f.Close()
	if hasAddr {
		ot.SetSize(info.Size())
	}
	n, err := rf.ReadFrom(f)
	elapsed := time.Since(start)
	t.metrics.tftpBytes.Add(float64(n))
	if err != nil && n == 0 && strings.Contains(err.Error(), "code=8") {
		// UEFI and iPXE clients first ask for tsize alone and end that
		// transfer with error 8 (option negotiation, RFC 2347) once they
		// have it; then they read the file.
		t.metrics.tftpTransfers.WithLabelValues(tftpSizeProbe).Inc()
		t.logger.Info("tftp size probe", "client", client, "file", filename, "size", info.Size())
		return err
	}
	if err != nil {
		t.metrics.tftpTransfers.WithLabelValues(tftpFailed).Inc()
		t.logger.Warn("tftp transfer failed", "client", client, "file", filename, "bytes", n,
			"duration", elapsed, "error", err.Error())
		return err
	}
	t.metrics.tftpTransfers.WithLabelValues(tftpOK).Inc()
	t.metrics.tftpSeconds.Observe(elapsed.Seconds())
	t.logger.Info("tftp transfer", "client", client, "file", filename, "bytes", n, "duration", elapsed)
	return nil
}

// Write refuses a write request (WRQ) with an error packet.
func (t *TFTPHandler) Write(filename string, wt io.WriterTo) error {
	client := ""
	if it, ok := wt.(tftp.IncomingTransfer); ok {
		a := it.RemoteAddr()
		client = a.IP.String()
	}
	t.metrics.tftpTransfers.WithLabelValues(tftpWriteRefused).Inc()
	t.logger.Info("tftp write refused", "client", client, "file", filename)
	return errTFTPReadOnly
}

// ListenTFTP opens the UDP socket of the TFTP server on addr, asking the
// kernel at once for each packet's destination address and interface.
// pin/tftp asks for them too, but only when it starts serving; a request
// that arrives before that carries no interface, and pin/tftp then caps its
// block size at 512 bytes whatever the client asked for.
func ListenTFTP(addr string) (net.PacketConn, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, ok := conn.(*net.UDPConn)
	if !ok {
		return conn, nil
	}
	// pin/tftp picks the IPv4 or IPv6 socket options by the listening
	// address in the same way.
	if local, ok := udp.LocalAddr().(*net.UDPAddr); ok && local.IP.To4() != nil {
		err = ipv4.NewPacketConn(udp).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	} else {
		err = ipv6.NewPacketConn(udp).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask for packet information on %s: %w", addr, err)
	}
	return conn, nil
}
