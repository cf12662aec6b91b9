package bmcsim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// freeUDP returns a loopback UDP address nobody listens on right now.
func freeUDP(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// freeTCP returns a loopback TCP address nobody listens on right now.
func freeTCP(t testing.TB) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// need fails the test when program is not installed.
func need(t testing.TB, program, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s not found: apt-get install %s", program, pkg)
	}
	return p
}

func startIPMI(t *testing.T, cfg IPMIConfig) *IPMI {
	t.Helper()
	need(t, "ipmi_sim", "openipmi")
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if !cfg.Addr.IsValid() {
		cfg.Addr = freeUDP(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := StartIPMI(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		s.Stop()
		if t.Failed() {
			vmlog, _ := os.ReadFile(filepath.Join(cfg.Dir, "vm.log"))
			t.Logf("ipmi_sim output: %s\nVM log: %s", s.Output(), vmlog)
		}
	})
	return s
}

// ipmitool runs ipmitool over lanplus with cipher suite 3 against addr;
// the password goes through the environment, never the command line.
func ipmitool(t *testing.T, addr netip.AddrPort, user, pass string, args ...string) (string, error) {
	t.Helper()
	bin := need(t, "ipmitool", "ipmitool")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append([]string{"-I", "lanplus", "-C", "3", "-N", "1", "-R", "2", "-H", addr.Addr().String(),
		"-p", strconv.Itoa(int(addr.Port())), "-U", user, "-E"}, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = append(os.Environ(), "IPMITOOL_PASSWORD="+pass)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustIPMItool(t *testing.T, s *IPMI, args ...string) string {
	t.Helper()
	out, err := ipmitool(t, s.Addr(), "admin", "s3cret-pw", args...)
	if err != nil {
		t.Fatalf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestIPMIWithIpmitool(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, IPMIConfig{Password: "s3cret-pw"})

	steps := []struct {
		args []string
		want string
	}{
		{[]string{"chassis", "power", "status"}, "Chassis Power is off"},
		{[]string{"chassis", "power", "on"}, "Chassis Power Control: Up/On"},
		{[]string{"chassis", "power", "status"}, "Chassis Power is on"},
		{[]string{"chassis", "bootdev", "pxe"}, "Set Boot Device to pxe"},
		{[]string{"chassis", "power", "reset"}, "Chassis Power Control: Reset"},
		{[]string{"chassis", "power", "soft"}, "Chassis Power Control: Soft"},
		{[]string{"chassis", "power", "status"}, "Chassis Power is off"},
		{[]string{"chassis", "power", "on"}, "Chassis Power Control: Up/On"},
		{[]string{"chassis", "power", "off"}, "Chassis Power Control: Down/Off"},
		{[]string{"chassis", "power", "status"}, "Chassis Power is off"},
	}
	for _, st := range steps {
		if got := mustIPMItool(t, s, st.args...); got != st.want {
			t.Fatalf("ipmitool %s = %q, want %q", strings.Join(st.args, " "), got, st.want)
		}
	}
	if boot, err := s.BootDevice(); err != nil || boot != "pxe" {
		t.Errorf("BootDevice() = %q, %v; want pxe", boot, err)
	}
	if on, err := s.PoweredOn(); err != nil || on {
		t.Errorf("PoweredOn() = %v, %v; want off", on, err)
	}
	actions, err := s.Actions()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"power on", "boot pxe", "reset", "shutdown", "power on", "power off"}
	if diff := cmp.Diff(want, Names(actions)); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	for i := 1; i < len(actions); i++ {
		if actions[i].Time.Before(actions[i-1].Time) {
			t.Errorf("action %d (%v) is before action %d (%v)", i, actions[i], i-1, actions[i-1])
		}
	}
}

func TestIPMIRefusesWrongCredentials(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, IPMIConfig{Password: "s3cret-pw"})
	for _, c := range []struct{ user, pass string }{{"admin", "wrong"}, {"nobody", "s3cret-pw"}} {
		out, err := ipmitool(t, s.Addr(), c.user, c.pass, "chassis", "power", "on")
		if err == nil {
			t.Errorf("ipmitool as %s with a wrong password or user succeeded: %s", c.user, out)
		}
		if !strings.Contains(out, "Unable to establish IPMI v2 / RMCP+ session") {
			t.Errorf("ipmitool as %s said %q, want a refused session", c.user, out)
		}
	}
	if actions, err := s.Actions(); err != nil || len(actions) != 0 {
		t.Errorf("actions after refused logins = %v, %v; want none", actions, err)
	}
	if err := Ping(context.Background(), s.Addr(), time.Second); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestIPMIPowerCycle(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, IPMIConfig{Password: "s3cret-pw", PoweredOn: true})
	if got := mustIPMItool(t, s, "chassis", "power", "cycle"); got != "Chassis Power Control: Cycle" {
		t.Fatalf("power cycle: %q", got)
	}
	// ipmi_sim powers off at once and on again about a second later.
	deadline := time.Now().Add(5 * time.Second)
	for {
		actions, err := s.Actions()
		if err != nil {
			t.Fatal(err)
		}
		if len(actions) >= 2 {
			if diff := cmp.Diff([]string{"power off", "power on"}, Names(actions)); diff != "" {
				t.Fatalf("actions (-want +got):\n%s", diff)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("actions after power cycle: %v, want power off then on", Names(actions))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestIPMIStopsOnCancel(t *testing.T) {
	t.Parallel()
	need(t, "ipmi_sim", "openipmi")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := StartIPMI(ctx, IPMIConfig{Addr: freeUDP(t), Password: "pw", Dir: t.TempDir()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.Stop()
		t.Fatal("ipmi_sim still runs 5 s after its context was cancelled")
	}
}

func TestIPMIDrivesQEMU(t *testing.T) {
	t.Parallel()
	qemu := need(t, "qemu-system-x86_64", "qemu-system-x86")
	dir := t.TempDir()
	kcs := freeTCP(t)
	// A paused VM (-S): QEMU starts in a fraction of a second and runs no
	// firmware, which is all this test needs to see power and boot order.
	vm := append([]string{qemu, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "32"},
		KCSArgs(kcs)...)
	s := startIPMI(t, IPMIConfig{Password: "s3cret-pw", Dir: dir, QEMU: vm, KCS: kcs})

	mustIPMItool(t, s, "chassis", "bootdev", "pxe")
	mustIPMItool(t, s, "chassis", "power", "on")
	pid, err := s.VMPid()
	if err != nil || pid == 0 {
		t.Fatalf("no VM after power on: pid %d, %v", pid, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if !strings.Contains(strings.Join(args, " "), "-boot n") {
		t.Errorf("VM command line %q has no -boot n after bootdev pxe", args)
	}
	if got := mustIPMItool(t, s, "chassis", "power", "status"); got != "Chassis Power is on" {
		t.Errorf("power status with the VM running: %q", got)
	}
	// The VM's KCS interface connects to the BMC's in-band listener.
	if !waitUntil(3*time.Second, func() bool { return tcpConnected(pid, kcs.Port()) }) {
		t.Errorf("the VM did not connect its KCS chardev to %s", kcs)
	}

	mustIPMItool(t, s, "chassis", "power", "reset")
	pid2, _ := s.VMPid()
	if pid2 == 0 || pid2 == pid || !processAlive(pid2) {
		t.Errorf("after reset the VM pid is %d (was %d); want a new running VM", pid2, pid)
	}
	mustIPMItool(t, s, "chassis", "power", "off")
	if processAlive(pid2) {
		t.Errorf("VM %d still runs after power off", pid2)
	}
	if got := mustIPMItool(t, s, "chassis", "power", "status"); got != "Chassis Power is off" {
		t.Errorf("power status after off: %q", got)
	}
	actions, _ := s.Actions()
	if diff := cmp.Diff([]string{"boot pxe", "power on", "reset", "power off"}, Names(actions)); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// tcpConnected reports whether pid's network namespace has an established
// TCP connection to port.
func tcpConnected(pid int, port uint16) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[2], want) && f[3] == "01" {
			return true
		}
	}
	return false
}

// TestIPMIUserManagement: the BMC reports its address and MAC (Get LAN
// Configuration Parameters) when given a MAC, and accepts the user
// management commands an in-band enrolment sends; a new user then logs in
// over lanplus, and Users reads it back from ipmi_sim's state. It also
// pins down what ipmi_sim does with a 20-byte password: it keeps the
// first 16 bytes only, and its password test accepts anything.
func TestIPMIUserManagement(t *testing.T) {
	t.Parallel()
	mac, _ := net.ParseMAC("52:54:00:be:ef:01")
	s := startIPMI(t, IPMIConfig{Password: "s3cret-pw", MAC: mac})
	if got := mustIPMItool(t, s, "raw", "0x0c", "0x02", "0x01", "0x05", "0x00", "0x00"); got != "11 52 54 00 be ef 01" {
		t.Errorf("LAN parameter 5 (MAC): %q", got)
	}
	a := s.Addr().Addr().As4()
	if got, want := mustIPMItool(t, s, "raw", "0x0c", "0x02", "0x01", "0x03", "0x00", "0x00"), fmt.Sprintf("11 %02x %02x %02x %02x", a[0], a[1], a[2], a[3]); got != want {
		t.Errorf("LAN parameter 3 (IP address): %q, want %q", got, want)
	}
	// Channel 1 is the 802.3 LAN channel.
	if got := mustIPMItool(t, s, "raw", "0x06", "0x42", "0x01"); !strings.HasPrefix(got, "01 04 ") {
		t.Errorf("Get Channel Info 1: %q, want channel 1, medium 802.3 LAN", got)
	}

	// The enrolment's commands, sent over LAN (ipmi_sim answers them the
	// same way on every channel): user 3, named, a password in the 16-byte
	// form, enabled, ADMINISTRATOR with IPMI messaging on channel 1.
	const pw16 = "Abcdefgh12345678"
	mustIPMItool(t, s, "user", "set", "name", "3", "carbide")
	mustIPMItool(t, s, "user", "set", "password", "3", pw16, "16")
	mustIPMItool(t, s, "user", "enable", "3")
	mustIPMItool(t, s, "channel", "setaccess", "1", "3", "ipmi=on", "privilege=4")
	if out, err := ipmitool(t, s.Addr(), "carbide", pw16, "chassis", "power", "status"); err != nil {
		t.Fatalf("the new user cannot log in over lanplus: %v: %s", err, out)
	}
	want := []IPMIUser{{ID: 2, Name: "admin", Password: "s3cret-pw", Privilege: 4, Enabled: true},
		{ID: 3, Name: "carbide", Password: pw16, Privilege: 4, Enabled: true}}
	var users []IPMIUser
	var err error
	waitUntil(5*time.Second, func() bool { users, err = s.Users(); return cmp.Equal(want, users) })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, users); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}

	// A 20-byte password: ipmi_sim keeps its first 16 bytes, so the
	// whole password is refused over lanplus and its first 16 characters
	// let one in; a wrong password passes the password test.
	const pw20 = "Abcdefgh12345678WXYZ"
	mustIPMItool(t, s, "user", "set", "password", "3", pw20, "20")
	if out, err := ipmitool(t, s.Addr(), "carbide", pw20, "chassis", "power", "status"); err == nil {
		t.Errorf("ipmi_sim now keeps 20-byte passwords whole (%s): the agent's fallback to 16 bytes may go", out)
	}
	if out, err := ipmitool(t, s.Addr(), "carbide", pw20[:16], "chassis", "power", "status"); err != nil {
		t.Errorf("the first 16 characters of a 20-byte password: %v: %s", err, out)
	}
	if out, err := ipmitool(t, s.Addr(), "admin", "s3cret-pw", "user", "test", "3", "20", "not-the-password"); err != nil || !strings.Contains(out, "Success") {
		t.Errorf("ipmi_sim's password test of a wrong password: %v: %q; the agent relies on it passing to detect ipmi_sim", err, out)
	}
}
