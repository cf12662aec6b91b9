package scout

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"
)

// TestIPMIABI checks the Go mirrors of the kernel's structs and ioctl
// numbers against include/uapi/linux/ipmi.h on 64-bit Linux.
func TestIPMIABI(t *testing.T) {
	t.Parallel()
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Fatal("these values are for 64-bit Linux")
	}
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct ipmi_msg)", unsafe.Sizeof(ipmiMsg{}), 16},
		{"sizeof(struct ipmi_req)", unsafe.Sizeof(ipmiReq{}), 40},
		{"sizeof(struct ipmi_recv)", unsafe.Sizeof(ipmiRecv{}), 48},
		{"offsetof(ipmi_req, msgid)", unsafe.Offsetof(ipmiReq{}.msgid), 16},
		{"offsetof(ipmi_req, msg)", unsafe.Offsetof(ipmiReq{}.msg), 24},
		{"offsetof(ipmi_recv, addr)", unsafe.Offsetof(ipmiRecv{}.addr), 8},
		{"offsetof(ipmi_recv, msg)", unsafe.Offsetof(ipmiRecv{}.msg), 32},
		{"offsetof(ipmi_msg, data)", unsafe.Offsetof(ipmiMsg{}.data), 8},
		{"IPMICTL_SEND_COMMAND", ipmictlSendCommand, 0x8028690d},
		{"IPMICTL_RECEIVE_MSG_TRUNC", ipmictlReceiveMsgTrunc, 0xc030690b},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	addr := systemInterfaceAddr()
	if want := []byte{0x0c, 0, 0, 0, 0x0f, 0, 0, 0}; string(addr) != string(want) {
		t.Errorf("system interface address % x, want % x", addr, want)
	}
}

// TestBMCAddressWithoutDevice: no /dev/ipmi0, no address, no error.
func TestBMCAddressWithoutDevice(t *testing.T) {
	t.Parallel()
	got, err := bmcAddress(context.Background(), t.TempDir(), time.Second)
	if got != "" || err != nil {
		t.Errorf("got %q, %v; want nothing", got, err)
	}
	// A file that is not an IPMI device fails the ioctl.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ipmiDevice), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := bmcAddress(context.Background(), root, time.Second); got != "" || err == nil {
		t.Errorf("got %q, %v; want an error from the ioctl", got, err)
	}
}
