package scout

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountEarly mounts the file systems the agent needs as init: /proc,
// /sys, /dev (devtmpfs: the kernel creates the device nodes), /run and
// /tmp. One already mounted is fine.
func mountEarly() error {
	mounts := []struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
		perm                   os.FileMode
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	}
	var errs []error
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, m.perm); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// power syncs the file systems and powers the machine off or reboots it.
// It returns only if the kernel refused.
func power(a PowerAction) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if a == Reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("%s: %w", a, err)
	}
	return nil
}

// waitRandom waits until the kernel's random number generator is
// initialized. The DHCP client only polls it (GRND_NONBLOCK), which never
// makes the kernel gather entropy: on a machine without a hardware RNG the
// kernel is trusted with, it would wait for ever. A blocking getrandom
// makes the kernel generate entropy from timer jitter, in about a second.
func waitRandom(log *slog.Logger) {
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil {
		return
	}
	start := time.Now()
	for {
		_, err := unix.Getrandom(b[:], 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			log.Warn("scout: wait for the random number generator: " + err.Error())
			return
		}
	}
	log.Info(fmt.Sprintf("scout: random number generator ready after %s", time.Since(start).Round(time.Millisecond)))
}

// quietConsole lets only emergency messages of the kernel reach the
// console (console_loglevel 1, as `dmesg -n 1`).
func quietConsole(log *slog.Logger) {
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0o644); err != nil {
		log.Warn("scout: quiet the kernel's console messages: " + err.Error())
	}
}

// openConsoles returns a writer to every console the kernel prints to,
// as /proc/consoles lists them. With "console=ttyS0,115200 console=tty0"
// the kernel prints to both, but /dev/console, init's stdout, is only
// the last: the operator watching the serial line would miss the agent.
// Without /proc/consoles, or when no console opens, it returns fallback.
func openConsoles(fallback io.Writer) io.Writer {
	b, err := os.ReadFile("/proc/consoles")
	if err != nil {
		return fallback
	}
	var out fanout
	for _, name := range parseConsoles(string(b)) {
		f, err := os.OpenFile("/dev/"+name, os.O_WRONLY|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return fallback
	}
	return out
}

// parseConsoles returns the device names of the consoles in the contents
// of /proc/consoles that can be written to ("ttyS0  -W- (EC p a) 4:64").
func parseConsoles(s string) []string {
	var names []string
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(f[1], "W") || strings.ContainsAny(f[0], "/.") {
			continue
		}
		names = append(names, f[0])
	}
	return names
}

// fanout writes to every writer, whatever fails: a console that stops
// working must not silence the others.
type fanout []io.Writer

func (f fanout) Write(p []byte) (int, error) {
	for _, w := range f {
		_, _ = w.Write(p)
	}
	return len(p), nil
}
