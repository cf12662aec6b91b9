package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/carbide-dev/carbide/edge/internal/nsenter"
)

// The tenant network of the OS image test: a tap device in the test's
// namespace, the VM's static address on it given by network-config.
const (
	osImageHost    = "198.18.99.1"
	osImageGuest   = "198.18.99.10"
	osImageMAC     = "52:54:00:99:00:10"
	osImageBase    = "debian-12-amd64"
	osImageDiskGiB = 3
)

// osImageDir returns the directory scripts/build-os-image filled:
// $CARBIDE_OS_IMAGE_DIR, or .build/os-image at the root of the workspace.
func osImageDir() (string, error) {
	if d := os.Getenv("CARBIDE_OS_IMAGE_DIR"); d != "" {
		return d, nil
	}
	root, err := workspaceRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".build", "os-image"), nil
}

// TestOSImageBoots provisions the OS image the way the discovery agent
// does: the raw image, checked against its SHA256SUMS, written onto a
// larger disk, and a cloud-init NoCloud seed (a FAT labelled CIDATA)
// appended as a partition after the image's last one. SeaBIOS boots the
// disk under QEMU; cloud-init must set the hostname from meta-data, apply
// the static address of network-config (v2, matched by MAC), write the
// files and run the commands of user-data, and phone home; the test then
// logs in over SSH with the key it put in user-data, checking the host key
// against the one phoned home.
func TestOSImageBoots(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "qemu-system-x86_64", "sfdisk", "mkfs.fat", "mcopy")
	dir, err := osImageDir()
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, osImageBase+".raw")
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("no OS image in %s (%v): run scripts/build-os-image, which builds it with mmdebstrap "+
			"(.ci/run does), or point CARBIDE_OS_IMAGE_DIR at its output", dir, err)
	}
	want := sumOf(t, sums, osImageBase+".raw")

	work := t.TempDir()
	disk := filepath.Join(work, "disk.raw")
	started := time.Now()
	if got := writeSparse(t, raw, disk, osImageDiskGiB<<30); got != want {
		t.Fatalf("%s: sha256 %s, SHA256SUMS says %s: rebuild it (scripts/build-os-image --force)", raw, got, want)
	}
	t.Logf("image checked and written onto a %d GiB disk in %s", osImageDiskGiB, time.Since(started).Round(time.Millisecond))

	// The tenant's key, and the seed that carries it.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	seed := map[string]string{
		"meta-data": "instance-id: iid-e2e-osimage\nlocal-hostname: tenant-node-7\n",
		"user-data": fmt.Sprintf(`#cloud-config
ssh_authorized_keys:
  - %s
write_files:
  - path: /etc/carbide-e2e
    content: written by user-data
runcmd:
  - [ sh, -c, 'echo runcmd ran > /run/carbide-e2e-runcmd' ]
phone_home:
  url: http://%s:8080/phone-home/$INSTANCE_ID
  post: [ pub_key_ed25519, instance_id, hostname ]
  tries: 10
`, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), osImageHost),
		"network-config": fmt.Sprintf(`version: 2
ethernets:
  lan0:
    match:
      macaddress: "%s"
    set-name: lan0
    addresses: [%s/24]
    gateway4: %s
`, osImageMAC, osImageGuest, osImageHost),
		"vendor-data": "#cloud-config\n{}\n",
	}
	seedStart := appendSeedPartition(t, tools, disk, work, seed)
	t.Logf("seed partition CIDATA appended at sector %d", seedStart)

	// The tenant network, and what answers cloud-init's phone home there.
	ns := newNetns(t, "osimage")
	ns.ip(t, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ns.addr(t, "tap0", osImageHost+"/24")
	ns.ip(t, "link", "set", "dev", "tap0", "up")
	phoned := listenPhoneHome(t, ns, osImageHost+":8080")

	console := filepath.Join(work, "console.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("serial console of the VM:\n%s", tail(string(b), 80))
		}
	})
	booted := time.Now()
	qemu := startProc(t, ns, "qemu os image", tools["qemu-system-x86_64"],
		"-accel", "tcg", "-display", "none", "-no-reboot", "-monitor", "none",
		"-serial", "file:"+console, "-smp", "1", "-m", "1024",
		"-drive", "file="+disk+",if=none,id=d0,format=raw",
		"-device", "virtio-blk-pci,drive=d0,bootindex=1",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+osImageMAC+",romfile=")

	var home phoneHome
	select {
	case home = <-phoned:
	case <-qemu.done:
		t.Fatalf("QEMU exited (%v) before the VM phoned home", qemu.err)
	case <-time.After(5 * time.Minute):
		t.Fatal("the VM did not phone home within 5 minutes of power-on")
	}
	t.Logf("phoned home %s after power-on: %s", time.Since(booted).Round(time.Second), home.path)
	if home.path != "/phone-home/iid-e2e-osimage" {
		t.Errorf("phone home POSTed to %s, want /phone-home/iid-e2e-osimage (the instance id of meta-data)", home.path)
	}
	if got := home.form.Get("hostname"); got != "tenant-node-7" {
		t.Errorf("phone home says hostname %q, want tenant-node-7", got)
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(home.form.Get("pub_key_ed25519")))
	if err != nil {
		t.Fatalf("phone home's pub_key_ed25519 %q: %v", home.form.Get("pub_key_ed25519"), err)
	}

	// Passwords are refused: the server offers public keys only.
	_, err = dialSSH(ns, "debian", hostKey, ssh.Password("not-a-password"))
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("SSH with a password: %v, want the server to refuse it", err)
	}
	client, err := dialSSH(ns, "debian", hostKey, ssh.PublicKeys(signer))
	if err != nil {
		t.Fatalf("SSH to debian@%s with the key of user-data: %v", osImageGuest, err)
	}
	defer client.Close()
	t.Logf("logged in over SSH %s after power-on", time.Since(booted).Round(time.Second))

	for cmd, want := range map[string]*regexp.Regexp{
		"hostname":                                   regexp.MustCompile(`^tenant-node-7\n$`),
		"cat /etc/carbide-e2e":                       regexp.MustCompile(`^written by user-data\n?$`),
		"cat /run/carbide-e2e-runcmd":                regexp.MustCompile(`^runcmd ran\n$`),
		"ip -4 -o addr show dev lan0":                regexp.MustCompile(`inet ` + regexp.QuoteMeta(osImageGuest) + `/24 `),
		"cat /sys/class/net/lan0/address":            regexp.MustCompile(`^` + osImageMAC + `\n$`),
		"cloud-init status --wait --long":            regexp.MustCompile(`(?m)^status: done$[\s\S]*DataSourceNoCloud \[seed=/dev/vda3\]`),
		"sudo -n grep ^root: /etc/shadow":            regexp.MustCompile(`^root:!`),
		"findmnt -n -o SOURCE /":                     regexp.MustCompile(`^/dev/vda2\n$`),
		"findmnt -n -o SOURCE,FSTYPE /boot/syslinux": regexp.MustCompile(`^/dev/vda1 +vfat\n$`),
		"cat /proc/cmdline":                          regexp.MustCompile(`console=ttyS0,115200`),
	} {
		out, err := runSSH(client, cmd)
		if err != nil {
			t.Errorf("%s: %v\n%s", cmd, err, out)
			continue
		}
		if !want.MatchString(out) {
			t.Errorf("%s printed %q, want a match of %q", cmd, out, want)
		}
	}
}

// sumOf returns the digest a SHA256SUMS file gives name.
func sumOf(t testing.TB, sums []byte, name string) string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		if sum, file, ok := strings.Cut(sc.Text(), "  "); ok && strings.TrimPrefix(file, "*") == name {
			return sum
		}
	}
	t.Fatalf("SHA256SUMS has no line for %s", name)
	return ""
}

// writeSparse copies the image from to a new file to of size bytes,
// leaving holes where the image has zeros, and returns the image's sha256.
func writeSparse(t testing.TB, from, to string, size int64) string {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			h.Write(buf[:n])
			if !allZero(buf[:n]) {
				if _, werr := out.WriteAt(buf[:n], off); werr != nil {
					t.Fatal(werr)
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if off > size {
		t.Fatalf("the image (%d bytes) does not fit the %d-byte disk", off, size)
	}
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// appendSeedPartition adds a 4 MiB partition after the last one of disk
// (sfdisk), formats a FAT labelled CIDATA holding the seed's files
// (dosfstools, mtools) and writes it there; it returns the partition's
// first sector.
func appendSeedPartition(t testing.TB, tools map[string]string, disk, work string, files map[string]string) int64 {
	t.Helper()
	if out, err := runStdin(strings.NewReader("size=4MiB, type=c\n"), tools["sfdisk"], "--append", "--no-reread", "--no-tell-kernel", disk); err != nil {
		t.Fatalf("sfdisk --append: %v\n%s", err, out)
	}
	out, err := run(nil, 30*time.Second, tools["sfdisk"], "--json", disk)
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		PartitionTable struct {
			Partitions []struct {
				Start int64 `json:"start"`
				Size  int64 `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(out), &table); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	parts := table.PartitionTable.Partitions
	if len(parts) != 3 {
		t.Fatalf("the disk has %d partitions after appending the seed, want the image's 2 and the seed:\n%s", len(parts), out)
	}
	p := parts[2]

	fat := filepath.Join(work, "seed.fat")
	if out, err := run(nil, 30*time.Second, tools["mkfs.fat"], "-n", "CIDATA", "-C", fat, fmt.Sprint(p.Size/2)); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	args := []string{tools["mcopy"], "-i", fat}
	for name, body := range files {
		path := filepath.Join(work, name)
		writeFile(t, path, body)
		args = append(args, path)
	}
	if out, err := run(nil, 30*time.Second, append(args, "::")...); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	b, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, p.Start*512); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p.Start
}

// runStdin runs argv with stdin, in the host namespace, and returns its
// combined output.
func runStdin(stdin io.Reader, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// phoneHome is one POST of cloud-init's phone_home module.
type phoneHome struct {
	path string
	form url.Values
}

// listenPhoneHome serves HTTP on addr in namespace n and sends each POST
// it gets on the returned channel, until the test ends.
func listenPhoneHome(t testing.TB, n *netns, addr string) <-chan phoneHome {
	t.Helper()
	var l net.Listener
	if err := nsenter.Do(n.name, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.name, err)
	}
	got := make(chan phoneHome, 10)
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "POST only", http.StatusMethodNotAllowed)
				return
			}
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case got <- phoneHome{path: r.URL.Path, form: r.PostForm}:
			default:
			}
			fmt.Fprintln(w, "ok")
		}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(l) })
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
	return got
}

// dialSSH logs into the VM as user from namespace n, accepting only
// hostKey, retrying while sshd is not up yet (the connection is refused or
// times out).
func dialSSH(n *netns, user string, hostKey ssh.PublicKey, auth ssh.AuthMethod) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{auth},
		HostKeyCallback:   ssh.FixedHostKey(hostKey),
		HostKeyAlgorithms: []string{hostKey.Type()},
		Timeout:           10 * time.Second,
	}
	addr := net.JoinHostPort(osImageGuest, "22")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var conn net.Conn
		err := nsenter.Do(n.name, func() (err error) {
			conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err
		})
		if err == nil {
			c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
			if err != nil {
				conn.Close()
				return nil, err
			}
			return ssh.NewClient(c, chans, reqs), nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(time.Second)
	}
}

// runSSH runs cmd in a session of client and returns its combined output.
func runSSH(client *ssh.Client, cmd string) (string, error) {
	s, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}
