package bmcsim

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

func cmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func TestQEMUMachine(t *testing.T) {
	t.Parallel()
	qemu := need(t, "qemu-system-x86_64", "qemu-system-x86")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// A paused VM (-S) starts in a fraction of a second and runs no
	// firmware: enough to see power, resets and the boot order.
	m, err := NewQEMUMachine(ctx, QEMUConfig{
		Command: []string{qemu, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "32"},
		Dir:     t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("set boot", m.SetBoot(ctx, Boot{Target: "Pxe", Enabled: "Once", Mode: "Legacy"}))
	step("on", m.Reset(ctx, ResetOn))
	pid := m.Pid()
	if pid == 0 {
		t.Fatal("no VM after On")
	}
	if cl := cmdline(t, pid); !strings.Contains(cl, "-boot once=n") {
		t.Errorf("VM command line %q lacks -boot once=n", cl)
	}
	step("set boot while running", m.SetBoot(ctx, Boot{Target: "Hdd", Enabled: "Continuous", Mode: "Legacy"}))
	step("restart", m.Reset(ctx, ResetForceRestart))
	step("graceful shutdown", m.Reset(ctx, ResetGracefulShutdown)) // the paused guest ignores it
	if m.Pid() != pid {
		t.Errorf("restart or ACPI shutdown request replaced the VM: pid %d, was %d", m.Pid(), pid)
	}
	step("power cycle", m.Reset(ctx, ResetPowerCycle))
	pid2 := m.Pid()
	if pid2 == 0 || pid2 == pid {
		t.Fatalf("power cycle: pid %d, was %d; want a new VM", pid2, pid)
	}
	if cl := cmdline(t, pid2); !strings.Contains(cl, "-boot order=c") {
		t.Errorf("VM command line after a Continuous Hdd override %q lacks -boot order=c", cl)
	}
	step("off", m.Reset(ctx, ResetForceOff))
	if on, _ := m.PoweredOn(ctx); on || processAlive(pid2) {
		t.Errorf("VM %d still runs after ForceOff", pid2)
	}

	// Through the Redfish service.
	r, err := StartRedfish(ctx, RedfishConfig{Password: "pw", Systems: map[string]Machine{"vm": m}})
	if err != nil {
		t.Fatal(err)
	}
	c := rfClient{t: t, base: r.URL(), c: httpsClient()}
	if code, _, body := c.do("POST", "/redfish/v1/Systems/vm/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`, basic("admin", "pw")); code != 204 {
		t.Fatalf("reset On: %d %v", code, body)
	}
	if _, _, sys := c.do("GET", "/redfish/v1/Systems/vm", "", basic("admin", "pw")); sys["PowerState"] != "On" || m.Pid() == 0 {
		t.Errorf("after Redfish On: PowerState %v, pid %d", sys["PowerState"], m.Pid())
	}
}
