package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/carbide-dev/carbide/edge/internal/initramfs"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	"github.com/carbide-dev/carbide/edge/internal/scout"
)

// scoutImageBuild is the discovery image the tests boot, built once per
// test binary from this workspace's carbide-scout and the kernel package
// that scripts/fetch-kernel unpacked.
type scoutImageBuild struct {
	once sync.Once
	dir  string // <artifacts>/scout: vmlinuz and scout.cpio.gz
	res  *initramfs.Result
	err  error
}

var scoutBuild scoutImageBuild

// scoutImage returns an artifacts directory for carbide-pxe
// (--artifacts-dir): the discovery image is in its scout/ directory, as
// scout/vmlinuz and scout/scout.cpio.gz. It builds the image on first use,
// and fails the test when the kernel package is missing.
func scoutImage(t testing.TB) string {
	t.Helper()
	return filepath.Dir(buildScoutImage(t).dir)
}

// buildScoutImage returns the image and how it was built, building it
// on first use.
func buildScoutImage(t testing.TB) *scoutImageBuild {
	t.Helper()
	scoutBuild.once.Do(func() {
		scoutBuild.dir, scoutBuild.res, scoutBuild.err = buildImage()
	})
	if scoutBuild.err != nil {
		t.Fatal(scoutBuild.err)
	}
	return &scoutBuild
}

// kernelDir returns the unpacked kernel package: $CARBIDE_KERNEL_DIR, or
// .build/kernel/current at the root of the workspace.
func kernelDir() (string, error) {
	if d := os.Getenv("CARBIDE_KERNEL_DIR"); d != "" {
		return d, nil
	}
	root, err := workspaceRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".build", "kernel", "current"), nil
}

// workspaceRoot is the directory of go.work above the working directory.
func workspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory: run the tests inside the workspace, or set CARBIDE_KERNEL_DIR")
		}
		dir = parent
	}
}

// buildImage builds carbide-scout (static) and the image into
// artifacts/scout next to the binaries TestMain built, which it removes at
// the end.
func buildImage() (string, *initramfs.Result, error) {
	kdir, err := kernelDir()
	if err != nil {
		return "", nil, err
	}
	if _, err := os.Stat(filepath.Join(kdir, "boot")); err != nil {
		return "", nil, fmt.Errorf("no unpacked kernel package at %s (%v): run scripts/fetch-kernel, which downloads "+
			"Debian's cloud kernel into .build/kernel, or point CARBIDE_KERNEL_DIR at an unpacked one", kdir, err)
	}
	return buildImageFrom(kdir, filepath.Join(filepath.Dir(bins.api), "artifacts", "scout"))
}

// buildImageFrom builds carbide-scout (static, once) and an image of it
// with the kernel package unpacked in kdir, into dir.
func buildImageFrom(kdir, dir string) (string, *initramfs.Result, error) {
	bin := filepath.Join(filepath.Dir(bins.api), "carbide-scout")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	scoutBinary.once.Do(func() {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/carbide-dev/carbide/edge/cmd/carbide-scout")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			scoutBinary.err = fmt.Errorf("go build carbide-scout: %v\n%s", err, out)
		}
	})
	if scoutBinary.err != nil {
		return "", nil, scoutBinary.err
	}
	res, err := initramfs.Build(ctx, initramfs.Options{KernelDir: kdir, Scout: bin, OutDir: dir})
	if err != nil {
		return "", nil, fmt.Errorf("build the discovery image: %w", err)
	}
	return dir, res, nil
}

// scoutBinary is carbide-scout, built once for every image.
var scoutBinary struct {
	once sync.Once
	err  error
}

// qemuPath returns qemu-system-x86_64, or fails the test.
func qemuPath(t testing.TB) string {
	t.Helper()
	p, err := findProgram("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: the discovery image is booted in QEMU (apt-get install qemu-system-x86)")
	}
	return p
}

// sparseDisk creates a sparse raw disk image of size bytes.
func sparseDisk(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	inventoryLine = regexp.MustCompile(scout.InventoryPrefix + ` (\{.*\})\r?\n`)
	modulesLine   = regexp.MustCompile(`msg="scout: loaded (\d+) modules in [^";]+"`)
)

// TestScoutInventory boots the discovery image in QEMU, with the kernel
// and initramfs given directly and carbide.inventory=print, and compares
// the inventory the agent prints on the serial console with the hardware
// QEMU was given: SMBIOS system, board and chassis (whose serial is a
// placeholder the agent must drop), CPU topology and model, memory, a
// virtio, a SCSI and an NVMe disk, each with a serial and an odd size,
// and a virtio NIC with a MAC and a speed. The serial line is not the
// last console on the command line, so not /dev/console: the agent
// writes to every console. It then powers the VM off.
func TestScoutInventory(t *testing.T) {
	qemu := qemuPath(t)
	image := buildScoutImage(t)
	dir := t.TempDir()
	const (
		uuid   = "6C1D7C1E-0B6E-4B1A-9D7E-5C0075C0FFEE" // the agent reports it in lower case
		mac    = "52:54:00:5c:00:01"
		vdSize = 3<<30 + 1<<20
		sdSize = 1 << 30
		nvSize = 513 << 20
	)
	args := []string{qemu,
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "none",
		"-m", "768", "-smp", "2,sockets=1,cores=2,threads=1", "-cpu", "qemu64,model-id=Carbide Test CPU",
		"-smbios", "type=1,manufacturer=Carbide Lab,product=Scout E2E,serial=SCOUT-SYS-0001,uuid=" + uuid,
		"-smbios", "type=2,manufacturer=Carbide Boards,product=CB-1,serial=SCOUT-BRD-0001",
		"-smbios", "type=3,manufacturer=Carbide Chassis,serial=To Be Filled By O.E.M.",
		"-drive", "file=" + sparseDisk(t, dir, "vd.img", vdSize) + ",if=none,id=vd,format=raw",
		"-device", "virtio-blk-pci,drive=vd,serial=SCOUT-VD-0001",
		"-device", "virtio-scsi-pci",
		"-drive", "file=" + sparseDisk(t, dir, "sd.img", sdSize) + ",if=none,id=sd,format=raw",
		"-device", "scsi-hd,drive=sd,serial=SCOUT-SD-0001",
		"-drive", "file=" + sparseDisk(t, dir, "nv.img", nvSize) + ",if=none,id=nv,format=raw",
		"-device", "nvme,drive=nv,serial=SCOUT-NV-0001",
		// A NIC on no network: print mode needs none.
		"-device", "virtio-net-pci,mac=" + mac + ",speed=10000,duplex=full",
		"-kernel", filepath.Join(image.dir, initramfs.KernelFile),
		"-initrd", filepath.Join(image.dir, initramfs.InitramfsFile),
		// As carbide-pxe boots it: /dev/console is the last console,
		// tty0, and the agent must still log to the serial line.
		"-append", "console=ttyS0,115200 console=tty0 panic=-1 carbide.inventory=print",
	}
	start := time.Now()
	vm := startProc(t, nil, "qemu", args...)
	m := vm.waitOutput(t, inventoryLine, 3*time.Minute)
	if err := vm.wait(t, time.Minute); err != nil {
		t.Errorf("QEMU: %v (the agent powers the VM off after printing the inventory)", err)
	}
	t.Logf("power-on to power-off in %s", time.Since(start).Round(100*time.Millisecond))
	console := vm.out.String()

	got := &machinev1.Inventory{}
	if err := protojson.Unmarshal([]byte(m[1]), got); err != nil {
		t.Fatalf("the inventory line is not an Inventory in protojson: %v\n%s", err, m[1])
	}
	want := &machinev1.Inventory{
		System:      &machinev1.SystemInfo{Manufacturer: "Carbide Lab", Product: "Scout E2E", Serial: "SCOUT-SYS-0001", Uuid: strings.ToLower(uuid)},
		Board:       &machinev1.BoardInfo{Manufacturer: "Carbide Boards", Product: "CB-1", Serial: "SCOUT-BRD-0001"},
		Chassis:     &machinev1.ChassisInfo{Manufacturer: "Carbide Chassis"},
		Cpu:         &machinev1.CPUInfo{Model: "Carbide Test CPU", Sockets: 1, Cores: 2, Threads: 2},
		MemoryBytes: 768 << 20,
		Disks: []*machinev1.Disk{
			{Name: "nvme0n1", Model: "QEMU NVMe Ctrl", Serial: "SCOUT-NV-0001", SizeBytes: nvSize},
			{Name: "sda", Model: "QEMU HARDDISK", Serial: "SCOUT-SD-0001", SizeBytes: sdSize},
			{Name: "vda", Serial: "SCOUT-VD-0001", SizeBytes: vdSize},
		},
		Nics: []*machinev1.NIC{{Mac: mac, Driver: "virtio_net", LinkUp: true, SpeedMbps: 10000}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}

	// Every module of the image loads: a wrong order would fail with
	// unknown symbols.
	if mm := modulesLine.FindStringSubmatch(console); mm == nil {
		t.Errorf("the console has no %q line", modulesLine)
	} else if n, _ := strconv.Atoi(mm[1]); n != len(image.res.Modules.Files) {
		t.Errorf("the agent loaded %d modules; the image has %d", n, len(image.res.Modules.Files))
	}
	for _, s := range []string{`msg="scout: starting"`, `msg="scout: powering off: inventory printed`} {
		if !strings.Contains(console, s) {
			t.Errorf("the console has no %s line", s)
		}
	}
	if strings.Contains(console, "level=WARN") || strings.Contains(console, "level=ERROR") {
		t.Errorf("the agent logged warnings or errors:\n%s", grepLines(console, "level=WARN", "level=ERROR"))
	}
}

// TestScoutNetwork boots the discovery image with two NICs on a test
// namespace's links: the first on a tap of its own, the second, whose MAC
// is carbide.mac, on a bridge where busybox udhcpd serves addresses. The
// agent must pick the second NIC by its MAC, get an address by DHCP,
// configure it with a default route (the configuration server listens on
// another subnet, behind the router the lease names), and fetch its
// configuration; the server answers 503 with a reason, which the agent
// prints, and retries. The lease lasts 6 s: the agent renews it.
func TestScoutNetwork(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "busybox")
	qemu := qemuPath(t)
	image := buildScoutImage(t)
	const (
		idleMAC = "52:54:00:5c:01:01"
		bootMAC = "52:54:00:5c:01:02"
		router  = "198.18.3.1"
		cfgAddr = "198.18.4.1:8080"
		reason  = "machine " + bootMAC + " is not enrolled yet"
	)
	dir := t.TempDir()
	ns := newNetns(t, "scout")
	for _, tap := range []string{"tap0", "tap1"} {
		ns.ip(t, "tuntap", "add", "dev", tap, "mode", "tap")
		ns.ip(t, "link", "set", "dev", tap, "up")
	}
	ns.bridge(t, "br0", "tap1")
	ns.addr(t, "br0", router+"/24")
	// The configuration server's address is on no link of the VM's: it
	// is reached through the default route.
	ns.addr(t, "lo", "198.18.4.1/32")

	conf := filepath.Join(dir, "udhcpd.conf")
	udhcpdConf := fmt.Sprintf(`interface br0
start 198.18.3.100
end 198.18.3.150
opt subnet 255.255.255.0
opt router %s
opt lease 6
lease_file %s
pidfile %s
`, router, filepath.Join(dir, "udhcpd.leases"), filepath.Join(dir, "udhcpd.pid"))
	if err := os.WriteFile(conf, []byte(udhcpdConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "udhcpd.leases"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, ns, "udhcpd", tools["busybox"], "udhcpd", "-f", "-a", "100", conf)

	// The configuration server records who asked for what, and is not
	// ready to answer.
	type request struct{ from, path string }
	requests := make(chan request, 16)
	var l net.Listener
	if err := nsenter.Do(ns.name, func() (err error) {
		l, err = net.Listen("tcp", cfgAddr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		select {
		case requests <- request{from: host, path: r.URL.Path}:
		default:
		}
		http.Error(w, reason, http.StatusServiceUnavailable)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	args := []string{qemu,
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "none", "-m", "512",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + idleMAC,
		"-netdev", "tap,id=n1,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n1,mac=" + bootMAC,
		"-kernel", filepath.Join(image.dir, initramfs.KernelFile),
		"-initrd", filepath.Join(image.dir, initramfs.InitramfsFile),
		"-append", "console=ttyS0,115200 panic=-1 carbide.config=http://" + cfgAddr + "/agent/" + bootMAC + ".json carbide.mac=" + bootMAC,
	}
	vm := startProc(t, ns, "qemu", args...)
	got := vm.waitOutput(t, regexp.MustCompile(`msg="scout: (eth\d) `+bootMAC+` got (198\.18\.3\.\d+)/24 from `+router+`"`), 3*time.Minute)
	if got[1] != "eth1" {
		t.Errorf("the agent configured %s; the NIC with MAC %s is eth1", got[1], bootMAC)
	}
	select {
	case r := <-requests:
		if r.from != got[2] || r.path != "/agent/"+bootMAC+".json" {
			t.Errorf("the configuration server got %s from %s; want /agent/%s.json from %s", r.path, r.from, bootMAC, got[2])
		}
	case <-time.After(time.Minute):
		t.Fatalf("the configuration server got no request within a minute of the lease")
	}
	vm.waitOutput(t, regexp.MustCompile(`503 Service Unavailable: `+regexp.QuoteMeta(reason)+`; retrying in`), time.Minute)
	// It asks again.
	select {
	case <-requests:
	case <-time.After(time.Minute):
		t.Errorf("the agent did not ask again for its configuration")
	}
	// T1 is half the lease: the agent renews it at 3 s, and says so.
	vm.waitOutput(t, regexp.MustCompile(`msg="scout: eth1 `+bootMAC+` renewed `+regexp.QuoteMeta(got[2])+`/24 from `+router+`"`), time.Minute)
	if strings.Contains(vm.out.String(), "renew the lease") {
		t.Errorf("a renewal failed:\n%s", grepLines(vm.out.String(), "renew the lease"))
	}
	t.Logf("the agent's log:\n%s", grepLines(vm.out.String(), `msg="scout:`))
}

// grepLines returns the lines of s that contain one of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for line := range strings.Lines(s) {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, strings.TrimRight(line, "\r\n"))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
