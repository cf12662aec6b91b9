package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	"github.com/carbide-dev/carbide/edge/internal/qemuvm"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// The provisioning network of the boot test: a bridge in the lab
// namespace, where every daemon runs and every VM's tap device is a port.
const (
	labAddr   = "198.18.0.1"
	labPrefix = "198.18.0.0/24"
	labAPI    = labAddr + ":1079"
	labHTTP   = labAddr + ":8080"
	labIPv6   = "fd00:cb::1/64"
)

// vmSpec is what a test VM is given, and so what its inventory must say.
type vmSpec struct {
	name     string
	uefi     bool
	mac      string
	serial   string // SMBIOS type 1 serial
	uuid     string // SMBIOS type 1 UUID
	cpus     int
	memoryMB int
	diskMB   int
	diskID   string // the disk's serial
	// reboots lets the guest reboot; otherwise a reboot ends QEMU, as
	// a power-off does.
	reboots bool
}

// vm is a running QEMU VM.
type vm struct {
	spec    vmSpec
	proc    *proc
	console string // file receiving the serial console
	started time.Time
}

// lab is the provisioning network with carbide-api (on PostgreSQL),
// carbide-dhcp and carbide-pxe running on it.
type lab struct {
	ns      *netns
	client  *carbide.Client
	segment *networkv1.Segment
	pxe     *proc
	taps    int
	dir     string
	qemu    string
	ovmf    ovmfFiles
	pki     string // the API's development PKI
}

// TestNetworkBoot boots real firmware through Carbide's daemons: a legacy
// BIOS VM whose NIC ROM is iPXE, and a UEFI VM whose NIC has no ROM, so
// that OVMF's own PXE client fetches iPXE over TFTP first. Each gets its
// address from carbide-dhcp, its iPXE script and the discovery image from
// carbide-pxe, and the scout agent reports the hardware QEMU gave it, so
// that each becomes a Ready machine and powers off. Booting the first
// box again from another NIC names the same hardware: that report is held
// until an admin merges it into the first machine.
func TestNetworkBoot(t *testing.T) {
	requireRoot(t)
	l := newLab(t)

	specs := []vmSpec{
		{name: "bios", mac: "52:54:00:cb:00:01", serial: "CB-BIOS-0001", uuid: "6c1d7c1e-0b6e-4b1a-9d7e-000000000001",
			cpus: 2, memoryMB: 768, diskMB: 2048, diskID: "CBDISK-BIOS"},
		{name: "uefi", uefi: true, mac: "52:54:00:cb:00:02", serial: "CB-UEFI-0002", uuid: "6c1d7c1e-0b6e-4b1a-9d7e-000000000002",
			cpus: 2, memoryMB: 1024, diskMB: 3072, diskID: "CBDISK-UEFI"},
	}
	// One VM at a time: two firmware boots under TCG would share the
	// machine's two cores with the daemons.
	machines := map[string]*machinev1.Machine{}
	for _, s := range specs {
		v := l.startVM(t, s)
		m, took := l.waitReady(t, v, 4*time.Minute)
		if m == nil {
			t.FailNow()
		}
		t.Logf("%s VM: power-on to Ready in %s", s.name, took.Round(100*time.Millisecond))
		machines[s.name] = m
		checkMachine(t, m, s)
		// Ready machines are powered off by their agent.
		if err := waitExit(v.proc, time.Minute); err != nil {
			t.Errorf("%s VM: %v", s.name, err)
		}
	}
	// OVMF's own PXE client fetched iPXE over TFTP; the BIOS VM's NIC ROM
	// is iPXE already.
	if !regexp.MustCompile(`msg="tftp transfer" client=198\.18\.0\.\d+ file=snponly.efi bytes=[1-9]`).MatchString(l.pxe.out.String()) {
		t.Error("carbide-pxe logged no TFTP transfer of snponly.efi")
	}
	bios, uefi := machines["bios"], machines["uefi"]
	if bios.GetId() == uefi.GetId() {
		t.Fatalf("both VMs became machine %s", bios.GetId())
	}
	if a, b := bios.GetInterfaces()[0].GetAddress(), uefi.GetInterfaces()[0].GetAddress(); a == "" || a == b {
		t.Errorf("addresses %q and %q: want two distinct ones", a, b)
	}

	// The first box again, from the same NIC: it is the same machine, and
	// being Ready it is told to boot from its disk (which is blank, so the
	// firmware stops there).
	same := l.startVM(t, vmSpec{name: "bios-again", mac: specs[0].mac, serial: specs[0].serial, uuid: specs[0].uuid,
		cpus: specs[0].cpus, memoryMB: specs[0].memoryMB, diskMB: specs[0].diskMB, diskID: specs[0].diskID})
	localDisk := regexp.MustCompile(`msg="http request".* path=/ipxe/` + specs[0].mac + ` .*machine_id=` + bios.GetId() + ` action=BOOT_ACTION_LOCAL_DISK`)
	if !waitFor(2*time.Minute, func() bool { return localDisk.MatchString(l.pxe.out.String()) }) {
		t.Fatalf("carbide-pxe served the rebooted Ready machine no local-disk script")
	}
	same.proc.stop(t)
	if m := l.machine(t, specs[0].mac); m.GetId() != bios.GetId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
		t.Errorf("after booting again from its NIC: %v, want machine %s, Ready", m, bios.GetId())
	}

	// The first box again, from another NIC (as if booted from its second
	// port): it is enrolled as a new MAC and found to name the hardware of
	// a Ready machine, so its report is held until an admin merges it into
	// that machine.
	again := specs[0]
	again.name, again.mac = "bios-second-nic", "52:54:00:cb:00:11"
	v := l.startVM(t, again)
	held := regexp.MustCompile(`held until an operator resolves it`)
	if !waitFor(4*time.Minute, func() bool {
		b, _ := os.ReadFile(v.console)
		return held.Match(b) || v.proc.exited()
	}) || v.proc.exited() {
		t.Fatalf("the second NIC's report was not held (QEMU exited: %t)", v.proc.exited())
	}
	second := l.machine(t, again.mac)
	if second.GetId() == bios.GetId() {
		t.Fatalf("the second NIC became machine %s before an admin said so", bios.GetId())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resolved, err := l.client.Machines.ResolveIdentityConflict(ctx, connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
		MachineId: second.GetId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_MERGE,
	}))
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	v.proc.stop(t)
	m := resolved.Msg.GetMachine()
	if m.GetId() != bios.GetId() || m.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
		t.Errorf("after the merge: machine %s in %s, want %s, Ready", m.GetId(), m.GetState(), bios.GetId())
	}
	var macs []string
	for _, i := range m.GetInterfaces() {
		macs = append(macs, i.GetMac())
	}
	if strings.Join(macs, ",") != specs[0].mac+","+again.mac {
		t.Errorf("machine %s has interfaces %v, want %s and %s", m.GetId(), macs, specs[0].mac, again.mac)
	}
	if n := l.countMachines(t); n != 2 {
		t.Errorf("%d machines after booting two boxes, want 2", n)
	}
}

// newLab creates the lab namespace and starts the API, carbide-dhcp,
// carbide-pxe and radvd in it.
func newLab(t testing.TB) *lab {
	t.Helper()
	tools := lookPaths(t, "ip", "qemu-system-x86_64", "radvd")
	image := scoutImage(t)
	l := newLabNetwork(t, "lab", tools["qemu-system-x86_64"])
	l.startDaemons(t, image)
	l.startRadvd(t, tools["radvd"])
	return l
}

// startDaemons starts the API (on PostgreSQL), carbide-dhcp and
// carbide-pxe, serving artifacts from image, in the lab namespace, and
// creates the lab segment.
func (l *lab) startDaemons(t testing.TB, image string) {
	t.Helper()

	// PostgreSQL runs in the host namespace; the API reaches it through a
	// forwarder in the lab.
	dbURL := startPostgres(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = forwardInto(t, l.ns, u.Host)

	dataDir := t.TempDir()
	startProc(t, l.ns, "carbide-api", bins.api, "--dev", "--listen", labAPI, "--data-dir", dataDir, "--database-url", u.String()).
		waitOutput(t, listening, time.Minute)
	pkiDir := filepath.Join(dataDir, "pki")
	l.pki = pkiDir
	testsecret.RegisterFiles(t, filepath.Join(pkiDir, "*.key"))
	l.client = labClient(t, l.ns, pkiDir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seg, err := l.client.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "lab", Prefix: labPrefix, Gateway: labAddr, DnsServers: []string{labAddr}, Domain: "lab.carbide.test",
		Ranges: []*networkv1.AddressRange{{Start: "198.18.0.100", End: "198.18.0.199"}},
	}}))
	if err != nil {
		t.Fatalf("create the lab segment: %v", err)
	}
	l.segment = seg.Msg.GetSegment()

	startProc(t, l.ns, "carbide-dhcp", bins.dhcp,
		"--interface", "br0", "--pki-dir", pkiDir, "--api-url", "https://"+labAPI,
		"--tftp-server", labAddr, "--bios-file", "undionly.kpxe", "--efi-x64-file", "snponly.efi",
		"--ipxe-script-url", "http://"+labHTTP+"/ipxe/{mac}", "--metrics-listen", "127.0.0.1:9167",
	).waitOutput(t, regexp.MustCompile(`msg="serving DHCP"`), 30*time.Second)

	l.pxe = startProc(t, l.ns, "carbide-pxe", bins.pxe,
		"--pki-dir", pkiDir, "--api-url", "https://"+labAPI,
		"--tftp-listen", labAddr+":69", "--http-listen", labHTTP, "--public-url", "http://"+labHTTP,
		"--artifacts-dir", image, "--metrics-listen", "127.0.0.1:9168")
	l.pxe.waitOutput(t, regexp.MustCompile(`msg="serving HTTP"`), 30*time.Second)
}

// newLabNetwork creates a lab namespace with its bridge and addresses.
func newLabNetwork(t testing.TB, short, qemu string) *lab {
	t.Helper()
	l := &lab{ns: newNetns(t, short), dir: t.TempDir(), qemu: qemu, ovmf: findOVMF(t)}
	l.ns.ip(t, "link", "add", "name", "br0", "type", "bridge")
	l.ns.addr(t, "br0", labAddr+"/24")
	l.ns.ip(t, "-6", "addr", "add", labIPv6, "dev", "br0", "nodad")
	l.ns.ip(t, "link", "set", "dev", "br0", "up")
	return l
}

// startRadvd sends router advertisements on the lab's bridge: iPXE waits
// about 13 s for IPv6 on a link without them.
func (l *lab) startRadvd(t testing.TB, radvd string) {
	t.Helper()
	l.ns.sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	conf := filepath.Join(l.dir, "radvd.conf")
	writeFile(t, conf, `interface br0 {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 10;
	prefix fd00:cb::/64 { AdvOnLink on; AdvAutonomous on; };
};
`)
	startProc(t, l.ns, "radvd", radvd, "--nodaemon", "--config", conf,
		"--pidfile", filepath.Join(l.dir, "radvd.pid"), "--logmethod", "stderr")
}

// labClient returns an admin client of the API in namespace n.
func labClient(t testing.TB, n *netns, pkiDir string) *carbide.Client {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "admin.crt"), filepath.Join(pkiDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := loadPool(t, filepath.Join(pkiDir, "ca.crt"))
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{
		Protocols:       protocols,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}},
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = nsenter.Do(n.name, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	t.Cleanup(hc.CloseIdleConnections)
	c, err := carbide.New("https://"+labAPI, carbide.WithHTTPClient(hc), carbide.WithProtocol(carbide.GRPC))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startVM boots a VM from the network on a new tap port of the lab bridge.
func (l *lab) startVM(t testing.TB, s vmSpec) *vm {
	t.Helper()
	args, console := l.vmCommand(t, s, true)
	v := &vm{spec: s, console: console, started: time.Now()}
	v.proc = startProc(t, l.ns, "qemu "+s.name, args...)
	return v
}

// vmCommand returns the QEMU command line of a VM on a new tap port of the
// lab bridge, and the file its serial console goes to; with netBoot a BIOS
// VM boots from the network (-boot n), otherwise whoever starts it says.
func (l *lab) vmCommand(t testing.TB, s vmSpec, netBoot bool) ([]string, string) {
	t.Helper()
	l.taps++
	tap := fmt.Sprintf("tap%d", l.taps)
	l.ns.ip(t, "tuntap", "add", "dev", tap, "mode", "tap")
	l.ns.ip(t, "link", "set", "dev", tap, "master", "br0")
	l.ns.ip(t, "link", "set", "dev", tap, "up")

	dir := filepath.Join(l.dir, s.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, int64(s.diskMB)<<20); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(dir, "console.log")
	spec := qemuvm.Spec{QEMU: l.qemu, Product: "e2e", Serial: s.serial, UUID: s.uuid, CPUs: s.cpus, MemoryMB: s.memoryMB,
		MAC: s.mac, Tap: tap, Disk: disk, DiskID: s.diskID, Console: console, Reboots: s.reboots, NetBoot: netBoot, UEFI: s.uefi}
	if s.uefi {
		spec.OVMFCode, spec.OVMFVars = l.ovmf.code, filepath.Join(dir, "OVMF_VARS.fd")
		copyFile(t, l.ovmf.vars, spec.OVMFVars)
	}
	args := spec.Args()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("serial console of the %s VM:\n%s", s.name, tail(string(b), 80))
		}
	})
	return args, console
}

// waitReady waits until the machine with v's MAC is Ready and returns it
// with the time from power-on; it fails the test on timeout, or when the
// VM exits first.
func (l *lab) waitReady(t testing.TB, v *vm, timeout time.Duration) (*machinev1.Machine, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *machinev1.Machine
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := l.client.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{Mac: v.spec.mac}))
		cancel()
		if err != nil {
			t.Errorf("%s VM: list machines: %v", v.spec.name, err)
			return nil, 0
		}
		if ms := resp.Msg.GetMachines(); len(ms) == 1 {
			last = ms[0]
			if last.GetState() == machinev1.MachineState_MACHINE_STATE_READY {
				return last, last.GetStateTime().AsTime().Sub(v.started)
			}
			if last.GetState() == machinev1.MachineState_MACHINE_STATE_FAILED {
				t.Errorf("%s VM: machine %s failed", v.spec.name, last.GetId())
				return nil, 0
			}
		}
		if v.proc != nil && v.proc.exited() {
			t.Errorf("%s VM: QEMU exited (%v) before the machine was Ready; machine: %v", v.spec.name, v.proc.err, last)
			return nil, 0
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("%s VM: not Ready within %s; machine: %v", v.spec.name, timeout, last)
	return nil, 0
}

// machine returns the machine with an interface with mac.
func (l *lab) machine(t testing.TB, mac string) *machinev1.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := l.client.Machines.ListMachines(ctx, connect.NewRequest(&machinev1.ListMachinesRequest{Mac: mac}))
	if err != nil || len(resp.Msg.GetMachines()) != 1 {
		t.Fatalf("the machine of %s: %v, %v", mac, resp, err)
	}
	return resp.Msg.GetMachines()[0]
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// countMachines returns how many machines the API knows.
func (l *lab) countMachines(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for _, err := range l.client.AllMachines(ctx, &machinev1.ListMachinesRequest{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// checkMachine compares what the API knows of a machine with what QEMU
// gave the VM.
func checkMachine(t *testing.T, m *machinev1.Machine, s vmSpec) {
	t.Helper()
	inv := m.GetInventory()
	var problems []string
	check := func(what string, got, want any) {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			problems = append(problems, fmt.Sprintf("%s = %v, want %v", what, got, want))
		}
	}
	check("state", m.GetState(), machinev1.MachineState_MACHINE_STATE_READY)
	if len(m.GetInterfaces()) != 1 {
		problems = append(problems, fmt.Sprintf("%d interfaces, want 1", len(m.GetInterfaces())))
	} else {
		check("interface MAC", m.GetInterfaces()[0].GetMac(), s.mac)
	}
	check("system serial", inv.GetSystem().GetSerial(), s.serial)
	check("system UUID", inv.GetSystem().GetUuid(), s.uuid)
	check("hardware id", m.GetHardwareId(), "uuid:"+s.uuid)
	check("CPU threads", inv.GetCpu().GetThreads(), s.cpus)
	check("memory bytes", inv.GetMemoryBytes(), uint64(s.memoryMB)<<20)
	var disk *machinev1.Disk
	for _, d := range inv.GetDisks() {
		if d.GetSerial() == s.diskID {
			disk = d
		}
	}
	if disk == nil {
		problems = append(problems, fmt.Sprintf("no disk with serial %s in %v", s.diskID, inv.GetDisks()))
	} else {
		check("disk size", disk.GetSizeBytes(), uint64(s.diskMB)<<20)
	}
	var nic bool
	for _, n := range inv.GetNics() {
		nic = nic || n.GetMac() == s.mac
	}
	if !nic {
		problems = append(problems, fmt.Sprintf("no NIC with MAC %s in %v", s.mac, inv.GetNics()))
	}
	if len(problems) > 0 {
		t.Errorf("%s VM, machine %s:\n  %s", s.name, m.GetId(), strings.Join(problems, "\n  "))
	}
}

// waitExit waits for a process to exit by itself.
func waitExit(p *proc, timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("still running %s later", timeout)
	}
}

// ovmfFiles are the UEFI firmware's code and variable store templates.
type ovmfFiles struct{ code, vars string }

func findOVMF(t testing.TB) ovmfFiles {
	t.Helper()
	for _, f := range []ovmfFiles{
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	} {
		if _, err := os.Stat(f.code); err == nil {
			if _, err := os.Stat(f.vars); err == nil {
				return f
			}
		}
	}
	t.Fatal("UEFI firmware not found in /usr/share/OVMF (apt-get install ovmf)")
	return ovmfFiles{}
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

func loadPool(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no PEM certificate", file)
	}
	return pool
}
