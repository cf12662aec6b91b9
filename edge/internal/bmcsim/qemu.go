package bmcsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// QEMUConfig describes the VM behind a [QEMUMachine].
type QEMUConfig struct {
	// Command is the VM's QEMU command line, program first, as
	// edge/e2e builds it (-accel tcg, -display none, -serial file:..., the
	// tap netdev, disks, firmware). It must not daemonize or use stdio;
	// the machine adds -qmp and, for a boot override, -boot.
	Command []string
	// Dir holds the QMP socket and must exist (a test's TempDir).
	Dir string
	// Wrap, when set, returns the command line that runs argv, e.g. with
	// "ip netns exec NS" prepended; QEMU must be exec'd in place.
	Wrap func(argv []string) []string
}

// QEMUMachine is a Machine that is a QEMU VM driven over QMP: power on
// starts QEMU, ForceOff is QMP quit, GracefulShutdown is
// system_powerdown (ACPI; the guest decides), ForceRestart and
// GracefulRestart are system_reset, PowerCycle stops and starts QEMU.
//
// QMP cannot change a running VM's boot order for every firmware: a boot
// override is applied at once with the monitor's boot_set (SeaBIOS reads
// it at the next reset; OVMF with bootindex= devices does not), and
// always on the next start as -boot once=n|c (Once) or order=n|c
// (Continuous).
type QEMUMachine struct {
	cfg  QEMUConfig
	mu   sync.Mutex
	boot Boot
	cmd  *exec.Cmd
	done chan struct{}
	out  bytes.Buffer
}

var _ Machine = (*QEMUMachine)(nil)

// NewQEMUMachine returns the machine, powered off. Its VM is killed when
// ctx is done.
func NewQEMUMachine(ctx context.Context, cfg QEMUConfig) (*QEMUMachine, error) {
	if len(cfg.Command) == 0 || cfg.Dir == "" {
		return nil, errors.New("qemu machine: Command and Dir are required")
	}
	m := &QEMUMachine{cfg: cfg, boot: Boot{Target: "None", Enabled: "Disabled", Mode: "Legacy"}}
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.kill()
	}()
	return m, nil
}

func (m *QEMUMachine) socket() string { return filepath.Join(m.cfg.Dir, "qmp.sock") }

// running reports whether QEMU runs; m.mu must be held.
func (m *QEMUMachine) running() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// PoweredOn reports whether the VM's QEMU process runs.
func (m *QEMUMachine) PoweredOn(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running(), nil
}

// Pid is the QEMU process id, or 0 when the machine is off.
func (m *QEMUMachine) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running() {
		return 0
	}
	return m.cmd.Process.Pid
}

// Reset performs a ComputerSystem.Reset.
func (m *QEMUMachine) Reset(ctx context.Context, resetType string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	on := m.running()
	switch resetType {
	case ResetOn:
		if on {
			return nil
		}
		return m.start(ctx)
	case ResetForceOff:
		return m.stop(ctx)
	case ResetGracefulShutdown:
		if !on {
			return nil
		}
		return qmp(ctx, m.socket(), "system_powerdown", nil)
	case ResetForceRestart, ResetGracefulRestart:
		if !on {
			return m.start(ctx)
		}
		return qmp(ctx, m.socket(), "system_reset", nil)
	case ResetPowerCycle:
		if err := m.stop(ctx); err != nil {
			return err
		}
		return m.start(ctx)
	}
	return fmt.Errorf("reset type %q is not supported", resetType)
}

// SetBoot records the override for the next start and, when the VM runs,
// applies it with boot_set.
func (m *QEMUMachine) SetBoot(ctx context.Context, b Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	dev := bootLetter(b)
	if !m.running() || dev == "" {
		return nil
	}
	return qmp(ctx, m.socket(), "human-monitor-command", map[string]string{"command-line": "boot_set " + dev})
}

// bootLetter is QEMU's -boot drive letter for an override, "" for none.
func bootLetter(b Boot) string {
	if b.Enabled == "Disabled" {
		return ""
	}
	switch b.Target {
	case "Pxe":
		return "n"
	case "Hdd":
		return "c"
	}
	return ""
}

// start starts QEMU and waits for its QMP socket; m.mu must be held.
func (m *QEMUMachine) start(ctx context.Context) error {
	argv := append(slices.Clone(m.cfg.Command), "-qmp", "unix:"+m.socket()+",server=on,wait=off")
	if dev := bootLetter(m.boot); dev != "" {
		if m.boot.Enabled == "Once" {
			argv = append(argv, "-boot", "once="+dev)
			m.boot.Enabled = "Disabled"
		} else {
			argv = append(argv, "-boot", "order="+dev)
		}
	}
	if m.cfg.Wrap != nil {
		argv = m.cfg.Wrap(argv)
	}
	m.out.Reset()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &m.out, &m.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	m.cmd, m.done = cmd, done
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", m.socket())
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("start qemu: exited: %s", m.out.String())
		case <-ctx.Done():
			m.kill()
			return fmt.Errorf("start qemu: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.kill()
			return errors.New("start qemu: no QMP socket after 5s")
		}
	}
}

// stop quits QEMU over QMP, killing it if it lingers; m.mu must be held.
func (m *QEMUMachine) stop(ctx context.Context) error {
	if !m.running() {
		return nil
	}
	_ = qmp(ctx, m.socket(), "quit", nil)
	select {
	case <-m.done:
	case <-time.After(2 * time.Second):
		m.kill()
	}
	return nil
}

// kill kills QEMU and waits for it; m.mu must be held.
func (m *QEMUMachine) kill() {
	if m.running() {
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// qmp runs one QMP command on the monitor socket at path.
func qmp(ctx context.Context, path, command string, args any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	dec := json.NewDecoder(c)
	enc := json.NewEncoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp %s: read greeting: %w", command, err)
	}
	for _, req := range []map[string]any{
		{"execute": "qmp_capabilities"},
		{"execute": command, "arguments": args},
	} {
		if req["arguments"] == nil {
			delete(req, "arguments")
		}
		if err := enc.Encode(req); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		for {
			var resp struct {
				Return json.RawMessage
				Error  *struct{ Class, Desc string }
				Event  string
			}
			if err := dec.Decode(&resp); err != nil {
				return fmt.Errorf("qmp %s: %w", command, err)
			}
			if resp.Error != nil {
				return fmt.Errorf("qmp %s: %s: %s", req["execute"], resp.Error.Class, resp.Error.Desc)
			}
			if resp.Return != nil {
				break
			}
		}
	}
	return nil
}
