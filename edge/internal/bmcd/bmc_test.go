package bmcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	"github.com/google/go-cmp/cmp"
	"github.com/stmcginnis/gofish/common"
)

const password = "Secr3t-BMC-pw"

func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func startIPMI(t *testing.T, addr netip.AddrPort) *bmcsim.IPMI {
	t.Helper()
	for _, p := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: apt-get install openipmi ipmitool", p)
		}
	}
	if !addr.IsValid() {
		addr = freeUDP(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{Addr: addr, Password: password, Dir: t.TempDir()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Stop() })
	return s
}

func startRedfish(t *testing.T, ln net.Listener) (*bmcsim.Redfish, *bmcsim.MemoryMachine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := &bmcsim.MemoryMachine{}
	r, err := bmcsim.StartRedfish(ctx, bmcsim.RedfishConfig{Listener: ln, Password: password, Systems: map[string]bmcsim.Machine{"1": m}})
	if err != nil {
		t.Fatal(err)
	}
	return r, m
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr().String(), int(ap.Port())
}

func open(t *testing.T, target Target, o Options) *Client {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	c, err := Open(context.Background(), target, o)
	if err != nil {
		t.Fatalf("open %s BMC: %v", target.Protocol, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// runAll runs every operation in an order whose effects each BMC logs.
func runAll(t *testing.T, c *Client) {
	t.Helper()
	ctx := context.Background()
	check := func(want PowerState) {
		t.Helper()
		got, err := c.PowerState(ctx)
		if err != nil || got != want {
			t.Fatalf("PowerState() = %q, %v; want %q", got, err, want)
		}
	}
	do := func(name string, f func(context.Context) error) {
		t.Helper()
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	check(PowerOff)
	do("PowerOn", c.PowerOn)
	check(PowerOn)
	do("PowerOn again", c.PowerOn) // already on: no action
	do("SetBootDevice", func(ctx context.Context) error { return c.SetBootDevice(ctx, BootPXE, false, false) })
	do("Reset", c.Reset)
	do("SoftOff", c.SoftOff)
	check(PowerOff)
	do("PowerOn", c.PowerOn)
	do("PowerOff", c.PowerOff)
	check(PowerOff)
	do("PowerOn", c.PowerOn)
	do("Cycle", c.Cycle)
	if err := c.SetBootDevice(ctx, "floppy", false, false); err == nil || IsTransient(err) {
		t.Errorf("SetBootDevice(floppy) = %v, want a permanent error", err)
	}
}

func waitActions(t *testing.T, want []string, actions func() []bmcsim.Action) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := bmcsim.Names(actions())
		if len(got) >= len(want) || time.Now().After(deadline) {
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestIPMIOperations(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, netip.AddrPort{})
	c := open(t, Target{Host: "127.0.0.1", Port: int(s.Addr().Port()), Protocol: ProtocolIPMI, Username: "admin", Password: password}, Options{})
	runAll(t, c)
	// ipmi_sim powers a cycled machine on again about a second later.
	waitActions(t, []string{"power on", "boot pxe", "reset", "shutdown", "power on", "power off", "power on", "power off", "power on"},
		func() []bmcsim.Action { a, _ := s.Actions(); return a })
}

func TestRedfishOperations(t *testing.T) {
	t.Parallel()
	r, m := startRedfish(t, nil)
	host, port := hostPort(t, r.Addr().String())
	c := open(t, Target{Host: host, Port: port, Protocol: ProtocolRedfish, Username: "admin", Password: password},
		Options{RedfishRootCAs: bmcsim.CertPool()})
	runAll(t, c)
	waitActions(t, []string{"reset On", "boot Pxe Once Legacy", "reset PowerCycle", "reset GracefulShutdown", "reset On",
		"reset ForceOff", "reset On", "reset ForceRestart"}, r.Actions)
	if err := c.SetBootDevice(context.Background(), BootDisk, true, true); err != nil {
		t.Fatal(err)
	}
	if got, want := m.Boot(), (bmcsim.Boot{Target: "Hdd", Enabled: "Continuous", Mode: "UEFI"}); got != want {
		t.Errorf("boot override = %+v, want %+v", got, want)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := r.Sessions(); n != 0 {
		t.Errorf("%d Redfish sessions still open after Close", n)
	}
}

func TestAutoUsesTheOrder(t *testing.T) {
	t.Parallel()
	// Redfish over TCP and IPMI over UDP on the same port number, as one
	// Target port serves both protocols.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	r, _ := startRedfish(t, ln)
	s := startIPMI(t, addr)
	target := Target{Host: "127.0.0.1", Port: int(addr.Port()), Protocol: ProtocolAuto, Username: "admin", Password: password}

	c := open(t, target, Options{AutoOrder: []Protocol{ProtocolIPMI, ProtocolRedfish}, RedfishRootCAs: bmcsim.CertPool()})
	if diff := cmp.Diff([]Protocol{ProtocolIPMI, ProtocolRedfish}, c.Protocols()); diff != "" {
		t.Errorf("protocols (-want +got):\n%s", diff)
	}
	if err := c.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Actions(); len(a) != 1 || len(r.Actions()) != 0 {
		t.Errorf("IPMI first: IPMI actions %v, Redfish actions %v; want one IPMI power on", a, r.Actions())
	}

	c = open(t, target, Options{RedfishRootCAs: bmcsim.CertPool()}) // default: Redfish first
	if err := c.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"reset On"}, bmcsim.Names(r.Actions())); diff != "" {
		t.Errorf("Redfish first: Redfish actions (-want +got):\n%s", diff)
	}
	if a, _ := s.Actions(); len(a) != 1 {
		t.Errorf("Redfish first, yet IPMI acted: %v", bmcsim.Names(a))
	}
}

func TestWrongPasswordIsPermanent(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, netip.AddrPort{})
	r, _ := startRedfish(t, nil)
	rhost, rport := hostPort(t, r.Addr().String())
	const wrong = "Wr0ng-pw-9f3a"
	for name, target := range map[string]Target{
		"ipmi":    {Host: "127.0.0.1", Port: int(s.Addr().Port()), Protocol: ProtocolIPMI, Username: "admin", Password: wrong},
		"redfish": {Host: rhost, Port: rport, Protocol: ProtocolRedfish, Username: "admin", Password: wrong},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Open(context.Background(), target, Options{Timeout: 10 * time.Second})
			if err == nil {
				t.Fatal("Open with a wrong password succeeded")
			}
			if IsTransient(err) {
				t.Errorf("wrong password is transient: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "refused the credentials for user admin") || !strings.Contains(msg, "check the username and password") {
				t.Errorf("message %q does not say to check the credentials", msg)
			}
			if strings.Contains(msg, wrong) || strings.Contains(msg, password) {
				t.Errorf("message %q holds a password", msg)
			}
			t.Logf("%s: %v", name, err)
			for u := err; u != nil; u = unwrap(u) {
				if strings.Contains(u.Error(), wrong) {
					t.Errorf("wrapped error %q holds the password", u.Error())
				}
			}
		})
	}
}

func unwrap(err error) error {
	u, ok := err.(interface{ Unwrap() error })
	if !ok {
		return nil
	}
	return u.Unwrap()
}

func TestUnreachableIsTransient(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Fatal("ipmitool not found: apt-get install ipmitool")
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedTCP := tcp.Addr().(*net.TCPAddr).Port
	tcp.Close()
	const timeout = 2 * time.Second
	for name, target := range map[string]Target{
		"ipmi":    {Host: "127.0.0.1", Port: int(freeUDP(t).Port()), Protocol: ProtocolIPMI, Username: "admin", Password: password},
		"redfish": {Host: "127.0.0.1", Port: closedTCP, Protocol: ProtocolRedfish, Username: "admin", Password: password},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			_, err := Open(context.Background(), target, Options{Timeout: timeout})
			took := time.Since(start)
			if err == nil {
				t.Fatal("Open of a port nobody serves succeeded")
			}
			if !IsTransient(err) {
				t.Errorf("unreachable BMC is permanent: %v", err)
			}
			if took > timeout+2*time.Second {
				t.Errorf("Open took %s with a %s timeout", took, timeout)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("message %q holds the password", err)
			}
			t.Logf("%s after %s: %v", name, took.Round(time.Millisecond), err)
		})
	}
}

func TestTargetValidate(t *testing.T) {
	t.Parallel()
	err := Target{Port: 70000, Protocol: "snmp"}.Validate()
	if err == nil {
		t.Fatal("Validate accepted an empty host, a bad port, protocol and username")
	}
	for _, want := range []string{"host is empty", "port 70000", `protocol "snmp"`, "username is empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, want it to mention %q", err, want)
		}
	}
}

func TestParsePowerState(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]PowerState{
		"Chassis Power is on\n": PowerOn, "Chassis Power is off": PowerOff,
		"On": PowerOn, "Off": PowerOff, "PoweringOn": PowerOn, "PoweringOff": PowerOff, "": PowerUnknown, "Paused": PowerUnknown,
	} {
		if got := parsePowerState(in); got != want {
			t.Errorf("parsePowerState(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	c := &Client{
		target:    Target{Host: "10.0.0.5", Port: 40155, Protocol: ProtocolRedfish, Username: "admin", Password: password},
		opts:      Options{Timeout: 5 * time.Second},
		protocols: []Protocol{ProtocolRedfish},
	}
	for name, tc := range map[string]struct {
		err       error
		transient bool
		says      string
	}{
		"401":                {common.ConstructError(401, []byte(`{}`)), false, "refused the credentials for user admin"},
		"500 on port 40155":  {fmt.Errorf("provider: gofish: %w", common.ConstructError(500, []byte("https://10.0.0.5:40155/redfish/v1 boom"))), true, "can be retried"},
		"405":                {common.ConstructError(405, nil), false, "cannot power on"},
		"deadline":           {fmt.Errorf("x: %w", context.DeadlineExceeded), true, "did not answer within 5s"},
		"refused":            {errors.New("dial tcp 10.0.0.5:40155: connect: connection refused"), true, "refused the connection"},
		"password in output": {errors.New("weird output " + password), true, "weird output <password>"},
	} {
		err := c.classify(context.Background(), "power on", tc.err)
		if IsTransient(err) != tc.transient || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: classify = %q (transient %v); want transient %v and %q", name, err, IsTransient(err), tc.transient, tc.says)
		}
		if strings.Contains(err.Error(), password) || strings.Contains(errors.Unwrap(err).Error(), password) {
			t.Errorf("%s: %q holds the password", name, err)
		}
	}
}
