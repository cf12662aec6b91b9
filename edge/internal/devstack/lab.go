package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	"github.com/carbide-dev/carbide/edge/internal/qemuvm"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// LabConfig is the virtual rack RunLab boots.
type LabConfig struct {
	// DataDir is the running stack's data directory.
	DataDir string
	// Machines is how many VMs (1 to 16).
	Machines int
	// Accel is the QEMU accelerator: kvm, tcg or auto.
	Accel string
	// TTY redraws the live view in place; otherwise it prints a line per
	// change.
	TTY bool
}

// Validate reports every problem of c at once.
func (c *LabConfig) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty: name the data directory of the running `make run`"))
	}
	if c.Machines < 1 || c.Machines > 16 {
		errs = append(errs, fmt.Errorf("--machines %d: want 1 to 16 (LAB_MACHINES)", c.Machines))
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		errs = append(errs, fmt.Errorf("--accel %q: want auto, kvm or tcg (LAB_ACCEL)", c.Accel))
	}
	return errors.Join(errs...)
}

// labVM is one machine of the rack.
type labVM struct {
	name, mac string
	id        string
	sim       *bmcsim.IPMI
	started   time.Time
	readyIn   time.Duration
}

// RunLab boots the virtual rack on the lab bridge of the stack running on
// cfg.DataDir: a QEMU VM per machine, each with an ipmi_sim BMC, registered
// by MAC with its BMC, then set to boot from the network and powered on
// through carbide-bmc. It shows each machine's state until ctx is done or
// the stack stops, then stops the VMs and BMCs and removes their taps.
func RunLab(ctx context.Context, cfg LabConfig, out io.Writer) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	st, err := ReadState(cfg.DataDir)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the virtual rack adds tap devices and runs its VMs in the lab's network namespace: run it as root (sudo make lab)")
	}
	if st.Mode != ModeNetns {
		return fmt.Errorf("the running Carbide serves %s, not a lab network of its own: the virtual rack needs `make run` as root without CARBIDE_INTERFACE", st.Mode)
	}
	qemu, err := findProgram("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu")
	if err != nil {
		return err
	}
	if _, err := findProgram("ipmi_sim", "openipmi"); err != nil {
		return err
	}
	accel := cfg.Accel
	if accel == "auto" {
		accel = autoAccel()
	}
	client, err := AdminClient(st.Endpoint, st.PKIDir)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	labDir := filepath.Join(dataDir, "lab")
	release, err := claimLab(labDir)
	if err != nil {
		return err
	}
	defer release()
	fmt.Fprintf(out, "booting %d machines on %s in network namespace %s (QEMU with %s)\n", cfg.Machines, st.Bridge, st.Netns, accel)

	var vms []*labVM
	var taps []string
	defer func() {
		for _, v := range vms {
			if v.sim != nil {
				v.sim.Stop()
			}
		}
		if netnsExists(st.Netns) {
			for _, tap := range taps {
				_, _ = runIP("-n", st.Netns, "link", "del", tap)
			}
		}
		fmt.Fprintln(out, "the virtual rack is stopped")
	}()
	ip, err := findProgram("ip", "iproute2")
	if err != nil {
		return err
	}
	wrap := func(argv []string) []string { return append([]string{ip, "netns", "exec", st.Netns}, argv...) }
	for i := 1; i <= cfg.Machines; i++ {
		v := &labVM{name: fmt.Sprintf("lab-%02d", i), mac: fmt.Sprintf("52:54:00:79:00:%02x", i)}
		dir := filepath.Join(labDir, v.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		tap := fmt.Sprintf("labtap%d", i)
		if netnsExists(st.Netns) {
			_, _ = runIP("-n", st.Netns, "link", "del", tap) // left by a lab that was killed
		}
		for _, args := range [][]string{
			{"tuntap", "add", "dev", tap, "mode", "tap"},
			{"link", "set", "dev", tap, "master", st.Bridge},
			{"link", "set", "dev", tap, "up"},
		} {
			if _, err := runIP(append([]string{"-n", st.Netns}, args...)...); err != nil {
				return err
			}
		}
		taps = append(taps, tap)
		argv, err := vmCommand(qemu, accel, dir, tap, v.mac, i)
		if err != nil {
			return err
		}
		password, err := newPassword()
		if err != nil {
			return err
		}
		bmcAddr := netip.AddrPortFrom(netip.MustParseAddr(st.Gateway), uint16(6230+i))
		bmcDir := filepath.Join(dir, "bmc")
		if err := os.RemoveAll(bmcDir); err != nil {
			return err
		}
		if err := os.MkdirAll(bmcDir, 0o700); err != nil {
			return err
		}
		v.sim, err = bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{Addr: bmcAddr, Password: password, Dir: bmcDir, QEMU: argv, Wrap: wrap})
		if err != nil {
			return fmt.Errorf("start the BMC of %s: %w", v.name, err)
		}
		vms = append(vms, v)
		if err := register(ctx, client, v, bmcAddr, password); err != nil {
			return err
		}
	}
	return watchLab(ctx, client, cfg, st, vms, out)
}

// claimLab records this process as the lab of labDir, and fails when
// another lab that still runs did so: two would share tap devices and BMC
// ports. The returned function gives the claim up.
func claimLab(labDir string) (func(), error) {
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		return nil, err
	}
	pidFile := filepath.Join(labDir, "pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			return nil, fmt.Errorf("a lab (pid %d) already runs on this Carbide: stop it with Ctrl-C first, or add machines with --machines when you start it again", pid)
		}
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(pidFile) }, nil
}

// autoAccel is kvm when /dev/kvm opens and the host is not itself a VM
// (nested KVM is unreliable for firmware boots), tcg otherwise.
func autoAccel() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil && strings.Contains(string(b), " hypervisor") {
		return "tcg"
	}
	return "kvm"
}

// vmCommand is the QEMU command line of lab machine i: a legacy-BIOS VM
// whose NIC's boot ROM is iPXE, on tap, with a blank 4 GiB disk, that may
// reboot (into the OS an instance installed). Its BMC adds -boot n when it
// is told to boot from the network.
func vmCommand(qemu, accel, dir, tap, mac string, i int) ([]string, error) {
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(disk, 4<<30); err != nil {
		return nil, err
	}
	return qemuvm.Spec{QEMU: qemu, Accel: accel, Product: "lab",
		Serial: fmt.Sprintf("CB-LAB-%04d", i), UUID: fmt.Sprintf("6c1d7c1e-0b6e-4b1a-9d7e-0000790000%02x", i),
		CPUs: 2, MemoryMB: 1024, MAC: mac, Tap: tap, Disk: disk, DiskID: fmt.Sprintf("CBLAB%04d", i),
		Console: filepath.Join(dir, "console.log"), Reboots: true}.Args(), nil
}

// newPassword is a fresh BMC password; it goes only to ipmi_sim's
// configuration and to the API, which seals it. IPMI passwords have at most
// 20 bytes.
func newPassword() (string, error) {
	b := make([]byte, 8) // ipmitool takes at most 20 bytes
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// register creates v's machine (or finds it from an earlier lab), gives
// it its BMC, and unless it is Ready already has carbide-bmc boot it from
// the network.
func register(ctx context.Context, client *carbide.Client, v *labVM, bmc netip.AddrPort, password string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := client.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{Mac: v.mac}))
	if err != nil {
		return fmt.Errorf("find %s: %w", v.name, err)
	}
	var m *machinev1.Machine
	if ms := list.Msg.GetMachines(); len(ms) > 0 {
		m = ms[0]
	} else {
		resp, err := client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
			Hostname: v.name, Macs: []string{v.mac}, Labels: map[string]string{"rack": "lab"}}))
		if err != nil {
			return fmt.Errorf("register %s: %w", v.name, err)
		}
		m = resp.Msg.GetMachine()
	}
	v.id = m.GetId()
	if _, err := client.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: v.id, Address: bmc.Addr().String(),
		Port: uint32(bmc.Port()), Protocol: bmcv1.Protocol_PROTOCOL_IPMI, Username: "admin", Password: password})); err != nil {
		return fmt.Errorf("set the BMC of %s: %w", v.name, err)
	}
	v.started = time.Now()
	if m.GetState() == machinev1.MachineState_MACHINE_STATE_READY {
		return nil
	}
	for _, op := range []*bmcv1.RequestOperationRequest{
		{MachineId: v.id, Type: bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, Boot: &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE}},
		{MachineId: v.id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON},
	} {
		if _, err := client.BMC.RequestOperation(ctx, connect.NewRequest(op)); err != nil {
			return fmt.Errorf("%s: request %s: %w", v.name, op.GetType(), err)
		}
	}
	return nil
}
