package bmcsim

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed chassis_control.sh
var chassisControlBody string

// IPMIConfig describes one simulated IPMI BMC.
type IPMIConfig struct {
	// Addr is the UDP address of its LAN channel (IPMI-over-LAN, lanplus):
	// a loopback address, or an address inside the network namespace Wrap
	// enters. Required; port 623 is the usual one.
	Addr netip.AddrPort
	// Username of the one administrator (user 2); "admin" when empty.
	Username string
	// Password of that user. Required.
	Password string
	// Dir is the instance directory (lan.conf, bmc.emu, state, the
	// chassis_control program, its state files and actions.log); it must
	// exist, and is usually a test's TempDir.
	Dir string
	// Wrap, when set, returns the command line that runs argv, e.g.
	// prepending "ip netns exec NS" so the BMC (and its VM) run in a test
	// namespace. ipmi_sim must be the process that is started (exec'd in
	// place), as ip netns exec does.
	Wrap func(argv []string) []string
	// QEMU, when set, is the command line of the machine's VM (program
	// first): power on starts it with -daemonize and -pidfile added, and
	// with -boot n when the boot device is pxe; power off, soft off and
	// reset kill it (reset starts it again). It must not daemonize itself,
	// use -nographic or take stdio. When nil the machine is only state
	// files, which is what a benchmark with many BMCs wants.
	QEMU []string
	// PoweredOn is the machine's power state at start (it starts QEMU).
	PoweredOn bool
	// KCS, when valid, opens ipmi_sim's in-band system interface: a TCP
	// listener that QEMU connects to so the guest sees a KCS BMC (see
	// [IPMI.KCSArgs]).
	KCS netip.AddrPort
	// MAC, when set, makes the BMC report its LAN settings (Get LAN
	// Configuration Parameters, through its lan_config program): Addr's
	// address as its IP address, and MAC as its MAC address. Without it
	// ipmi_sim reports 0.0.0.0 and 00:00:00:00:00:00.
	MAC net.HardwareAddr
}

// IPMI is a running ipmi_sim instance.
type IPMI struct {
	cfg  IPMIConfig
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  bytes.Buffer
}

// StartIPMI writes the configuration of a simulated BMC into cfg.Dir and
// starts ipmi_sim on it; it returns once the BMC answers on its LAN
// channel. The BMC (and its VM) stop when ctx is done or on Stop.
func StartIPMI(ctx context.Context, cfg IPMIConfig) (*IPMI, error) {
	if cfg.Username == "" {
		cfg.Username = "admin"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sim, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, errors.New("find ipmi_sim: not installed (apt-get install openipmi)")
	}
	if err := cfg.write(); err != nil {
		return nil, err
	}
	argv := []string{sim, "-c", filepath.Join(cfg.Dir, "lan.conf"), "-f", filepath.Join(cfg.Dir, "bmc.emu"),
		"-s", filepath.Join(cfg.Dir, "state"), "-n"}
	if cfg.Wrap != nil {
		argv = cfg.Wrap(argv)
	}
	s := &IPMI{cfg: cfg, done: make(chan struct{})}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ipmi_sim: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.done:
		}
	}()
	if cfg.PoweredOn && len(cfg.QEMU) > 0 {
		if err := s.control("init"); err != nil {
			s.Stop()
			return nil, err
		}
	}
	if err := s.waitReady(ctx, 5*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (c *IPMIConfig) validate() error {
	var errs []error
	if !c.Addr.IsValid() {
		errs = append(errs, errors.New("ipmi: Addr is required"))
	}
	if c.Password == "" {
		errs = append(errs, errors.New("ipmi: Password is required"))
	}
	if strings.ContainsAny(c.Username+c.Password, "\"\n\\") {
		errs = append(errs, errors.New(`ipmi: Username and Password cannot hold '"', '\' or a newline`))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("ipmi: Dir is required"))
	}
	return errors.Join(errs...)
}

// write writes lan.conf, bmc.emu, the state directory and the
// chassis_control program with its state files.
func (c *IPMIConfig) write() error {
	prog := filepath.Join(c.Dir, "chassis_control")
	var lan strings.Builder
	fmt.Fprintf(&lan, "name \"bmcsim\"\nset_working_mc 0x20\n  startlan 1\n")
	fmt.Fprintf(&lan, "    addr %s %d\n", c.Addr.Addr(), c.Addr.Port())
	lan.WriteString("    priv_limit admin\n")
	for _, p := range []string{"callback", "user", "operator", "admin"} {
		fmt.Fprintf(&lan, "    allowed_auths_%s none md2 md5 straight\n", p)
	}
	lan.WriteString("    guid a123456789abcdefa123456789abcdef\n")
	if c.MAC != nil {
		fmt.Fprintf(&lan, "    lan_config_program \"%s\"\n", filepath.Join(c.Dir, "lan_config"))
	}
	lan.WriteString("  endlan\n")
	fmt.Fprintf(&lan, "  chassis_control \"%s\"\n", prog)
	if c.KCS.IsValid() {
		fmt.Fprintf(&lan, "  serial kcs %s %d codec VM\n", c.KCS.Addr(), c.KCS.Port())
	}
	fmt.Fprintf(&lan, "user 2 true \"%s\" \"%s\" admin 10 none md2 md5 straight\n", c.Username, c.Password)

	const emu = "mc_setbmc 0x20\n" +
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n" +
		"mc_enable 0x20\n"

	var script strings.Builder
	script.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&script, "dir=%s\n", shellQuote(c.Dir))
	vm := "0"
	if len(c.QEMU) > 0 {
		vm = "1"
	}
	fmt.Fprintf(&script, "vm=%s\n", vm)
	script.WriteString("qemu_run() {\n\t")
	for _, a := range c.QEMU {
		script.WriteString(shellQuote(a) + " ")
	}
	script.WriteString("\"$@\"\n}\n")
	script.WriteString(chassisControlBody)

	power := "0\n"
	if c.PoweredOn && len(c.QEMU) == 0 {
		power = "1\n"
	}
	files := []struct {
		name, body string
		mode       os.FileMode
	}{
		{"lan.conf", lan.String(), 0o600},
		{"bmc.emu", emu, 0o644},
		{"chassis_control", script.String(), 0o755},
		{"power", power, 0o644},
		{"boot", "default\n", 0o644},
	}
	if c.MAC != nil {
		files = append(files, struct {
			name, body string
			mode       os.FileMode
		}{"lan_config", lanConfigProgram(c.Addr.Addr(), c.MAC), 0o755})
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "state"), 0o700); err != nil {
		return fmt.Errorf("create ipmi_sim state dir: %w", err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, f.name), []byte(f.body), f.mode); err != nil {
			return fmt.Errorf("write ipmi_sim %s: %w", f.name, err)
		}
	}
	return nil
}

// lanConfigProgram is the lan_config program of a BMC at addr with MAC
// mac: ipmi_sim calls it as "prog get <parameter>..." (and "prog set
// <parameter> <value>...", which it ignores), and reads "name:value"
// lines.
func lanConfigProgram(addr netip.Addr, mac net.HardwareAddr) string {
	return fmt.Sprintf(`#!/bin/sh
[ "${1:-}" = get ] || exit 0
shift
for p in "$@"; do
	case $p in
	ip_addr) echo "ip_addr:%s" ;;
	ip_addr_src) echo "ip_addr_src:static" ;;
	mac_addr) echo "mac_addr:%s" ;;
	subnet_mask) echo "subnet_mask:255.255.255.0" ;;
	*_ip_addr) echo "$p:0.0.0.0" ;;
	*_mac_addr) echo "$p:00:00:00:00:00:00" ;;
	esac
done
`, addr.Unmap(), mac)
}

// IPMIUser is a user of a simulated BMC as ipmi_sim keeps it.
type IPMIUser struct {
	ID       int
	Name     string
	Password string
	// Privilege is the user's privilege limit (4: ADMINISTRATOR).
	Privilege int
	// Enabled is ipmi_sim's "valid": the user may open sessions.
	Enabled bool
}

// Users reads the BMC's users from the state ipmi_sim keeps in its state
// directory, which it rewrites within about a second of a change (over
// LAN or in band); before the first change there is none. It is what the BMC itself holds, including the passwords, as a test
// that plays the BMC's owner may look at. Users with neither a name nor
// a password are left out.
func (s *IPMI) Users() ([]IPMIUser, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "state", "ipmi_sim", "bmcsim", "users.mc20"))
	if err != nil {
		return nil, fmt.Errorf("read ipmi_sim users: %w", err)
	}
	byID := map[int]*IPMIUser{}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		idStr, field, ok2 := strings.Cut(key, ".")
		id, err := strconv.Atoi(idStr)
		if !ok || !ok2 || err != nil {
			continue
		}
		u := byID[id]
		if u == nil {
			u = &IPMIUser{ID: id}
			byID[id] = u
		}
		typ, raw, _ := strings.Cut(val, ":")
		switch field {
		case "username":
			u.Name = strings.TrimRight(unescapePersist(raw), "\x00")
		case "passwd":
			u.Password = strings.TrimRight(unescapePersist(raw), "\x00")
		case "privilege":
			u.Privilege, _ = strconv.Atoi(raw)
		case "valid":
			u.Enabled = typ == "i" && raw == "1"
		}
	}
	var users []IPMIUser
	for id := range 64 {
		if u := byID[id]; u != nil && (u.Name != "" || u.Password != "") {
			users = append(users, *u)
		}
	}
	return users, nil
}

// unescapePersist decodes ipmi_sim's persisted data: bytes as themselves,
// or as a backslash and two hex digits.
func unescapePersist(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(v))
				i += 2
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}

// waitReady waits until ipmi_sim answers an unauthenticated Get Channel
// Authentication Capabilities on its LAN address, or, when it runs in
// another namespace, until its UDP socket is bound there.
func (s *IPMI) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		if s.cfg.Wrap == nil {
			ok = Ping(ctx, s.cfg.Addr, 100*time.Millisecond) == nil
		} else {
			ok = udpBound(s.cmd.Process.Pid, s.cfg.Addr.Port())
		}
		if ok {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("start ipmi_sim: exited (%v): %s", s.err, strings.TrimSpace(s.out.String()))
		case <-ctx.Done():
			return fmt.Errorf("start ipmi_sim: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start ipmi_sim: no answer on %s after %s: %s", s.cfg.Addr, timeout, strings.TrimSpace(s.out.String()))
		}
	}
}

// udpBound reports whether process pid's network namespace has a UDP
// socket bound to port.
func udpBound(pid int, port uint16) bool {
	want := fmt.Sprintf(":%04X ", port)
	for _, f := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 2 && strings.Contains(fields[1]+" ", want) {
				return true
			}
		}
	}
	return false
}

// Ping sends one unauthenticated IPMI "Get Channel Authentication
// Capabilities" request to addr and waits up to timeout for any answer.
func Ping(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	defer conn.Close()
	req := []byte{
		0x06, 0x00, 0xff, 0x07, // RMCP: version 1.0, no ack, class IPMI
		0x00, 0, 0, 0, 0, 0, 0, 0, 0, // session: auth none, sequence 0, id 0
		0x09,             // message length
		0x20, 0x18, 0xc8, // BMC address, netFn application, checksum
		0x81, 0x00, 0x38, // remote console address, sequence, command
		0x8e, 0x04, 0xb5, // this channel with IPMI 2.0 data, admin, checksum
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	buf := make([]byte, 64)
	if _, err := conn.Read(buf); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	return nil
}

// control runs the instance's chassis_control program as ipmi_sim would.
func (s *IPMI) control(args ...string) error {
	argv := append([]string{filepath.Join(s.cfg.Dir, "chassis_control")}, args...)
	if s.cfg.Wrap != nil {
		argv = s.cfg.Wrap(argv)
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run chassis_control %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Addr is the BMC's LAN address.
func (s *IPMI) Addr() netip.AddrPort { return s.cfg.Addr }

// Dir is the instance directory.
func (s *IPMI) Dir() string { return s.cfg.Dir }

// Actions reads the actions log: what the BMC did to its machine so far.
func (s *IPMI) Actions() ([]Action, error) {
	return readActions(filepath.Join(s.cfg.Dir, "actions.log"))
}

// PoweredOn reports the machine's power as the BMC last set it (with a VM,
// whether its QEMU process runs).
func (s *IPMI) PoweredOn() (bool, error) {
	if len(s.cfg.QEMU) > 0 {
		pid, err := s.VMPid()
		if err != nil || pid == 0 {
			return false, err
		}
		return processAlive(pid), nil
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "power"))
	if err != nil {
		return false, fmt.Errorf("read power state: %w", err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// BootDevice is the boot device the BMC last set: "pxe" or "default".
func (s *IPMI) BootDevice() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "boot"))
	if err != nil {
		return "", fmt.Errorf("read boot device: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// VMPid is the process id of the running VM, or 0 when there is none.
func (s *IPMI) VMPid() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "vm.pid"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read vm pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, nil // QEMU is still writing it
	}
	return pid, nil
}

// KCSArgs are the QEMU arguments that connect a VM's in-band KCS system
// interface to this BMC (IPMIConfig.KCS must be set):
//
//	-chardev socket,id=bmcsim-kcs,host=<KCS addr>,port=<KCS port>,reconnect=1
//	-device ipmi-bmc-extern,id=bmcsim-bmc,chardev=bmcsim-kcs
//	-device isa-ipmi-kcs,bmc=bmcsim-bmc
//
// The guest then sees an IPMI KCS interface at I/O port 0xca2 (ipmitool
// inside it talks to this BMC with the open interface), and ipmi_sim can
// ask the guest for a graceful shutdown through it.
func (s *IPMI) KCSArgs() []string {
	if !s.cfg.KCS.IsValid() {
		return nil
	}
	return KCSArgs(s.cfg.KCS)
}

// KCSArgs are the QEMU arguments of [IPMI.KCSArgs] for a BMC whose KCS
// listener is kcs, for building the VM's command line before the BMC runs.
func KCSArgs(kcs netip.AddrPort) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=bmcsim-kcs,host=%s,port=%d,reconnect=1", kcs.Addr(), kcs.Port()),
		"-device", "ipmi-bmc-extern,id=bmcsim-bmc,chardev=bmcsim-kcs",
		"-device", "isa-ipmi-kcs,bmc=bmcsim-bmc",
	}
}

// Stop stops ipmi_sim and the VM, and waits for ipmi_sim to exit.
func (s *IPMI) Stop() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(2 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if pid, _ := s.VMPid(); pid > 0 && processAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Output is what ipmi_sim printed so far, for a failing test's log.
func (s *IPMI) Output() string {
	select {
	case <-s.done:
		return s.out.String()
	default:
		return "(ipmi_sim still running)"
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
