package scout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// rtnl is a route netlink socket, for the few changes the agent makes to
// the network configuration: set a link up, add or remove an IPv4
// address, set the default route.
type rtnl struct {
	fd  int
	seq uint32
}

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open a netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind a netlink socket: %w", err)
	}
	// Never wait for an answer for ever.
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set a netlink socket's timeout: %w", err)
	}
	return &rtnl{fd: fd}, nil
}

func (r *rtnl) Close() error { return unix.Close(r.fd) }

// nlAttr appends a netlink attribute (struct rtattr and its padded data).
func nlAttr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for ; l%4 != 0; l++ {
		b = append(b, 0)
	}
	return b
}

// nlMessage returns a netlink message: header, then body.
func nlMessage(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, 0, unix.SizeofNlMsghdr+len(body))
	b = binary.NativeEndian.AppendUint32(b, uint32(unix.SizeofNlMsghdr+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel's
	return append(b, body...)
}

// do sends one request and waits for its acknowledgement.
func (r *rtnl) do(typ, flags uint16, body []byte) error {
	r.seq++
	seq := r.seq
	if err := unix.Sendto(r.fd, nlMessage(typ, flags, seq, body), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send a netlink request: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return errors.New("no answer to a netlink request within 5s")
			}
			return fmt.Errorf("read a netlink answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse a netlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink acknowledgement")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return os.NewSyscallError("netlink", syscall.Errno(-errno))
			}
			return nil
		}
	}
}

// linkUp sets a link administratively up.
func (r *rtnl) linkUp(index int) error {
	body := make([]byte, 0, unix.SizeofIfInfomsg)
	body = append(body, unix.AF_UNSPEC, 0)
	body = binary.NativeEndian.AppendUint16(body, 0) // type
	body = binary.NativeEndian.AppendUint32(body, uint32(index))
	body = binary.NativeEndian.AppendUint32(body, unix.IFF_UP) // flags
	body = binary.NativeEndian.AppendUint32(body, unix.IFF_UP) // change
	return r.do(unix.RTM_NEWLINK, 0, body)
}

// ifAddrBody is struct ifaddrmsg for an IPv4 address and its attributes.
func ifAddrBody(index int, addr net.IPNet) ([]byte, error) {
	ip := addr.IP.To4()
	ones, bits := addr.Mask.Size()
	if ip == nil || bits != 32 {
		return nil, fmt.Errorf("%s is not an IPv4 address with a mask", addr.String())
	}
	body := []byte{unix.AF_INET, byte(ones), 0, unix.RT_SCOPE_UNIVERSE}
	body = binary.NativeEndian.AppendUint32(body, uint32(index))
	body = nlAttr(body, unix.IFA_LOCAL, ip)
	body = nlAttr(body, unix.IFA_ADDRESS, ip)
	if ones < 31 {
		bcast := make(net.IP, 4)
		for i := range bcast {
			bcast[i] = ip[i] | ^addr.Mask[i]
		}
		body = nlAttr(body, unix.IFA_BROADCAST, bcast)
	}
	return body, nil
}

// addAddr adds (or updates) an IPv4 address of a link.
func (r *rtnl) addAddr(index int, addr net.IPNet) error {
	body, err := ifAddrBody(index, addr)
	if err != nil {
		return err
	}
	return r.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body)
}

// delAddr removes an IPv4 address of a link.
func (r *rtnl) delAddr(index int, addr net.IPNet) error {
	body, err := ifAddrBody(index, addr)
	if err != nil {
		return err
	}
	return r.do(unix.RTM_DELADDR, 0, body)
}

// rtprotDHCP marks routes a DHCP client added (RTPROT_DHCP).
const rtprotDHCP = 16

// replaceDefaultRoute sets the IPv4 default route of the main table to
// gateway through a link.
func (r *rtnl) replaceDefaultRoute(index int, gateway net.IP) error {
	gw := gateway.To4()
	if gw == nil {
		return fmt.Errorf("gateway %s is not an IPv4 address", gateway)
	}
	body := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, rtprotDHCP, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST}
	body = binary.NativeEndian.AppendUint32(body, 0) // flags
	body = nlAttr(body, unix.RTA_GATEWAY, gw)
	oif := binary.NativeEndian.AppendUint32(nil, uint32(index))
	body = nlAttr(body, unix.RTA_OIF, oif)
	return r.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body)
}
