package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	"github.com/carbide-dev/carbide/edge/internal/initramfs"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// The in-band enrolment lab's BMC: its LAN address on the lab bridge (on
// IPMI's own port, as the agent reports no port), its MAC, and the KCS
// listener the VM's in-band IPMI device connects to.
const (
	enrolBMCAddr = "198.18.0.250"
	enrolBMCMAC  = "52:54:00:bc:00:01"
	enrolKCS     = "127.0.0.1:9002"
)

// TestBMCEnrolledInBand: a VM whose BMC is an ipmi_sim with both its LAN
// channel and the VM's KCS system interface (QEMU's ipmi-bmc-extern and
// isa-ipmi-kcs) is started by the test, not by Carbide, which knows no
// credentials of it. It network-boots the discovery image (built with
// Debian's generic kernel, which has the IPMI drivers) to Ready; its
// agent, asked by the API, creates the carbide BMC user in band and
// enrols it. ipmi_sim then holds that user, which logs in over lanplus
// with ipmitool, and carbide-bmc, with only the enrolled credentials,
// reads the power state and powers the VM off: the API sees it on, then
// off, and the chassis_control log shows the power-off.
func TestBMCEnrolledInBand(t *testing.T) {
	requireRoot(t)
	lookPaths(t, "ipmi_sim", "ipmitool")
	testsecret.Register(t, e2eBMCPassword)
	tools := lookPaths(t, "ip", "qemu-system-x86_64", "radvd")
	image := genericScoutImage(t)
	l := newLabNetwork(t, "enrol", tools["qemu-system-x86_64"])
	l.startDaemons(t, image)
	l.startRadvd(t, tools["radvd"])
	l.ns.ip(t, "addr", "add", enrolBMCAddr+"/32", "dev", "br0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	daemon := startProc(t, l.ns, "carbide-bmc", bins.bmc, "--pki-dir", l.pki, "--api-url", "https://"+labAPI,
		"--poll-interval", "1s", "--claim-interval", "200ms", "--metrics-listen", "")

	spec := vmSpec{name: "enrol", mac: "52:54:00:cb:00:31", serial: "CB-ENROL-0031",
		uuid: "6c1d7c1e-0b6e-4b1a-9d7e-000000000031", cpus: 2, memoryMB: 768, diskMB: 1024, diskID: "CBDISK-ENROL"}
	qemu, console := l.vmCommand(t, spec, true)
	kcs := netip.MustParseAddrPort(enrolKCS)
	// QEMU keeps running after the guest powers itself off (-no-shutdown),
	// as a machine whose operating system halts without its BMC cutting
	// the power: the agent powers the machine off once it is Ready, and
	// Carbide's power-off must still have something to do.
	qemu = append(append(qemu, "-no-shutdown"), bmcsim.KCSArgs(kcs)...)
	mac, _ := net.ParseMAC(enrolBMCMAC)
	sim, err := bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{
		Addr: netip.AddrPortFrom(netip.MustParseAddr(enrolBMCAddr), 623), Password: e2eBMCPassword, Dir: t.TempDir(),
		QEMU: qemu, PoweredOn: true, KCS: kcs, MAC: mac,
		Wrap: func(argv []string) []string { return append([]string{"ip", "netns", "exec", l.ns.name}, argv...) },
	})
	if err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	t.Cleanup(func() {
		sim.Stop()
		if t.Failed() {
			t.Logf("ipmi_sim: %s\ncarbide-bmc:\n%s", sim.Output(), tail(daemon.out.String(), 40))
		}
	})
	v := &vm{spec: spec, console: console, started: time.Now()}
	ready, took := l.waitReady(t, v, 4*time.Minute)
	if ready == nil {
		t.FailNow()
	}
	id := ready.GetId()
	t.Logf("started by its BMC (ipmi_sim), Ready in %s", took.Round(100*time.Millisecond))

	// The agent enrols the BMC after its report, before it powers off.
	var b *bmcv1.BMC
	if !waitFor(time.Minute, func() bool {
		g, err := l.client.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: id}))
		if err == nil {
			b = g.Msg.GetBmc()
		}
		return err == nil
	}) {
		c, _ := os.ReadFile(console)
		t.Fatalf("the agent did not enrol the BMC:\n%s", tail(string(c), 40))
	}
	if b.GetAddress() != enrolBMCAddr || b.GetMac() != enrolBMCMAC || b.GetUsername() != "carbide" || !b.GetHasPassword() ||
		b.GetPort() != 0 || b.GetProtocol() != bmcv1.Protocol_PROTOCOL_IPMI ||
		b.GetCredentialSource() != bmcv1.CredentialSource_CREDENTIAL_SOURCE_AGENT {
		t.Errorf("enrolled BMC = %v", b)
	}

	// ipmi_sim holds the user the agent made: named carbide, enabled,
	// ADMINISTRATOR, with a password it lets in over lanplus.
	var user *bmcsim.IPMIUser
	waitFor(10*time.Second, func() bool {
		users, _ := sim.Users()
		for _, u := range users {
			if u.Name == "carbide" {
				user = &u
				return true
			}
		}
		return false
	})
	if user == nil {
		t.Fatal("ipmi_sim has no user named carbide")
	}
	testsecret.Register(t, user.Password)
	// ipmi_sim passes any password test, so the agent falls back to 16
	// characters, which ipmi_sim keeps whole (bmcsim.TestIPMIUserManagement).
	if user.ID < 3 || !user.Enabled || user.Privilege != 4 || len(user.Password) != 16 {
		t.Errorf("ipmi_sim's carbide user: id %d, enabled %t, privilege %d, password of %d characters; want id 3 or more, enabled, 4, 16",
			user.ID, user.Enabled, user.Privilege, len(user.Password))
	}
	if out, err := ipmitoolAs(l, "carbide", user.Password, "chassis", "power", "status"); err != nil || out != "Chassis Power is on" {
		t.Errorf("ipmitool over lanplus as the enrolled user: %v: %q", err, out)
	}
	if out, err := ipmitoolAs(l, "carbide", user.Password+"x", "chassis", "power", "status"); err == nil {
		t.Errorf("ipmitool with a wrong password for the enrolled user succeeded: %q", out)
	}

	// carbide-bmc, with only the enrolled credentials, sees the machine on
	// and powers it off.
	power := func(want bmcv1.PowerState) func() bool {
		return func() bool {
			g, err := l.client.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: id}))
			return err == nil && g.Msg.GetBmc().GetPowerState() == want
		}
	}
	if !waitFor(time.Minute, power(bmcv1.PowerState_POWER_STATE_ON)) {
		t.Fatalf("the API never saw the machine on:\n%s", tail(daemon.out.String(), 30))
	}
	op, err := l.client.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{MachineId: id,
		Type: bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, RequestId: "enrolled-off"}))
	if err != nil {
		t.Fatal(err)
	}
	var last *bmcv1.Operation
	if !waitFor(time.Minute, func() bool {
		g, err := l.client.BMC.GetOperation(ctx, connect.NewRequest(&bmcv1.GetOperationRequest{Id: op.Msg.GetOperation().GetId()}))
		if err == nil {
			last = g.Msg.GetOperation()
		}
		return last.GetState() == bmcv1.OperationState_OPERATION_STATE_SUCCEEDED || last.GetState() == bmcv1.OperationState_OPERATION_STATE_FAILED
	}) || last.GetState() != bmcv1.OperationState_OPERATION_STATE_SUCCEEDED {
		t.Fatalf("the power-off did not succeed: %v\n%s", last, tail(daemon.out.String(), 30))
	}
	if !waitFor(30*time.Second, power(bmcv1.PowerState_POWER_STATE_OFF)) {
		t.Error("the API never saw the machine off")
	}
	acts, err := sim.Actions()
	if err != nil {
		t.Fatal(err)
	}
	if names := bmcsim.Names(acts); strings.Join(names, ",") != "power off" {
		t.Errorf("chassis_control actions %q, want the one power-off", names)
	}
	if pid, _ := sim.VMPid(); pid != 0 {
		t.Errorf("QEMU (pid %d) still runs after the power-off", pid)
	}

	c, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scout: BMC user " + fmt.Sprint(user.ID) + " (carbide) set in band with a new 16-byte password",
		"scout: BMC enrolled: machine " + id} {
		if !strings.Contains(string(c), want) {
			t.Errorf("the console has no %q:\n%s", want, tail(string(c), 30))
		}
	}
	for _, line := range strings.Split(string(c), "\n") {
		if strings.Contains(line, "scout: BMC") {
			t.Log(strings.TrimSpace(line))
		}
	}
	for name, text := range map[string]string{"console": string(c), "carbide-bmc": daemon.out.String()} {
		if strings.Contains(text, user.Password) || strings.Contains(text, e2eBMCPassword) {
			t.Errorf("the %s log holds a BMC password", name)
		}
	}
}

// ipmitoolAs runs ipmitool over lanplus in the lab against the enrolment
// BMC as user; the password goes through the environment.
func ipmitoolAs(l *lab, user, password string, args ...string) (string, error) {
	ipmitool, err := findProgram("ipmitool")
	if err != nil {
		return "", err
	}
	argv := append([]string{"ip", "netns", "exec", l.ns.name, ipmitool, "-I", "lanplus", "-C", "3", "-N", "1", "-R", "2",
		"-H", enrolBMCAddr, "-U", user, "-E"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "IPMITOOL_PASSWORD="+password)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// genericImage is the discovery image built with Debian's generic kernel,
// whose IPMI drivers give the agent /dev/ipmi0; built once per test
// binary.
var genericImage struct {
	once sync.Once
	dir  string
	res  *initramfs.Result
	err  error
}

// genericScoutImage returns an artifacts directory for carbide-pxe with
// the generic-kernel discovery image in its scout/ directory. The kernel
// package is $CARBIDE_GENERIC_KERNEL_DIR, or .build/kernel-generic/current
// (scripts/fetch-kernel .build/kernel-generic generic).
func genericScoutImage(t testing.TB) string {
	t.Helper()
	genericImage.once.Do(func() {
		kdir := os.Getenv("CARBIDE_GENERIC_KERNEL_DIR")
		if kdir == "" {
			root, err := workspaceRoot()
			if err != nil {
				genericImage.err = err
				return
			}
			kdir = filepath.Join(root, ".build", "kernel-generic", "current")
		}
		if _, err := os.Stat(filepath.Join(kdir, "boot")); err != nil {
			genericImage.err = fmt.Errorf("no unpacked generic kernel package at %s (%v): run scripts/fetch-kernel .build/kernel-generic generic, "+
				"which downloads Debian's generic kernel (it has the IPMI drivers the cloud kernel lacks), or point CARBIDE_GENERIC_KERNEL_DIR at one", kdir, err)
			return
		}
		genericImage.dir, genericImage.res, genericImage.err = buildImageFrom(kdir, filepath.Join(filepath.Dir(bins.api), "artifacts-generic", "scout"))
		if genericImage.err == nil && len(genericImage.res.Modules.Missing) > 0 {
			genericImage.err = fmt.Errorf("the generic kernel package lacks modules the image wants: %s", strings.Join(genericImage.res.Modules.Missing, " "))
		}
	})
	if genericImage.err != nil {
		t.Fatal(genericImage.err)
	}
	return filepath.Dir(genericImage.dir)
}
