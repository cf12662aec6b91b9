package scout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's IPMI device interface (include/uapi/linux/ipmi.h) on
// 64-bit Linux.
const (
	// ipmiSystemInterfaceAddrType addresses the BMC through the system
	// interface (KCS, SMIC, BT or SSIF).
	ipmiSystemInterfaceAddrType = 0x0c
	// ipmiBMCChannel is the channel number of the BMC itself.
	ipmiBMCChannel = 0x0f
	// ipmiResponseRecvType marks a received message as a response.
	ipmiResponseRecvType = 1
	// ipmiMaxAddrSize is IPMI_MAX_ADDR_SIZE.
	ipmiMaxAddrSize = 32
)

// ipmiMsg is struct ipmi_msg.
type ipmiMsg struct {
	netfn   uint8
	cmd     uint8
	dataLen uint16
	data    *byte
}

// ipmiReq is struct ipmi_req.
type ipmiReq struct {
	addr    *byte
	addrLen uint32
	msgid   int64
	msg     ipmiMsg
}

// ipmiRecv is struct ipmi_recv.
type ipmiRecv struct {
	recvType int32
	addr     *byte
	addrLen  uint32
	msgid    int64
	msg      ipmiMsg
}

// ioctl request numbers: IPMICTL_SEND_COMMAND is _IOR('i', 13, struct
// ipmi_req) and IPMICTL_RECEIVE_MSG_TRUNC _IOWR('i', 11, struct ipmi_recv).
var (
	ipmictlSendCommand     = ioc(2, 'i', 13, unsafe.Sizeof(ipmiReq{}))
	ipmictlReceiveMsgTrunc = ioc(3, 'i', 11, unsafe.Sizeof(ipmiRecv{}))
)

// ioc is the kernel's _IOC(dir, type, nr, size) on x86 and arm64.
func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | typ<<8 | nr
}

// systemInterfaceAddr is struct ipmi_system_interface_addr for the BMC:
// addr_type (int), channel (short), lun (char), padded to 8 bytes.
func systemInterfaceAddr() []byte {
	b := make([]byte, 8)
	*(*int32)(unsafe.Pointer(&b[0])) = ipmiSystemInterfaceAddrType
	*(*int16)(unsafe.Pointer(&b[4])) = ipmiBMCChannel
	return b
}

// ipmiDevice is where the IPMI device appears once ipmi_devintf and a
// system interface driver (ipmi_si, ipmi_ssif) found a BMC.
const ipmiDevice = "dev/ipmi0"

// BMCAddress returns a Collector.BMCAddress that asks the BMC through the
// IPMI device below root, waiting at most timeout for its answer.
func BMCAddress(root string, timeout time.Duration) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		return bmcAddress(ctx, root, timeout)
	}
}

// openIPMI opens the IPMI device below root; it returns nil and no error
// when there is none.
func openIPMI(root string) (*os.File, error) {
	f, err := os.OpenFile(root+"/"+ipmiDevice, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// bmcAddress asks the BMC, through the in-band IPMI device below root, for
// the IPv4 address of its LAN channel 1. It returns "" without an error
// when there is no IPMI device.
func bmcAddress(ctx context.Context, root string, timeout time.Duration) (string, error) {
	f, err := openIPMI(root)
	if f == nil {
		return "", err
	}
	defer f.Close()
	resp, err := ipmiCommand(ctx, int(f.Fd()), 1, ipmiNetFnTransport, ipmiCmdGetLANConfig,
		getLANConfigRequest(ipmiDefaultLANChanel, ipmiLANParamIP), timeout)
	if err != nil {
		return "", err
	}
	return parseLANIPResponse(resp)
}

// EnrollBMC returns an Agent.EnrollBMC that creates or resets the agent's
// BMC user through the IPMI device below root, waiting at most timeout
// for each answer. It returns nil and no error when there is no IPMI
// device.
func EnrollBMC(root string, timeout time.Duration) func(context.Context) (*BMCEnrolment, error) {
	return func(ctx context.Context) (*BMCEnrolment, error) {
		f, err := openIPMI(root)
		if f == nil {
			return nil, err
		}
		defer f.Close()
		return enrolBMC(ctx, &ipmiDev{fd: int(f.Fd()), timeout: timeout}, defaultRandom)
	}
}

// ipmiDev sends commands through an open IPMI device, one at a time.
type ipmiDev struct {
	fd      int
	timeout time.Duration
	msgid   int64
}

// Command sends one request and returns the response data, completion
// code first. Each request has its own message id, so that a late answer
// to an earlier one is never taken for it.
func (d *ipmiDev) Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	d.msgid++
	return ipmiCommand(ctx, d.fd, d.msgid, netfn, cmd, data, d.timeout)
}

// ipmiCommand sends one request with message id msgid to the BMC and
// returns the response data (completion code first), waiting at most
// timeout.
func ipmiCommand(ctx context.Context, fd int, msgid int64, netfn, cmd byte, data []byte, timeout time.Duration) ([]byte, error) {
	addr := systemInterfaceAddr()
	reqData := append([]byte(nil), data...)
	req := &ipmiReq{
		addr: &addr[0], addrLen: uint32(len(addr)), msgid: msgid,
		msg: ipmiMsg{netfn: netfn, cmd: cmd, dataLen: uint16(len(reqData))},
	}
	if len(reqData) > 0 {
		req.msg.data = &reqData[0]
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ipmictlSendCommand, uintptr(unsafe.Pointer(req))); errno != 0 {
		return nil, fmt.Errorf("send an IPMI request: %w", errno)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("no IPMI response within %s", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for an IPMI response: %w", err)
		}
		if n == 0 {
			continue
		}
		raddr := make([]byte, ipmiMaxAddrSize)
		rdata := make([]byte, 256)
		recv := &ipmiRecv{addr: &raddr[0], addrLen: uint32(len(raddr)),
			msg: ipmiMsg{data: &rdata[0], dataLen: uint16(len(rdata))}}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ipmictlReceiveMsgTrunc, uintptr(unsafe.Pointer(recv))); errno != 0 {
			if errno == unix.EAGAIN {
				continue
			}
			return nil, fmt.Errorf("receive an IPMI response: %w", errno)
		}
		if recv.recvType != ipmiResponseRecvType || recv.msgid != msgid {
			continue // an event or an answer to something else
		}
		return rdata[:min(int(recv.msg.dataLen), len(rdata))], nil
	}
}
