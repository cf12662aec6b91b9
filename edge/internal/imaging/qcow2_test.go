package imaging

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// toQCOW2 converts a raw image to qcow2 with the real qemu-img, with
// extra convert arguments, and checks that converting it back gives the
// raw image again.
func toQCOW2(t *testing.T, raw []byte, args ...string) []byte {
	t.Helper()
	qemuImg := needTool(t, "qemu-img", "qemu-utils")
	in := writeFile(t, "in.raw", raw)
	out := filepath.Join(t.TempDir(), "out.qcow2")
	run(t, nil, qemuImg, append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), in, out)...)
	back := filepath.Join(t.TempDir(), "back.raw")
	run(t, nil, qemuImg, "convert", "-f", "qcow2", "-O", "raw", out, back)
	if !bytes.Equal(readFile(t, back), raw) {
		t.Fatal("qemu-img: the qcow2 image converted back is not the raw image")
	}
	return readFile(t, out)
}

func TestWriteQCOW2(t *testing.T) {
	t.Parallel()
	img := diskImage()
	tests := map[string]struct {
		args []string
		// check looks at the qcow2 file, to prove the case is what it
		// says.
		check func(q []byte) string
	}{
		"v3":                 {check: version(3)},
		"v2":                 {args: []string{"-o", "compat=0.10"}, check: version(2)},
		"v3 compressed zlib": {args: []string{"-c"}, check: version(3)},
		"v2 compressed":      {args: []string{"-c", "-o", "compat=0.10"}, check: version(2)},
		"v3 compressed zstd": {args: []string{"-c", "-o", "compression_type=zstd"}, check: func(q []byte) string {
			if len(q) < 105 || q[104] != 1 {
				return "compression type is not zstd"
			}
			return version(3)(q)
		}},
		"4 KiB clusters":    {args: []string{"-o", "cluster_size=4096"}, check: version(3)},
		"2 MiB clusters":    {args: []string{"-c", "-o", "cluster_size=2M"}, check: version(3)},
		"preallocated meta": {args: []string{"-o", "preallocation=metadata"}, check: version(3)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			q := toQCOW2(t, img, tt.args...)
			if msg := tt.check(q); msg != "" {
				t.Fatalf("fixture: %s", msg)
			}
			srv := serveArtifact(t, q)
			disk := newDisk(t, 16<<20)
			fillDisk(t, disk, 0, len(img)+8192, 0x5a) // what was on the disk before
			var pl progressLog
			res, err := Write(context.Background(), srv.Client(),
				Source{URL: srv.URL + "/image" + secretQuery, SHA256: sha256Hex(q), Format: QCOW2, Size: int64(len(q))}, disk, pl.add)
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			got := readFile(t, disk)
			if !bytes.Equal(got[:len(img)], img) {
				t.Error("the disk does not hold the guest disk (holes must be written as zeros)")
			}
			if got[len(img)] != 0x5a {
				t.Error("Write wrote past the guest disk's end")
			}
			if res.Written != int64(len(img)) {
				t.Errorf("Result.Written = %d, want %d", res.Written, len(img))
			}
			if res.Downloaded <= int64(len(q)) {
				t.Errorf("Result.Downloaded = %d, want the artifact (%d) and the ranges", res.Downloaded, len(q))
			}
			if p, ok := pl.last(PhaseVerify); !ok || p.Done != int64(len(q)) || p.Total != int64(len(q)) {
				t.Errorf("last verify progress %+v (%v), want done = total = %d", p, ok, len(q))
			}
			if p, ok := pl.last(PhaseWrite); !ok || p.Done != int64(len(img)) || p.Total != int64(len(img)) {
				t.Errorf("last write progress %+v (%v), want done = total = %d", p, ok, len(img))
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.gets != 1 || srv.ranges == 0 {
				t.Errorf("the server saw %d whole GETs and %d range GETs; want 1 and some", srv.gets, srv.ranges)
			}
		})
	}
}

// both runs every check.
func both(checks ...func(q []byte) string) func(q []byte) string {
	return func(q []byte) string {
		for _, c := range checks {
			if msg := c(q); msg != "" {
				return msg
			}
		}
		return ""
	}
}

// compressed says whether a qcow2 image has compressed clusters.
func compressed(q []byte) string {
	h, err := parseQCOWHeader(q)
	if err != nil {
		return err.Error()
	}
	cs := int(h.clusterSize())
	for i := range int(h.l1Size) {
		l2 := int(binary.BigEndian.Uint64(q[int(h.l1Offset)+8*i:]) & qcowOffsetMask)
		for j := 0; l2 != 0 && j < cs/8; j++ {
			if binary.BigEndian.Uint64(q[l2+8*j:])&qcowCompressed != 0 {
				return ""
			}
		}
	}
	return "no compressed cluster"
}

func version(v uint32) func(q []byte) string {
	return func(q []byte) string {
		if got := binary.BigEndian.Uint32(q[4:]); got != v {
			return "qcow2 version is not as expected"
		}
		return ""
	}
}

// TestWriteQCOW2Refused: what Write does not support is refused with a
// message that says what, before the disk is written.
func TestWriteQCOW2Refused(t *testing.T) {
	t.Parallel()
	qemuImg := needTool(t, "qemu-img", "qemu-utils")
	img := diskImage()
	plain := toQCOW2(t, img)
	backing := func() []byte {
		dir := t.TempDir()
		base := filepath.Join(dir, "base.raw")
		if err := os.WriteFile(base, img, 0o644); err != nil {
			t.Fatal(err)
		}
		top := filepath.Join(dir, "top.qcow2")
		run(t, nil, qemuImg, "create", "-f", "qcow2", "-F", "raw", "-b", base, top)
		return readFile(t, top)
	}()
	patch := func(off int, b ...byte) []byte {
		q := bytes.Clone(plain)
		copy(q[off:], b)
		return q
	}
	tests := map[string]struct {
		q    []byte
		want string
	}{
		"backing file": {q: backing, want: "backing file"},
		"encrypted":    {q: patch(32, 0, 0, 0, 1), want: "encrypted"},
		"version 4":    {q: patch(4, 0, 0, 0, 4), want: "version 4"},
		"corrupt":      {q: patch(72+7, 2), want: "corrupt"},
		"extended L2":  {q: patch(72+7, 16), want: "extended L2"},
		"not qcow2":    {q: img, want: "not a qcow2 image"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := serveArtifact(t, tt.q)
			disk := newDisk(t, 16<<20)
			_, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL + "/image", SHA256: sha256Hex(tt.q), Format: QCOW2}, disk, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write: %v; want an error saying %q", err, tt.want)
			}
			if !isZero(readFile(t, disk)) {
				t.Error("the disk was written")
			}
		})
	}
}

// TestWriteQCOW2Changed: an image that changes on the server between the
// checksum pass and the write pass is not written from the new bytes.
func TestWriteQCOW2Changed(t *testing.T) {
	t.Parallel()
	q := toQCOW2(t, diskImage())
	var mu sync.Mutex
	mod := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		m := mod
		mod = mod.Add(time.Hour) // a new version after every request
		mu.Unlock()
		// http.ServeContent answers 412 to If-Unmodified-Since with an
		// older time.
		http.ServeContent(w, r, "image", m, bytes.NewReader(q))
	}))
	t.Cleanup(srv.Close)
	disk := newDisk(t, 16<<20)
	_, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL + secretQuery, SHA256: sha256Hex(q), Format: QCOW2}, disk, nil)
	if err == nil || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("Write: %v; want an error that the image changed", err)
	}
	if !isZero(readFile(t, disk)) {
		t.Error("the disk was written")
	}
}
