package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// event is one call of a DHCP client's script: the reason (dhclient's
// BOUND, RENEW, REBOOT, RELEASE...; udhcpc's bound, renew, deconfig...)
// and the lease it was given.
type event struct {
	reason string
	ip     string // the (new) address
	mask   string
	router string
	server string // server identifier
}

// eventLog is the file a client's script appends its events to.
type eventLog string

func (f eventLog) read(t *testing.T) []event {
	t.Helper()
	b, err := os.ReadFile(string(f))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var evs []event
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		ev := event{reason: fields[0]}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "ip":
				ev.ip = v
			case "mask":
				ev.mask = v
			case "router":
				ev.router = v
			case "server":
				ev.server = v
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitEvent waits for the first event with one of the reasons after the
// first skip events, and returns it. It fails the test on a reason in
// fail, or when p exits first.
func (f eventLog) waitEvent(t *testing.T, p *proc, skip int, reasons, fail []string, timeout time.Duration) event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := f.read(t)
		for i := skip; i < len(evs); i++ {
			for _, r := range fail {
				if evs[i].reason == r {
					t.Fatalf("%s reported %s (events so far: %v)", p.name, r, evs)
				}
			}
			for _, r := range reasons {
				if evs[i].reason == r {
					return evs[i]
				}
			}
		}
		if p != nil && p.exited() {
			// Read once more: the script may have run just before.
			if len(f.read(t)) == len(evs) {
				t.Fatalf("%s exited (%v) before reporting %v (events: %v)", p.name, p.err, reasons, evs)
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not report %v within %s (events: %v)", p.name, reasons, timeout, evs)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// count returns the number of events so far.
func (f eventLog) count(t *testing.T) int {
	t.Helper()
	return len(f.read(t))
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// dhclient drives ISC dhclient on one interface of a namespace, with its
// own configuration, lease file and script (which records events and
// configures the address and the default route, never /etc/resolv.conf).
type dhclient struct {
	ns     *netns
	iface  string
	bin    string
	conf   string
	script string
	leases string
	pid    string
	events eventLog
	proc   *proc
}

// newDhclient prepares dhclient for iface in n. renewal, when not zero,
// overrides the server's T1 so that the client renews (unicast, RENEWING)
// that soon.
func newDhclient(t *testing.T, tools map[string]string, n *netns, iface string, renewal time.Duration) *dhclient {
	t.Helper()
	dir := t.TempDir()
	c := &dhclient{
		ns: n, iface: iface, bin: tools["dhclient"],
		conf:   filepath.Join(dir, "dhclient.conf"),
		script: filepath.Join(dir, "dhclient-script"),
		leases: filepath.Join(dir, "dhclient.leases"),
		pid:    filepath.Join(dir, "dhclient.pid"),
		events: eventLog(filepath.Join(dir, "events")),
	}
	conf := "timeout 30;\nretry 1;\nrequest subnet-mask, routers, dhcp-lease-time, dhcp-renewal-time, dhcp-rebinding-time;\n"
	if renewal > 0 {
		conf += fmt.Sprintf("supersede dhcp-renewal-time %d;\nsupersede dhcp-rebinding-time 50;\n", int(renewal.Seconds()))
	}
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	writeScript(t, c.script, fmt.Sprintf(`#!/bin/sh
# Records each event and configures the interface; leaves resolv.conf alone.
case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
	if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
		%[2]s -4 addr flush dev "$interface" scope global
	fi
	%[2]s addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
	if [ -n "$new_routers" ]; then
		%[2]s route replace default via "${new_routers%%%% *}" dev "$interface"
	fi ;;
EXPIRE|FAIL|RELEASE|STOP)
	%[2]s -4 addr flush dev "$interface" scope global ;;
esac
# Last, so that the interface is configured when the test reads the event.
echo "$reason ip=$new_ip_address mask=$new_subnet_mask router=$new_routers server=$new_dhcp_server_identifier" >> %[1]s
exit 0
`, c.events, tools["ip"]))
	return c
}

// start runs dhclient in the foreground, trying once (-1) to get a lease.
func (c *dhclient) start(t *testing.T) {
	t.Helper()
	c.proc = startProc(t, c.ns, "dhclient on "+c.iface+" in "+c.ns.name, c.bin,
		"-4", "-d", "-1", "-v", "-cf", c.conf, "-sf", c.script, "-lf", c.leases, "-pf", c.pid, c.iface)
}

// kill stops the running dhclient without a release, as a crash or a
// reboot would.
func (c *dhclient) kill(t *testing.T) {
	t.Helper()
	c.proc.signal(t, syscall.SIGKILL)
	c.proc.wait(t, 10*time.Second)
}

// release runs `dhclient -r`: it stops the running dhclient (by its pid
// file) and sends DHCPRELEASE for the lease in the lease file.
func (c *dhclient) release(t *testing.T) {
	t.Helper()
	if _, err := run(c.ns, 30*time.Second, c.bin,
		"-4", "-r", "-v", "-cf", c.conf, "-sf", c.script, "-lf", c.leases, "-pf", c.pid, c.iface); err != nil {
		t.Fatal(err)
	}
}

// waitEvent waits for one of the reasons after skip events.
func (c *dhclient) waitEvent(t *testing.T, skip int, reasons ...string) event {
	t.Helper()
	return c.events.waitEvent(t, c.proc, skip, reasons, []string{"FAIL", "EXPIRE", "TIMEOUT"}, 30*time.Second)
}

// udhcpc drives busybox udhcpc on one interface of a namespace.
type udhcpc struct {
	ns     *netns
	iface  string
	bin    string
	script string
	events eventLog
	proc   *proc
}

func newUdhcpc(t *testing.T, tools map[string]string, n *netns, iface string) *udhcpc {
	t.Helper()
	dir := t.TempDir()
	c := &udhcpc{
		ns: n, iface: iface, bin: tools["busybox"],
		script: filepath.Join(dir, "udhcpc-script"),
		events: eventLog(filepath.Join(dir, "events")),
	}
	writeScript(t, c.script, fmt.Sprintf(`#!/bin/sh
# Records each event and configures the interface; leaves resolv.conf alone.
case "$1" in
bound|renew)
	%[2]s addr replace "$ip/$mask" dev "$interface"
	if [ -n "$router" ]; then
		%[2]s route replace default via "${router%%%% *}" dev "$interface"
	fi ;;
deconfig)
	%[2]s -4 addr flush dev "$interface" scope global ;;
esac
# Last, so that the interface is configured when the test reads the event.
echo "$1 ip=$ip mask=$mask router=$router server=$serverid" >> %[1]s
exit 0
`, c.events, tools["ip"]))
	return c
}

// start runs udhcpc in the foreground with extra flags (-q -n: get a
// lease, then exit).
func (c *udhcpc) start(t *testing.T, flags ...string) {
	t.Helper()
	args := append([]string{c.bin, "udhcpc", "-f", "-i", c.iface, "-s", c.script, "-t", "10", "-T", "2", "-A", "2"}, flags...)
	c.proc = startProc(t, c.ns, "udhcpc on "+c.iface+" in "+c.ns.name, args...)
}

func (c *udhcpc) waitEvent(t *testing.T, skip int, reasons ...string) event {
	t.Helper()
	return c.events.waitEvent(t, c.proc, skip, reasons, []string{"leasefail", "nak"}, 30*time.Second)
}

// addresses returns the global IPv4 addresses of a device, in CIDR form.
func (n *netns) addresses(t *testing.T, dev string) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(n.ip(t, "-4", "-o", "addr", "show", "dev", dev, "scope", "global")) {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				out = append(out, f[i+1])
			}
		}
	}
	return out
}
