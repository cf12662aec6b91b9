package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/carbide-dev/carbide/edge/internal/imaging"
)

// TestImagingLoopDevice runs the discovery agent's disk work on a real
// block device, a loop device over a sparse file, where the unit tests
// use regular files: the size comes from BLKGETSIZE64, a quick wipe
// discards, a full wipe uses the device's zero-out, and a disk another
// holder has open exclusively is refused.
func TestImagingLoopDevice(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "losetup", "sfdisk", "blkid", "wipefs")
	const size = 64 << 20
	backing := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tools["losetup"], "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(tools["losetup"], "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v\n%s", dev, err, out)
		}
	})
	if n, err := imaging.DeviceSize(dev); err != nil || n != size {
		t.Fatalf("DeviceSize(%s) = %d, %v; want %d", dev, n, err, size)
	}
	run := func(stdin []byte, name string, args ...string) (string, error) {
		cmd := exec.Command(tools[name], args...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	readDev := func() []byte {
		b, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// An image with an MBR, written by Write, then a seed.
	image := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(image, bytes.Repeat([]byte("carbide "), 3<<20/8), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run([]byte("label: dos\n,1MiB,L\n"), "sfdisk", "-q", image); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(gz.Bytes()) }))
	defer srv.Close()
	sum := sha256.Sum256(gz.Bytes())
	res, err := imaging.Write(context.Background(), srv.Client(),
		imaging.Source{URL: srv.URL, SHA256: hex.EncodeToString(sum[:]), Compression: imaging.Gzip}, dev, nil)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if res.Written != int64(len(raw)) || !bytes.Equal(readDev()[:len(raw)], raw) {
		t.Fatalf("Write wrote %d bytes; the device does not hold the image", res.Written)
	}
	seed, err := imaging.AddSeed(dev, map[string][]byte{"meta-data": []byte("instance-id: i-1\n"), "user-data": []byte("#cloud-config\n")})
	if err != nil {
		t.Fatalf("AddSeed: %v", err)
	}
	if out, _ := run(nil, "blkid", "-p", "-O", fmt.Sprint(seed.Offset), dev); !strings.Contains(out, `LABEL="CIDATA"`) {
		t.Errorf("blkid at the seed: %s", out)
	}

	// Another exclusive holder: the disk is refused, untouched.
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = imaging.Wipe(context.Background(), dev, imaging.Quick, nil)
	f.Close()
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("Wipe of a disk held exclusively: %v; want EBUSY", err)
	}

	wr, err := imaging.Wipe(context.Background(), dev, imaging.Quick, nil)
	if err != nil {
		t.Fatalf("Wipe quick: %v", err)
	}
	if !wr.Discarded || wr.Method != imaging.MethodQuick {
		t.Errorf("Wipe quick: %+v; want the loop device discarded", wr)
	}
	if out, err := run(nil, "wipefs", dev); err != nil || out != "" {
		t.Errorf("wipefs after a quick wipe: %v\n%s", err, out)
	}

	if err := os.WriteFile(dev, bytes.Repeat([]byte{0xa5}, size), 0); err != nil {
		t.Fatal(err)
	}
	wr, err = imaging.Wipe(context.Background(), dev, imaging.Full, nil)
	if err != nil {
		t.Fatalf("Wipe full: %v", err)
	}
	if wr.Method != imaging.MethodZeroOut || wr.Zeroed != size {
		t.Errorf("Wipe full: %+v; want the loop device's zero-out over %d bytes", wr, size)
	}
	if !bytes.Equal(readDev(), make([]byte, size)) {
		t.Error("after a full wipe the device is not all zeros")
	}
}
