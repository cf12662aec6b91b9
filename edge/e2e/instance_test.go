package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"golang.org/x/crypto/ssh"
)

// osImageName is the disk image scripts/build-os-image leaves in
// .build/os-image, with its SHA-256 in SHA256SUMS there.
const osImageName = "debian-12-amd64.raw.zst"

// osImage is the test's OS image file and its checksum.
type osImage struct {
	path, sha256 string
	size         int64
}

// findOSImage returns the Debian image scripts/build-os-image built
// (.ci/run builds it at install time); it fails the test when it is
// missing.
func findOSImage(t testing.TB) osImage {
	t.Helper()
	root, err := workspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".build", "os-image")
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("the instance tests install the Debian image of scripts/build-os-image, which is not built: %v (run scripts/build-os-image)", err)
	}
	img := osImage{path: filepath.Join(dir, osImageName)}
	for line := range strings.Lines(string(sums)) {
		if f := strings.Fields(line); len(f) == 2 && strings.TrimPrefix(f[1], "*") == osImageName {
			img.sha256 = f[0]
		}
	}
	info, err := os.Stat(img.path)
	if err != nil || img.sha256 == "" {
		t.Fatalf("%s or its checksum in SHA256SUMS is missing (%v): run scripts/build-os-image again", img.path, err)
	}
	img.size = info.Size()
	return img
}

// artifactsWith returns a new artifacts directory holding the discovery
// image's files and extra (name -> path), linked where the file system
// allows, copied otherwise.
func artifactsWith(t testing.TB, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	scout := scoutImage(t)
	if err := os.CopyFS(dir, os.DirFS(scout)); err != nil {
		t.Fatalf("copy the discovery image: %v", err)
	}
	for name, path := range extra {
		to := filepath.Join(dir, name)
		if err := os.Link(path, to); err != nil {
			copyFile(t, path, to)
		}
	}
	return dir
}

// TestInstanceLifecycle runs a tenant's instance on a QEMU VM powered
// through ipmi_sim, with nothing done by hand: the VM is discovered and
// Ready; an instance whose image has a wrong checksum fails with that
// reason and its machine is cleaned; then `terraform apply` of the
// provider's example configuration (terraform-provider/examples/
// configurations/instance) creates an instance of the real Debian image,
// chosen by a selector, which the discovery agent installs and boots, runs
// its user data, phones home and becomes Running, and the test logs in over
// SSH with its key at the address Terraform outputs; `terraform destroy`
// releases it and returns once the machine is wiped and Ready, and it is
// off, and its disk has no partition table nor filesystem left.
func TestInstanceLifecycle(t *testing.T) {
	tl := instanceLifecycle(t, true)
	t.Logf("phases:\n%s", tl.table())
}

// instanceLifecycle is TestInstanceLifecycle's body; it returns when each
// step of the good instance's provisioning and release began. viaTerraform
// has the terraform CLI create and destroy the good instance, and the
// timeline holds only the commands' spans; otherwise the instance is
// created and deleted through the API and the timeline has every step of
// it.
func instanceLifecycle(t testing.TB, viaTerraform bool) *timeline {
	requireRoot(t)
	tools := lookPaths(t, "ip", "qemu-system-x86_64", "radvd", "ipmi_sim", "ipmitool", "wipefs", "blkid")
	testsecret.Register(t, e2eBMCPassword)
	img := findOSImage(t)
	l := newLabNetwork(t, "inst", tools["qemu-system-x86_64"])
	var tf *terraformWork
	if viaTerraform {
		// First, so that a missing terraform or a provider that does not
		// build fails the test before the VM boots.
		tf = newTerraform(t, l.ns, "configurations/instance")
	}
	l.startDaemons(t, artifactsWith(t, map[string]string{osImageName: img.path}))
	l.startRadvd(t, tools["radvd"])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	daemon := startProc(t, l.ns, "carbide-bmc", bins.bmc, "--pki-dir", l.pki, "--api-url", "https://"+labAPI,
		"--poll-interval", "2s", "--claim-interval", "200ms", "--metrics-listen", "")
	wrap := func(argv []string) []string { return append([]string{"ip", "netns", "exec", l.ns.name}, argv...) }

	spec := vmSpec{name: "inst", mac: "52:54:00:cb:00:40", serial: "CB-INST-0040", uuid: "6c1d7c1e-0b6e-4b1a-9d7e-000000000040",
		cpus: 2, memoryMB: 1024, diskMB: 4096, diskID: "CBDISK-INST", reboots: true}
	qemu, console := l.vmCommand(t, spec, false)
	addr := netip.AddrPortFrom(netip.MustParseAddr(labAddr), 6231)
	sim, err := bmcsim.StartIPMI(ctx, bmcsim.IPMIConfig{Addr: addr, Password: e2eBMCPassword, Dir: t.TempDir(), QEMU: qemu, Wrap: wrap})
	if err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	t.Cleanup(sim.Stop)
	disk := filepath.Join(l.dir, spec.name, "disk.img")

	// Discovery: an operator registers the machine by its MAC, with its
	// BMC, and boots it once; its agent makes it Ready and powers it off.
	m, err := l.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
		Macs: []string{spec.mac}, Labels: map[string]string{"rack": "e2e"}}))
	if err != nil {
		t.Fatal(err)
	}
	id := m.Msg.GetMachine().GetId()
	if _, err := l.client.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: labAddr,
		Port: uint32(addr.Port()), Protocol: bmcv1.Protocol_PROTOCOL_IPMI, Username: "admin", Password: e2eBMCPassword})); err != nil {
		t.Fatal(err)
	}
	for _, op := range []*bmcv1.RequestOperationRequest{
		{MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, Boot: &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE}},
		{MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON},
	} {
		if _, err := l.client.BMC.RequestOperation(ctx, connect.NewRequest(op)); err != nil {
			t.Fatalf("RequestOperation %s: %v", op.GetType(), err)
		}
	}
	v := &vm{spec: spec, console: console, started: time.Now()}
	if ready, _ := l.waitReady(t, v, 4*time.Minute); ready == nil {
		t.Fatalf("the VM never became Ready:\n%s", tail(daemon.out.String(), 20))
	}
	waitOff(t, sim, 2*time.Minute)

	debian := l.createImage(t, ctx, "debian", "12", img.sha256, img.size)
	wrong := l.createImage(t, ctx, "debian-wrong-sum", "12", strings.Repeat("0", 64), img.size)
	selector := &instancev1.Selector{Labels: map[string]string{"rack": "e2e"}, MinCpus: 2, MinMemoryBytes: 512 << 20,
		MinDiskBytes: 2 << 30, SegmentId: l.segment.GetId()}

	// A wrong checksum fails the instance with that reason; the machine
	// is cleaned, not handed to the tenant.
	bad := l.createInstance(t, ctx, &instancev1.CreateInstanceRequest{RequestId: "e2e-bad", Hostname: "bad", ImageId: wrong,
		Target: &instancev1.CreateInstanceRequest_Selector{Selector: selector}})
	failed := l.waitInstance(t, ctx, bad.GetId(), instancev1.InstanceState_INSTANCE_STATE_FAILED, 6*time.Minute, console, nil)
	if !strings.Contains(strings.ToLower(failed.GetFailureReason()), "checksum") && !strings.Contains(failed.GetFailureReason(), "sha256") {
		t.Errorf("the instance failed for %q, want the wrong checksum", failed.GetFailureReason())
	}
	l.waitMachine(t, ctx, id, machinev1.MachineState_MACHINE_STATE_READY, 4*time.Minute, console)
	l.requireHistory(t, ctx, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, machinev1.MachineState_MACHINE_STATE_CLEANING)
	waitOff(t, sim, 2*time.Minute)

	// The real image, by selector, with the tenant's key and user data.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if block, err := ssh.MarshalPrivateKey(priv, ""); err == nil {
		testsecret.Register(t, string(pem.EncodeToMemory(block)))
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	marker := randomHex(t, 8)
	userData := fmt.Sprintf(`#cloud-config
write_files:
  - path: /etc/carbide-e2e
    content: "written by user-data %s\n"
runcmd:
  - [sh, -c, "echo CARBIDE-E2E-MARKER-%s > /dev/ttyS0"]
`, marker, marker)
	sshKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " e2e"
	tl := &timeline{}
	var created *instancev1.Instance
	if viaTerraform {
		tf.setVars(t, map[string]any{
			"endpoint":            "https://" + labAPI,
			"ca_cert":             filepath.Join(l.pki, "ca.crt"),
			"client_cert":         filepath.Join(l.pki, "admin.crt"),
			"client_key":          filepath.Join(l.pki, "admin.key"),
			"hostname":            "tenant-vm",
			"image_id":            debian,
			"machine_labels":      selector.GetLabels(),
			"min_cpus":            selector.GetMinCpus(),
			"min_memory_bytes":    selector.GetMinMemoryBytes(),
			"min_disk_bytes":      selector.GetMinDiskBytes(),
			"segment_id":          selector.GetSegmentId(),
			"ssh_authorized_keys": []string{sshKey},
			"user_data":           userData,
			"create_timeout":      "12m",
			"delete_timeout":      "6m",
		})
		tl.mark("create", "")
		if err := tf.run(t, 14*time.Minute, "apply", "-auto-approve"); err != nil {
			t.Fatalf("terraform apply (its output is above): %v\nconsole:\n%s", err, consoleTail(console))
		}
		tl.mark("running", "")
		outs := tf.outputs(t)
		if outs["state"] != "running" || outs["machine_id"] != id || outs["address"] == "" {
			t.Fatalf("terraform outputs %v after apply, want state running, machine_id %s and an address", outs, id)
		}
		resp, err := l.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: outs["id"]}))
		if err != nil {
			t.Fatalf("get the instance terraform created (%q): %v", outs["id"], err)
		}
		created = resp.Msg.GetInstance()
		if created.GetState() != instancev1.InstanceState_INSTANCE_STATE_RUNNING || created.GetAddress() != outs["address"] {
			t.Fatalf("the API has instance %s %s at %q; terraform says running at %q", created.GetId(), created.GetState(), created.GetAddress(), outs["address"])
		}
	} else {
		tl.mark("create", "")
		created = l.createInstance(t, ctx, &instancev1.CreateInstanceRequest{RequestId: "e2e-good", Hostname: "tenant-vm", ImageId: debian,
			UserData: []byte(userData), SshAuthorizedKeys: []string{sshKey},
			Target: &instancev1.CreateInstanceRequest_Selector{Selector: selector}})
		if created.GetMachineId() != id {
			t.Fatalf("the instance got machine %s, want the VM's %s", created.GetMachineId(), id)
		}
		created = l.waitInstance(t, ctx, created.GetId(), instancev1.InstanceState_INSTANCE_STATE_RUNNING, 12*time.Minute, console, tl)
	}
	if got := l.machineState(t, ctx, id); got != machinev1.MachineState_MACHINE_STATE_ASSIGNED {
		t.Errorf("the machine of a Running instance is %s, want ASSIGNED", got)
	}
	address := created.GetAddress()
	if address == "" {
		t.Fatal("the Running instance has no address")
	}
	out := sshRun(t, l, address, signer, "hostname; cat /etc/carbide-e2e; ip -4 -o addr show scope global")
	for _, want := range []string{"tenant-vm", "written by user-data " + marker, address + "/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("the instance's shell printed %q, without %q", out, want)
		}
	}
	if b, _ := os.ReadFile(console); !bytes.Contains(b, []byte("CARBIDE-E2E-MARKER-"+marker)) {
		t.Errorf("the serial console has no user-data marker")
	}

	// Released: the machine is wiped, Ready and off; its disk is blank.
	tl.mark("delete", "")
	if viaTerraform {
		// wait_for_cleaning: destroy returns once the machine is Ready.
		if err := tf.run(t, 8*time.Minute, "destroy", "-auto-approve"); err != nil {
			t.Fatalf("terraform destroy (its output is above): %v\nconsole:\n%s", err, consoleTail(console))
		}
		if got := l.machineState(t, ctx, id); got != machinev1.MachineState_MACHINE_STATE_READY {
			t.Fatalf("the machine is %s when terraform destroy returns, want READY", got)
		}
		resp, err := l.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: created.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if s := resp.Msg.GetInstance().GetState(); s != instancev1.InstanceState_INSTANCE_STATE_RELEASED {
			t.Errorf("the destroyed instance is %s, want RELEASED", s)
		}
	} else {
		if _, err := l.client.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: created.GetId()})); err != nil {
			t.Fatal(err)
		}
		l.waitInstance(t, ctx, created.GetId(), instancev1.InstanceState_INSTANCE_STATE_RELEASED, 6*time.Minute, console, tl)
		l.waitMachine(t, ctx, id, machinev1.MachineState_MACHINE_STATE_READY, time.Minute, console)
	}
	waitOff(t, sim, 2*time.Minute)
	tl.mark("off", "")
	checkBlank(t, disk)
	return tl
}

// timeline is when each step of an instance began, as the API showed it.
type timeline struct {
	events []stepEvent
}

type stepEvent struct {
	name, message string
	at            time.Time
}

func (tl *timeline) mark(name, message string) {
	tl.events = append(tl.events, stepEvent{name, message, time.Now()})
}

// phases are the steps' durations in order: each from its start to the
// next event's.
func (tl *timeline) phases() []phase {
	var ps []phase
	for i := 0; i+1 < len(tl.events); i++ {
		if e := tl.events[i]; e.name != "off" && e.name != "released" && e.name != "running" {
			ps = append(ps, phase{e.name, tl.events[i+1].at.Sub(e.at), tl.events[i+1].message})
		}
	}
	return ps
}

type phase struct {
	name string
	took time.Duration
	// ended is the message of the event that ended it.
	ended string
}

// table renders the phases and the totals.
func (tl *timeline) table() string {
	var b strings.Builder
	for _, p := range tl.phases() {
		fmt.Fprintf(&b, "%-28s %8s  %s\n", p.name, p.took.Round(100*time.Millisecond), p.ended)
	}
	for _, span := range [][2]string{{"create", "running"}, {"delete", "off"}} {
		if from, to := tl.at(span[0]), tl.at(span[1]); !from.IsZero() && !to.IsZero() {
			fmt.Fprintf(&b, "%-28s %8s\n", span[0]+" -> "+span[1], to.Sub(from).Round(100*time.Millisecond))
		}
	}
	return b.String()
}

func (tl *timeline) at(name string) time.Time {
	for _, e := range tl.events {
		if e.name == name {
			return e.at
		}
	}
	return time.Time{}
}

// createImage registers the test's image file under name, with sum as its
// checksum.
func (l *lab) createImage(t testing.TB, ctx context.Context, name, version, sum string, size int64) string {
	t.Helper()
	resp, err := l.client.Images.CreateImage(ctx, connect.NewRequest(&instancev1.CreateImageRequest{Image: &instancev1.Image{
		Name: name, Version: version, Architecture: "amd64", Firmware: []instancev1.Firmware{instancev1.Firmware_FIRMWARE_BIOS},
		Boot: &instancev1.Image_Disk{Disk: &instancev1.DiskImage{
			File:   &instancev1.Artifact{Url: "http://" + labHTTP + "/artifacts/" + osImageName, Sha256: sum, SizeBytes: size},
			Format: instancev1.DiskFormat_DISK_FORMAT_RAW, Compression: instancev1.Compression_COMPRESSION_ZSTD,
		}},
	}}))
	if err != nil {
		t.Fatalf("create image %s: %v", name, err)
	}
	return resp.Msg.GetImage().GetId()
}

func (l *lab) createInstance(t testing.TB, ctx context.Context, req *instancev1.CreateInstanceRequest) *instancev1.Instance {
	t.Helper()
	resp, err := l.client.Instances.CreateInstance(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create instance %s: %v", req.GetHostname(), err)
	}
	return resp.Msg.GetInstance()
}

// waitInstance waits until instance id is in state want, logging each step
// its machine goes through, and returns it; it fails the test on timeout or
// when the instance ends in another state.
func (l *lab) waitInstance(t testing.TB, ctx context.Context, id string, want instancev1.InstanceState, timeout time.Duration, console string, tl *timeline) *instancev1.Instance {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for ; time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		resp, err := l.client.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		inst := resp.Msg.GetInstance()
		if now := fmt.Sprintf("%s %s", inst.GetState(), inst.GetTask().GetStep()); now != last {
			t.Logf("instance %s: %s %s", inst.GetHostname(), now, inst.GetTask().GetMessage())
			last = now
			if tl != nil {
				tl.mark(stepName(inst), inst.GetTask().GetMessage())
			}
		}
		switch s := inst.GetState(); {
		case s == want:
			return inst
		case s == instancev1.InstanceState_INSTANCE_STATE_FAILED || s == instancev1.InstanceState_INSTANCE_STATE_RELEASED:
			t.Fatalf("instance %s ended %s (%s), want %s\nconsole:\n%s", inst.GetHostname(), s, inst.GetFailureReason(), want, consoleTail(console))
		}
	}
	t.Fatalf("instance %s not %s within %s (%s)\nconsole:\n%s", id, want, timeout, last, consoleTail(console))
	return nil
}

// stepName names an instance's state and step for a timeline:
// "provisioning/write_image", "running".
func stepName(inst *instancev1.Instance) string {
	st := strings.ToLower(strings.TrimPrefix(inst.GetState().String(), "INSTANCE_STATE_"))
	if step := inst.GetTask().GetStep(); step != "" {
		return st + "/" + step
	}
	return st
}

func (l *lab) machineState(t testing.TB, ctx context.Context, id string) machinev1.MachineState {
	t.Helper()
	resp, err := l.client.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetMachine().GetState()
}

func (l *lab) waitMachine(t testing.TB, ctx context.Context, id string, want machinev1.MachineState, timeout time.Duration, console string) {
	t.Helper()
	if !waitFor(timeout, func() bool { return l.machineState(t, ctx, id) == want }) {
		t.Fatalf("machine %s is %s, not %s, after %s\nconsole:\n%s", id, l.machineState(t, ctx, id), want, timeout, consoleTail(console))
	}
}

// requireHistory checks that machine id passed through the states, in
// order, in its recorded history.
func (l *lab) requireHistory(t testing.TB, ctx context.Context, id string, states ...machinev1.MachineState) {
	t.Helper()
	resp, err := l.client.Machines.ListMachineTransitions(ctx, connect.NewRequest(&machinev1.ListMachineTransitionsRequest{MachineId: id, PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	next := 0
	for _, tr := range resp.Msg.GetTransitions() {
		seen = append(seen, fmt.Sprintf("%s (%s)", tr.GetToState(), tr.GetReason()))
		if next < len(states) && tr.GetToState() == states[next] {
			next++
		}
	}
	if next < len(states) {
		t.Errorf("machine %s's history lacks %v in order:\n%s", id, states, strings.Join(seen, "\n"))
	}
}

// waitOff waits until the simulated BMC's VM is off.
func waitOff(t testing.TB, sim *bmcsim.IPMI, timeout time.Duration) {
	t.Helper()
	if !waitFor(timeout, func() bool { on, err := sim.PoweredOn(); return err == nil && !on }) {
		t.Fatalf("the VM is still on after %s", timeout)
	}
}

// sshRun runs command on the instance at address, from the lab namespace,
// as the image's default user with signer's key, retrying while sshd
// comes up.
func sshRun(t testing.TB, l *lab, address string, signer ssh.Signer, command string) string {
	t.Helper()
	cfg := &ssh.ClientConfig{User: "debian", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		var conn net.Conn
		if lastErr = nsenter.Do(l.ns.name, func() (err error) {
			conn, err = net.DialTimeout("tcp", net.JoinHostPort(address, "22"), 10*time.Second)
			return err
		}); lastErr != nil {
			continue
		}
		c, chans, reqs, err := ssh.NewClientConn(conn, address, cfg)
		if err != nil {
			conn.Close()
			lastErr = err
			continue
		}
		client := ssh.NewClient(c, chans, reqs)
		session, err := client.NewSession()
		if err != nil {
			client.Close()
			lastErr = err
			continue
		}
		out, err := session.CombinedOutput(command)
		client.Close()
		if err != nil {
			t.Fatalf("ssh %s %q: %v\n%s", address, command, err, out)
		}
		return string(out)
	}
	t.Fatalf("cannot log in to %s over SSH: %v", address, lastErr)
	return ""
}

// checkBlank fails the test when wipefs or blkid find any signature on the
// disk image at path, or when its first or last MiB is not zero.
func checkBlank(t testing.TB, path string) {
	t.Helper()
	if out, err := exec.Command("wipefs", "--no-act", path).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("wipefs finds signatures on the released disk (%v):\n%s", err, out)
	}
	out, err := exec.Command("blkid", "-p", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("blkid -p finds something on the released disk (%v):\n%s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, info.Size() - 1<<20} {
		buf := make([]byte, 1<<20)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for i, b := range buf {
			if b != 0 {
				t.Errorf("byte %d of the released disk is not zero", off+int64(i))
				break
			}
		}
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// consoleTail is the end of a VM's serial console file.
func consoleTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 60 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// BenchmarkInstanceLifecycle runs TestInstanceLifecycle's VM through an
// instance, created and deleted through the API, and reports, in seconds, each step of its provisioning (from
// CreateInstance to Running) and of its release (from DeleteInstance to
// Ready and off), and the image write rate the agent measured (MB/s of the
// unpacked image, download, decompression and checksum included). Run it
// with -benchtime 1x: each iteration is a whole lab.
func BenchmarkInstanceLifecycle(b *testing.B) {
	rate := regexp.MustCompile(`\(([0-9.]+) MB/s\)`)
	for range b.N {
		tl := instanceLifecycle(b, false)
		b.Logf("phases:\n%s", tl.table())
		for _, p := range tl.phases() {
			b.ReportMetric(p.took.Seconds(), strings.ReplaceAll(p.name, "/", ":")+"-s")
			if m := rate.FindStringSubmatch(p.ended); m != nil && strings.HasSuffix(p.name, "write_image") {
				if v, err := strconv.ParseFloat(m[1], 64); err == nil {
					b.ReportMetric(v, "write-MB/s")
				}
			}
		}
		b.ReportMetric(tl.at("running").Sub(tl.at("create")).Seconds(), "create-to-running-s")
		b.ReportMetric(tl.at("off").Sub(tl.at("delete")).Seconds(), "delete-to-off-s")
	}
}
