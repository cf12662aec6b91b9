package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/carbide-dev/carbide/edge/internal/nsenter"
)

// dhcpPacket is one DHCP packet a capture saw on its device.
type dhcpPacket struct {
	at        time.Time // the kernel's receive (or send) time
	out       bool      // sent from the device, rather than received on it
	typ       dhcpv4.MessageType
	xid       dhcpv4.TransactionID
	mac       string
	yiaddr    netip.Addr
	requested netip.Addr    // option 50
	server    netip.Addr    // option 54
	leaseTime time.Duration // option 51
}

// capture records every DHCP packet (UDP to or from port 67 or 68) sent or
// received on one device of a namespace, through a packet socket
// (AF_PACKET), with the kernel's timestamp of each. It sees what the
// device carried, whichever program sent or received it: it is how a test
// learns what a load generator that keeps no record (perfdhcp) was told.
type capture struct {
	fd   int
	done chan struct{}

	mu      sync.Mutex
	packets []dhcpPacket
	bad     int   // UDP packets on the DHCP ports that did not parse
	err     error // what ended the reading, if not stop
	stopped bool
}

// startCapture opens the packet socket on dev of n and records until stop
// or the end of the test.
func startCapture(t testing.TB, n *netns, dev string) *capture {
	t.Helper()
	c := &capture{fd: -1, done: make(chan struct{})}
	// Only ETH_P_ALL sockets see what the namespace sends.
	proto := htons(unix.ETH_P_ALL)
	err := nsenter.Do(n.name, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		// SOCK_DGRAM: packets without their link-layer header.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
		}
		// A read returns at least every 200 ms, so stop is noticed.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000}); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture DHCP on %s in %s: %v", dev, n.name, err)
	}
	go c.read()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *capture) read() {
	defer close(c.done)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		c.mu.Lock()
		stopped := c.stopped
		c.mu.Unlock()
		if stopped {
			return
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		at := time.Now()
		if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range cmsgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					at = time.Unix(int64(binary.NativeEndian.Uint64(m.Data[0:8])), int64(binary.NativeEndian.Uint64(m.Data[8:16])))
				}
			}
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || ll.Protocol != htons(unix.ETH_P_IP) {
			continue
		}
		p, ok, err := parseDHCPPacket(buf[:n])
		if !ok {
			continue
		}
		c.mu.Lock()
		if err != nil {
			c.bad++
		} else {
			p.at = at
			p.out = ll.Pkttype == unix.PACKET_OUTGOING
			c.packets = append(c.packets, p)
		}
		c.mu.Unlock()
	}
}

// parseDHCPPacket reads an IPv4 packet: ok is false when it is not UDP to or
// from port 67 or 68, err set when it is but holds no valid DHCP message.
func parseDHCPPacket(b []byte) (p dhcpPacket, ok bool, err error) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP {
		return p, false, nil
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+8 {
		return p, false, nil
	}
	src, dst := binary.BigEndian.Uint16(b[ihl:]), binary.BigEndian.Uint16(b[ihl+2:])
	dhcpPort := func(port uint16) bool { return port == 67 || port == 68 }
	if !dhcpPort(src) && !dhcpPort(dst) {
		return p, false, nil
	}
	m, err := dhcpv4.FromBytes(b[ihl+8:])
	if err != nil {
		return p, true, err
	}
	p = dhcpPacket{typ: m.MessageType(), xid: m.TransactionID, mac: m.ClientHWAddr.String()}
	p.yiaddr, _ = netip.AddrFromSlice(m.YourIPAddr.To4())
	if v := m.Options.Get(dhcpv4.OptionRequestedIPAddress); len(v) == 4 {
		p.requested = netip.AddrFrom4([4]byte(v))
	}
	if v := m.Options.Get(dhcpv4.OptionServerIdentifier); len(v) == 4 {
		p.server = netip.AddrFrom4([4]byte(v))
	}
	if v := m.Options.Get(dhcpv4.OptionIPAddressLeaseTime); len(v) == 4 {
		p.leaseTime = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	return p, true, nil
}

// stop ends the capture and returns what it recorded, in the order the
// kernel handed the packets over, and how many the kernel dropped because
// the socket's buffer was full.
func (c *capture) stop() (packets []dhcpPacket, dropped uint32, err error) {
	c.mu.Lock()
	already := c.stopped
	c.stopped = true
	c.mu.Unlock()
	<-c.done
	if !already {
		if st, serr := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); serr == nil {
			dropped = st.Drops
		} else {
			err = fmt.Errorf("read the packet socket's statistics: %w", serr)
		}
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		err = errors.Join(err, fmt.Errorf("read packets: %w", c.err))
	}
	if c.bad > 0 {
		err = errors.Join(err, fmt.Errorf("%d packets on the DHCP ports were not DHCP messages", c.bad))
	}
	return c.packets, dropped, err
}
