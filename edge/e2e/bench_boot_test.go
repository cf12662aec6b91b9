package e2e

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"golang.org/x/sys/unix"

	"github.com/carbide-dev/carbide/edge/internal/initramfs"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
)

// discoveryKernelArgs are carbide-pxe's default --discovery-kernel-args:
// the static boot script gives the kernel the same ones.
const discoveryKernelArgs = "console=ttyS0,115200 console=tty0"

// bootQuiet makes each boot wait until other processes have used less
// than this many cores for 5 s (for at most 10 minutes), and makes a boot
// during which they used more count for nothing and be done again (up to
// five tries): on a shared machine, what else runs slows a TCG guest down
// as much as anything measured.
var bootQuiet = flag.Float64("boot.quiet", 0, "BenchmarkNetworkBoot: boot only when other processes use fewer cores than this, and boot again if they used more (0: off)")

// ipxeDir holds the iPXE binaries of Debian's ipxe package, which
// carbide-pxe serves by default (--tftp-root) and dnsmasq is given.
const ipxeDir = "/usr/lib/ipxe"

// The VM every boot of the benchmark uses, whatever serves it.
const (
	benchCPUs     = 2
	benchMemoryMB = 1024
	benchDiskMB   = 2048
)

// BenchmarkNetworkBoot network-boots the same VM into the same discovery
// image (kernel and initramfs) through two stacks on the same lab bridge,
// with the same router advertisements:
//
//   - carbide: carbide-dhcp, carbide-pxe (TFTP and HTTP) and carbide-api
//     on PostgreSQL, as in TestNetworkBoot. The agent gets an address,
//     fetches its configuration, reports, and powers the VM off once the
//     machine is Ready.
//   - dnsmasq: dnsmasq for DHCP and TFTP, busybox httpd serving a static
//     iPXE script and the image. The kernel gets carbide.inventory=print
//     instead of carbide.config: the agent prints the inventory and
//     powers the VM off, with no network and no API.
//
// Each stack boots a legacy BIOS VM (its NIC ROM is iPXE) and a UEFI VM
// (OVMF's own PXE client fetches snponly.efi over TFTP), b.N times each,
// one VM at a time, each time with a new MAC and SMBIOS UUID, so that
// every boot is a first boot. Times are from QEMU's start to packets a
// packet socket on the bridge sees (the first DHCP offer to the VM's MAC,
// iPXE's first connection to the HTTP port, the last HTTP data before the
// kernel's first line, the agent's DHCP), to lines on the serial console
// (the kernel's first line, /init), to the machine's Ready state (carbide
// only) and to QEMU's exit. docs/benchmarks.md has figures; run it with
// `make bench-boot`.
func BenchmarkNetworkBoot(b *testing.B) {
	requireRoot(b)
	var rows []benchRow
	for _, stack := range []string{"carbide", "dnsmasq"} {
		for _, uefi := range []bool{false, true} {
			name := stack + "/" + firmwareName(uefi)
			b.Run(name, func(b *testing.B) {
				runs := benchBoots(b, stack, uefi)
				if len(runs) > 0 {
					rows = append(rows, benchRow{name: name, runs: runs})
				}
			})
		}
	}
	// The parent's log shows only with -v: the summary goes to the
	// output, with the results.
	if len(rows) > 0 {
		fmt.Printf("\nNetwork boot, seconds from QEMU's start, median (min-max) of each row's runs:\n\n%s\n", bootTable(rows, markColumns))
		fmt.Printf("Network boot, seconds each phase took, median (min-max):\n\n%s\n", bootTable(rows, phaseColumns))
	}
}

func firmwareName(uefi bool) string {
	if uefi {
		return "uefi"
	}
	return "bios"
}

// bootTimes are the marks of one boot, from QEMU's start; 0 is not seen.
type bootTimes struct {
	discover time.Duration // the VM's first DHCPDISCOVER
	offer    time.Duration // the first DHCPOFFER to the VM's MAC
	tftp     time.Duration // the VM's first TFTP read request (UEFI)
	script   time.Duration // the VM's first TCP connection to the HTTP port: iPXE asks for its script
	served   time.Duration // the first HTTP data to the VM: the script's first bytes
	loaded   time.Duration // the last HTTP data to the VM before the kernel's first line
	kernel   time.Duration // the kernel's first line on the serial console (see kernelFirstLine)
	init     time.Duration // the kernel runs /init, the agent
	agent    time.Duration // the VM's first DHCPDISCOVER after the kernel's first line: the agent's
	lease    time.Duration // the first DHCPACK to the VM after the kernel's first line
	ready    time.Duration // the machine's state time in Ready (carbide)
	off      time.Duration // QEMU's exit: the agent powered the VM off
	release  string        // the kernel's release, from its first line
	cmdline  string        // the kernel's command line, from its second line
	timeline string        // the VM's DHCP, TFTP and HTTP connection events
	others   float64       // cores that processes outside the benchmark's used during the boot
	servers  float64       // CPU seconds the lab's servers (daemons, PostgreSQL, radvd) used during the boot
}

// benchBoots sets up a stack and boots one firmware's VM through it b.N
// times.
func benchBoots(b *testing.B, stack string, uefi bool) []bootTimes {
	b.Logf("load average before the setup: %s", loadAverage())
	var l *lab
	wantArgs := "initrd=" + initramfs.InitramfsFile + " " + discoveryKernelArgs
	switch stack {
	case "carbide":
		l = newLab(b)
		wantArgs += " carbide.config="
	case "dnsmasq":
		l = newStaticLab(b)
		wantArgs += " carbide.inventory=print"
	}
	w := captureBridge(b, l.ns, "br0")
	marker := byte(0xb0)
	if stack == "dnsmasq" {
		marker = 0xd0
	}
	if uefi {
		marker++
	}

	var runs []bootTimes
	boots := 0
	for b.Loop() {
		var bt bootTimes
		for try := 1; ; try++ {
			boots++
			if boots > 100 {
				b.Fatal("every boot leases a new address, and the lab's range holds 100: lower -benchtime")
			}
			spec := vmSpec{
				name:     fmt.Sprintf("%s-%d", firmwareName(uefi), boots),
				uefi:     uefi,
				mac:      fmt.Sprintf("52:54:00:cb:%02x:%02x", marker, boots),
				serial:   fmt.Sprintf("CB-BENCH-%02X%02X", marker, boots),
				uuid:     fmt.Sprintf("6c1d7c1e-0b6e-4b1a-9d7e-0000%02x%06x", marker, boots),
				cpus:     benchCPUs,
				memoryMB: benchMemoryMB,
				diskMB:   benchDiskMB,
				diskID:   fmt.Sprintf("CBDISK-%02X%02X", marker, boots),
			}
			bt = bootOnce(b, l, w, spec, stack == "carbide")
			// iPXE puts the image's name first under UEFI.
			if !strings.Contains(bt.cmdline, wantArgs) {
				b.Fatalf("%s: kernel command line %q, want it to hold %q", spec.name, bt.cmdline, wantArgs)
			}
			if boots == 1 {
				b.Logf("kernel %s, command line %q", bt.release, bt.cmdline)
			}
			// The benchmark's log keeps 10 lines: each boot's marks go to
			// the output.
			fmt.Printf("%s boot %d (%s): %s\n    on the bridge: %s\n", b.Name(), boots, spec.mac, bt, bt.timeline)
			if *bootQuiet == 0 || bt.others < *bootQuiet {
				break
			}
			if try == 5 {
				fmt.Printf("%s boot %d: kept, as the fifth try\n", b.Name(), boots)
				break
			}
			fmt.Printf("%s boot %d: discarded: other processes used %.2f cores\n", b.Name(), boots, bt.others)
		}
		runs = append(runs, bt)
	}
	b.ReportMetric(0, "ns/op") // the marks below say more than their sum
	for _, c := range markColumns {
		if med, _, _, ok := bootSpread(runs, c.get); ok && c.unit != "" {
			b.ReportMetric(med.Seconds(), c.unit)
		}
	}
	if len(runs) > 0 {
		b.ReportMetric(bootMedian(runs, func(t bootTimes) float64 { return t.servers }), "server-cpu-s")
		b.ReportMetric(bootMedian(runs, func(t bootTimes) float64 { return t.others }), "other-cores")
	}
	b.Logf("load average after the runs: %s", loadAverage())
	return runs
}

// bootOnce boots spec on l and returns its marks; it fails the benchmark
// when the VM does not power off within 4 minutes, or when a mark every
// boot has is missing. With api, the machine must be Ready.
func bootOnce(b *testing.B, l *lab, w *bridgeCapture, spec vmSpec, api bool) bootTimes {
	b.Helper()
	if *bootQuiet > 0 {
		waitQuiet(b, *bootQuiet)
	}
	before := sampleCPU()
	v := l.startVM(b, spec)
	con := &consoleWatch{path: v.console}
	deadline := time.After(4 * time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var off time.Time
wait:
	for {
		select {
		case <-v.proc.done:
			off = time.Now()
			break wait
		case <-tick.C:
			con.poll()
		case <-deadline:
			b.Fatalf("%s: QEMU still running 4 minutes after its start", spec.name)
		}
	}
	if v.proc.err != nil {
		b.Fatalf("%s: QEMU: %v", spec.name, v.proc.err)
	}
	con.poll()
	con.close()
	console := con.buf.String()

	after := sampleCPU()
	bt := bootTimes{off: off.Sub(v.started), others: after.othersSince(before), servers: (after.servers - before.servers) / after.ticksPerSec}
	if con.firstLine.IsZero() || con.runsInit.IsZero() {
		b.Fatalf("%s: the console has no %q or no %q line:\n%s", spec.name, kernelFirstLine, kernelRunsInit, tail(console, 40))
	}
	bt.kernel, bt.init = con.firstLine.Sub(v.started), con.runsInit.Sub(v.started)
	if m := kernelVersion.FindStringSubmatch(console); m != nil {
		bt.release = m[1]
	}
	if m := kernelCmdline.FindStringSubmatch(console); m != nil {
		bt.cmdline = strings.TrimSpace(m[1])
	}
	if !strings.Contains(console, `msg="scout: powering off`) {
		b.Fatalf("%s: the agent did not say it powered off:\n%s", spec.name, tail(console, 40))
	}

	kernelAt := v.started.Add(bt.kernel)
	var timeline []string
	for _, e := range w.events(spec.mac, v.started, off) {
		d := e.at.Sub(v.started)
		if e.kind != httpData {
			timeline = append(timeline, fmt.Sprintf("%s %.3f", e.kind, d.Seconds()))
		}
		switch {
		case e.kind == dhcpDiscover && bt.discover == 0:
			bt.discover = d
		case e.kind == dhcpOffer && bt.offer == 0:
			bt.offer = d
		case e.kind == tftpRead && bt.tftp == 0:
			bt.tftp = d
		case e.kind == httpConnect && bt.script == 0:
			bt.script = d
		case e.kind == httpData && bt.script != 0 && bt.served == 0:
			bt.served = d
		}
		switch {
		case e.kind == httpData && e.at.Before(kernelAt):
			bt.loaded = d
		case e.kind == dhcpDiscover && e.at.After(kernelAt) && bt.agent == 0:
			bt.agent = d
		case e.kind == dhcpAck && e.at.After(kernelAt) && bt.lease == 0:
			bt.lease = d
		}
	}
	bt.timeline = strings.Join(timeline, ", ")
	var missing []string
	for name, d := range map[string]time.Duration{"DHCP discover": bt.discover, "DHCP offer": bt.offer, "HTTP connection": bt.script, "HTTP data": bt.loaded} {
		if d == 0 {
			missing = append(missing, name)
		}
	}
	if spec.uefi && bt.tftp == 0 {
		missing = append(missing, "TFTP read request")
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		b.Fatalf("%s: the bridge carried no %s for %s", spec.name, strings.Join(missing, ", "), spec.mac)
	}
	if api {
		m := l.machine(b, spec.mac)
		if m.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
			b.Fatalf("%s: machine %s is %s after its VM powered off, want Ready", spec.name, m.GetId(), m.GetState())
		}
		bt.ready = m.GetStateTime().AsTime().Sub(v.started)
	}
	return bt
}

func (bt bootTimes) String() string {
	var parts []string
	add := func(name string, d time.Duration) {
		if d != 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, d.Seconds()))
		}
	}
	add("discover", bt.discover)
	add("offer", bt.offer)
	add("tftp", bt.tftp)
	add("script", bt.script)
	add("served", bt.served)
	add("loaded", bt.loaded)
	add("kernel", bt.kernel)
	add("init", bt.init)
	add("agent-discover", bt.agent)
	add("agent-lease", bt.lease)
	add("ready", bt.ready)
	add("off", bt.off)
	return fmt.Sprintf("%s s; the servers used %.2f s of CPU, other processes %.2f cores", strings.Join(parts, ", "), bt.servers, bt.others)
}

var (
	kernelVersion = regexp.MustCompile(`\] Linux version (\S+)`)
	kernelCmdline = regexp.MustCompile(`\] Command line: ([^\r\n]*)`)
)

// The console lines whose arrival the benchmark times. The kernel writes
// nothing to the serial port until it registers the serial console, 0.2
// to 0.35 s into its boot by its own clock, and then writes at once
// every line it logged before, the first of which is its version; from
// then on, lines arrive as they are logged.
var (
	kernelFirstLine = []byte("] Linux version ")
	kernelRunsInit  = []byte("] Run /init as init process")
)

// consoleWatch follows a VM's serial console file as QEMU writes it, and
// notes when each line it waits for first appears.
type consoleWatch struct {
	path      string
	f         *os.File
	buf       bytes.Buffer
	firstLine time.Time // kernelFirstLine
	runsInit  time.Time // kernelRunsInit
}

// poll reads what was written since the last poll.
func (c *consoleWatch) poll() {
	if c.f == nil {
		f, err := os.Open(c.path)
		if err != nil {
			return // QEMU has not created it yet
		}
		c.f = f
	}
	now := time.Now()
	old := c.buf.Len()
	if _, err := io.Copy(&c.buf, c.f); err != nil || c.buf.Len() == old {
		return
	}
	seen := func(at *time.Time, line []byte) {
		// Only what was new, and the tail before it, can hold it now.
		if at.IsZero() && bytes.Contains(c.buf.Bytes()[max(0, old-len(line)):], line) {
			*at = now
		}
	}
	seen(&c.firstLine, kernelFirstLine)
	seen(&c.runsInit, kernelRunsInit)
}

// close closes the console file.
func (c *consoleWatch) close() {
	if c.f != nil {
		c.f.Close()
	}
}

// newStaticLab creates a lab namespace like newLab's, with its bridge,
// addresses and radvd, where dnsmasq serves DHCP and TFTP and busybox
// httpd serves a static iPXE script and the discovery image.
func newStaticLab(t testing.TB) *lab {
	t.Helper()
	tools := lookPaths(t, "ip", "qemu-system-x86_64", "radvd", "dnsmasq", "busybox")
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		if _, err := os.Stat(filepath.Join(ipxeDir, f)); err != nil {
			t.Fatalf("dnsmasq serves %s over TFTP: %v (apt-get install ipxe)", f, err)
		}
	}
	image := filepath.Join(scoutImage(t), "scout")
	l := newLabNetwork(t, "static", tools["qemu-system-x86_64"])

	// The web root mirrors carbide-pxe's URLs: /artifacts/scout/...
	www := filepath.Join(l.dir, "www")
	if err := os.MkdirAll(filepath.Join(www, "artifacts", "scout"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{initramfs.KernelFile, initramfs.InitramfsFile} {
		copyFile(t, filepath.Join(image, f), filepath.Join(www, "artifacts", "scout", f))
	}
	base := "http://" + labHTTP + "/artifacts/scout/"
	writeFile(t, filepath.Join(www, "boot.ipxe"), "#!ipxe\n"+
		"kernel "+base+initramfs.KernelFile+" initrd="+initramfs.InitramfsFile+" "+discoveryKernelArgs+" carbide.inventory=print\n"+
		"initrd --name "+initramfs.InitramfsFile+" "+base+initramfs.InitramfsFile+"\n"+
		"boot\n")
	startProc(t, l.ns, "busybox httpd", tools["busybox"], "httpd", "-f", "-v", "-p", labHTTP, "-h", www)

	// As carbide-dhcp does: iPXE (user class "iPXE") gets the script's
	// URL and option 175.176 (no-pxedhcp), without which it waits 2 s
	// for ProxyDHCP offers; BIOS PXE clients get undionly.kpxe and UEFI
	// x64 ones snponly.efi, over TFTP from the same server. The router,
	// DNS server and domain are the Carbide lab segment's. --no-ping:
	// carbide-dhcp does not probe an address before offering it.
	dnsmasq := startProc(t, l.ns, "dnsmasq", tools["dnsmasq"],
		"--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null", "--port=0",
		"--interface=br0", "--bind-interfaces", "--user=root",
		"--pid-file="+filepath.Join(l.dir, "dnsmasq.pid"),
		"--dhcp-leasefile="+filepath.Join(l.dir, "dnsmasq.leases"),
		"--dhcp-range=198.18.0.100,198.18.0.199,255.255.255.0,1h",
		"--dhcp-authoritative", "--no-ping",
		"--dhcp-option=option:router,"+labAddr,
		"--dhcp-option=option:dns-server,"+labAddr,
		"--dhcp-option=option:domain-name,lab.carbide.test",
		"--dhcp-userclass=set:ipxe,iPXE",
		"--dhcp-match=set:bios,option:client-arch,0",
		"--dhcp-match=set:efi64,option:client-arch,7",
		"--dhcp-match=set:efi64,option:client-arch,9",
		"--dhcp-boot=tag:ipxe,http://"+labHTTP+"/boot.ipxe",
		"--dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe",
		"--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
		"--dhcp-option-force=tag:ipxe,175,b0:01:01",
		"--enable-tftp", "--tftp-root="+ipxeDir)
	dnsmasq.waitOutput(t, regexp.MustCompile(`TFTP root is `+regexp.QuoteMeta(ipxeDir)), 30*time.Second)

	// The same router advertisements as newLab's.
	l.startRadvd(t, tools["radvd"])
	return l
}

// wireKind is what a captured packet was.
type wireKind int

const (
	dhcpDiscover wireKind = iota
	dhcpOffer
	dhcpRequest
	dhcpAck
	tftpRead    // a TFTP read request from a VM
	httpConnect // a TCP SYN from a VM to the HTTP port
	httpData    // a TCP segment from the HTTP port to a VM
)

func (k wireKind) String() string {
	return [...]string{"discover", "offer", "request", "ack", "tftp-read", "http-connect", "http-data"}[k]
}

// wireEvent is a packet of interest on the lab bridge, with the MAC of
// the VM it was from or to.
type wireEvent struct {
	at   time.Time
	kind wireKind
	mac  string
}

// bridgeCapture records DHCP, TFTP and HTTP packets on a bridge as the host sees
// them: those it sends and those it receives.
type bridgeCapture struct {
	mu  sync.Mutex
	log []wireEvent
}

// captureBridge opens a packet socket on dev in namespace n, and records
// what it reads until the benchmark ends.
func captureBridge(t testing.TB, n *netns, dev string) *bridgeCapture {
	t.Helper()
	proto := htons(unix.ETH_P_ALL) // only ETH_P_ALL sockets see what the host sends
	var fd int
	err := nsenter.Do(n.name, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("open a packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind a packet socket to %s: %w", dev, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, n.name, err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	w := &bridgeCapture{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048) // headers and DHCP; longer frames are cut
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the timeout, to look at stop
			}
			if e, ok := parseFrame(buf[:n]); ok {
				e.at = time.Now()
				w.mu.Lock()
				w.log = append(w.log, e)
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
	return w
}

// events returns the events of mac between from and to, in order.
func (w *bridgeCapture) events(mac string, from, to time.Time) []wireEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wireEvent
	for _, e := range w.log {
		if e.mac == mac && !e.at.Before(from) && !e.at.After(to) {
			out = append(out, e)
		}
	}
	return out
}

// parseFrame returns the event an Ethernet frame is, if any.
func parseFrame(f []byte) (wireEvent, bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
		return wireEvent{}, false
	}
	dst, src := net.HardwareAddr(f[0:6]).String(), net.HardwareAddr(f[6:12]).String()
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || len(ip) < ihl+20 || binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return wireEvent{}, false
	}
	l4 := ip[ihl:]
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	sport, dport := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	switch ip[9] {
	case unix.IPPROTO_UDP:
		payload := l4[8:]
		switch {
		case sport == 67 || dport == 67:
			return parseDHCP(payload)
		case dport == 69 && len(payload) >= 2 && binary.BigEndian.Uint16(payload[0:2]) == 1:
			return wireEvent{kind: tftpRead, mac: src}, true
		}
	case unix.IPPROTO_TCP:
		const syn, ack = 0x02, 0x10
		flags := l4[13]
		switch {
		case dport == 8080 && flags&(syn|ack) == syn:
			return wireEvent{kind: httpConnect, mac: src}, true
		case sport == 8080 && (total == 0 || total > ihl+int(l4[12]>>4)*4): // 0: a large TSO segment
			return wireEvent{kind: httpData, mac: dst}, true
		}
	}
	return wireEvent{}, false
}

// parseDHCP returns the event a BOOTP payload is: its message type
// (option 53) and client hardware address.
func parseDHCP(p []byte) (wireEvent, bool) {
	if len(p) < 240 || binary.BigEndian.Uint32(p[236:240]) != 0x63825363 {
		return wireEvent{}, false
	}
	mac := net.HardwareAddr(p[28:34]).String()
	for opts := p[240:]; len(opts) >= 2 && opts[0] != 255; {
		if opts[0] == 0 {
			opts = opts[1:]
			continue
		}
		n := int(opts[1])
		if len(opts) < 2+n {
			break
		}
		if opts[0] == 53 && n == 1 {
			kind, ok := map[byte]wireKind{1: dhcpDiscover, 2: dhcpOffer, 3: dhcpRequest, 5: dhcpAck}[opts[2]]
			return wireEvent{kind: kind, mac: mac}, ok
		}
		opts = opts[2+n:]
	}
	return wireEvent{}, false
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// cpuSample is the CPU time the machine has been busy, the CPU time of
// this process and its descendants, live or reaped, and that of its live
// descendants alone: the servers, when no VM runs.
type cpuSample struct {
	at                  time.Time
	busy, ours, servers float64 // clock ticks
	ticksPerSec         float64
}

// sampleCPU reads /proc. The daemons, QEMU, and PostgreSQL when
// pgtest-cluster started it, are descendants; a reaped QEMU counts in
// this process's cutime and cstime.
func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), ticksPerSec: 100} // USER_HZ
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// user nice system idle iowait irq softirq steal
		for i, v := range f[1:min(len(f), 9)] {
			if i == 3 || i == 4 {
				continue
			}
			n, _ := strconv.ParseFloat(v, 64)
			s.busy += n
		}
	}
	type stat struct {
		ppid int
		cpu  float64
	}
	procs := map[int]stat{}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime cutime cstime: fields
		// 4 and 14-17, counted after the comm, which may hold spaces.
		_, rest, ok := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var cpu float64
		for _, v := range f[11:15] {
			n, _ := strconv.ParseFloat(v, 64)
			cpu += n
		}
		procs[pid] = stat{ppid, cpu}
		children[ppid] = append(children[ppid], pid)
	}
	self := os.Getpid()
	for todo := []int{self}; len(todo) > 0; todo = todo[1:] {
		s.ours += procs[todo[0]].cpu
		if todo[0] != self {
			s.servers += procs[todo[0]].cpu
		}
		todo = append(todo, children[todo[0]]...)
	}
	return s
}

// othersSince returns how many cores processes other than this one's
// tree used on average since before.
func (s cpuSample) othersSince(before cpuSample) float64 {
	wall := s.at.Sub(before.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, (s.busy-before.busy)-(s.ours-before.ours)) / s.ticksPerSec / wall
}

// waitQuiet waits until other processes have used less than cores for
// 5 s, or for 10 minutes, with the benchmark's timer stopped.
func waitQuiet(b *testing.B, cores float64) {
	b.StopTimer()
	defer b.StartTimer()
	start := time.Now()
	for time.Since(start) < 10*time.Minute {
		s := sampleCPU()
		time.Sleep(5 * time.Second)
		if used := sampleCPU().othersSince(s); used < cores {
			if waited := time.Since(start); waited > 6*time.Second {
				fmt.Printf("%s: waited %s for other processes to use less than %.2f cores\n", b.Name(), waited.Round(time.Second), cores)
			}
			return
		}
	}
	fmt.Printf("%s: other processes used more than %.2f cores for 10 minutes: booting anyway\n", b.Name(), cores)
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return string(b)
	}
	return strings.Join(f[:3], " ")
}

// benchRow is one sub-benchmark's runs.
type benchRow struct {
	name string
	runs []bootTimes
}

// bootColumn is a figure of each run: a mark, or the time between two.
type bootColumn struct {
	name string
	unit string // the benchmark metric of its median, if any
	get  func(bootTimes) (time.Duration, bool)
}

func markOf(f func(bootTimes) time.Duration) func(bootTimes) (time.Duration, bool) {
	return func(t bootTimes) (time.Duration, bool) { return f(t), f(t) != 0 }
}

func phaseOf(from, to func(bootTimes) time.Duration) func(bootTimes) (time.Duration, bool) {
	return func(t bootTimes) (time.Duration, bool) { return to(t) - from(t), from(t) != 0 && to(t) != 0 }
}

var (
	atDiscover = func(t bootTimes) time.Duration { return t.discover }
	atOffer    = func(t bootTimes) time.Duration { return t.offer }
	atScript   = func(t bootTimes) time.Duration { return t.script }
	atServed   = func(t bootTimes) time.Duration { return t.served }
	atLoaded   = func(t bootTimes) time.Duration { return t.loaded }
	atKernel   = func(t bootTimes) time.Duration { return t.kernel }
	atInit     = func(t bootTimes) time.Duration { return t.init }
	atAgent    = func(t bootTimes) time.Duration { return t.agent }
	atLease    = func(t bootTimes) time.Duration { return t.lease }
	atReady    = func(t bootTimes) time.Duration { return t.ready }
	atOff      = func(t bootTimes) time.Duration { return t.off }
	// atLast is Ready when the API knows it, otherwise /init.
	atLast = func(t bootTimes) time.Duration { return max(t.ready, t.init) }
)

// markColumns are times from QEMU's start.
var markColumns = []bootColumn{
	{"DHCP offer", "s-to-offer", markOf(atOffer)},
	{"script request", "s-to-script", markOf(atScript)},
	{"kernel's first line", "s-to-kernel", markOf(atKernel)},
	{"Ready", "s-to-ready", markOf(atReady)},
	{"power-off", "s-to-off", markOf(atOff)},
}

// phaseColumns are the phases of a boot, which add up to its power-off.
var phaseColumns = []bootColumn{
	{"firmware to DISCOVER", "", markOf(atDiscover)},
	{"DISCOVER to OFFER", "", phaseOf(atDiscover, atOffer)},
	{"OFFER to script request", "", phaseOf(atOffer, atScript)},
	{"script's first byte", "", phaseOf(atScript, atServed)},
	{"image download", "", phaseOf(atServed, atLoaded)},
	{"loaded to kernel's first line", "", phaseOf(atLoaded, atKernel)},
	{"kernel's first line to /init", "", phaseOf(atKernel, atInit)},
	{"/init to agent's DISCOVER", "", phaseOf(atInit, atAgent)},
	{"agent's DHCP", "", phaseOf(atAgent, atLease)},
	{"lease to Ready", "", phaseOf(atLease, atReady)},
	{"to power-off", "", phaseOf(atLast, atOff)},
}

// bootSpread returns the median, minimum and maximum of a column over runs;
// ok is false when no run has it.
func bootSpread(runs []bootTimes, get func(bootTimes) (time.Duration, bool)) (med, lo, hi time.Duration, ok bool) {
	var ds []time.Duration
	for _, r := range runs {
		if d, ok := get(r); ok {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0, false
	}
	slices.Sort(ds)
	med = ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return med, ds[0], ds[len(ds)-1], true
}

// bootMedian returns the median of a figure of runs.
func bootMedian(runs []bootTimes, get func(bootTimes) float64) float64 {
	var o []float64
	for _, r := range runs {
		o = append(o, get(r))
	}
	slices.Sort(o)
	if len(o)%2 == 0 {
		return (o[len(o)/2-1] + o[len(o)/2]) / 2
	}
	return o[len(o)/2]
}

// bootTable renders rows as a markdown table of cols, in seconds, with
// the median CPU time of the servers and the cores other processes used.
func bootTable(rows []benchRow, cols []bootColumn) string {
	var sb strings.Builder
	sb.WriteString("| stack/firmware | runs | servers' CPU (s) | other processes (cores) |")
	for _, c := range cols {
		sb.WriteString(" " + c.name + " |")
	}
	sb.WriteString("\n| --- | ---: | ---: | ---: |" + strings.Repeat(" ---: |", len(cols)) + "\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %d | %.2f | %.2f |", r.name, len(r.runs),
			bootMedian(r.runs, func(t bootTimes) float64 { return t.servers }),
			bootMedian(r.runs, func(t bootTimes) float64 { return t.others }))
		for _, c := range cols {
			med, lo, hi, ok := bootSpread(r.runs, c.get)
			switch {
			case !ok:
				sb.WriteString(" - |")
			case len(r.runs) == 1:
				fmt.Fprintf(&sb, " %.3f |", med.Seconds())
			default:
				fmt.Fprintf(&sb, " %.3f (%.3f-%.3f) |", med.Seconds(), lo.Seconds(), hi.Seconds())
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
