package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// entry is one member of an archive as readNewc parsed it.
type entry struct {
	Name         string
	Ino          uint32
	Mode         uint32
	UID, GID     uint32
	Nlink        uint32
	Mtime        uint32
	Major, Minor uint32 // rdevmajor, rdevminor
	Data         string
}

// readNewc parses a newc archive independently of the Writer, following
// the kernel's buffer-format.rst: it checks the magic, the check field,
// the NUL after each name and the 4-byte alignment of names and data,
// and that the archive ends with the trailer.
func readNewc(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if len(b)-off < headerLen {
			t.Fatalf("archive ends at %d without a trailer", off)
		}
		h := b[off : off+headerLen]
		if string(h[:6]) != Magic {
			t.Fatalf("magic at %d is %q", off, h[:6])
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d of header at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		if f[12] != 0 {
			t.Errorf("check field of header at %d is %d, want 0", off, f[12])
		}
		nameEnd := off + headerLen + int(f[11])
		if f[11] == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			t.Fatalf("name of header at %d: size %d is not NUL-terminated", off, f[11])
		}
		name := string(b[off+headerLen : nameEnd-1])
		dataStart := nameEnd + pad(nameEnd)
		dataEnd := dataStart + int(f[6])
		if dataEnd > len(b) {
			t.Fatalf("%s: data runs past the end", name)
		}
		for _, p := range b[nameEnd:dataStart] {
			if p != 0 {
				t.Fatalf("%s: non-zero padding after the name", name)
			}
		}
		if name == Trailer {
			if rest := len(b) - dataEnd; rest > 3 {
				t.Errorf("%d bytes after the trailer", rest)
			}
			return out
		}
		out = append(out, entry{
			Name: name, Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5],
			Major: f[9], Minor: f[10], Data: string(b[dataStart:dataEnd]),
		})
		off = dataEnd + pad(dataEnd)
	}
}

func TestWriter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	steps := []error{
		w.Mkdir("/dev", 0o755),
		w.CharDevice("dev/console", 0o600, 5, 1),
		w.WriteFile("/init", 0o755, []byte("#!")),
		w.WriteFile("lib/modules/6.1.0/kernel/a.ko", 0o644, []byte("12345")),
		w.WriteFile("etc/empty", 0o644, nil),
		w.Mkdir("lib/modules", 0o755), // already there: fine
		w.Symlink("bin/sh", "/init"),
		w.BlockDevice("dev/vda", 0o660, 254, 0),
		w.Mkdir("tmp", 0o777|os.ModeSticky),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 4", buf.Len())
	}
	got := readNewc(t, buf.Bytes())
	want := []entry{
		{Name: "dev", Ino: 1, Mode: 0o40755, Nlink: 2},
		{Name: "dev/console", Ino: 2, Mode: 0o20600, Nlink: 1, Major: 5, Minor: 1},
		{Name: "init", Ino: 3, Mode: 0o100755, Nlink: 1, Data: "#!"},
		{Name: "lib", Ino: 4, Mode: 0o40755, Nlink: 2},
		{Name: "lib/modules", Ino: 5, Mode: 0o40755, Nlink: 2},
		{Name: "lib/modules/6.1.0", Ino: 6, Mode: 0o40755, Nlink: 2},
		{Name: "lib/modules/6.1.0/kernel", Ino: 7, Mode: 0o40755, Nlink: 2},
		{Name: "lib/modules/6.1.0/kernel/a.ko", Ino: 8, Mode: 0o100644, Nlink: 1, Data: "12345"},
		{Name: "etc", Ino: 9, Mode: 0o40755, Nlink: 2},
		{Name: "etc/empty", Ino: 10, Mode: 0o100644, Nlink: 1},
		{Name: "bin", Ino: 11, Mode: 0o40755, Nlink: 2},
		{Name: "bin/sh", Ino: 12, Mode: 0o120777, Nlink: 1, Data: "/init"},
		{Name: "dev/vda", Ino: 13, Mode: 0o60660, Nlink: 1, Major: 254},
		{Name: "tmp", Ino: 14, Mode: 0o41777, Nlink: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
}

func TestWriterErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		build func(w *Writer) error
		want  string
	}{
		"duplicate file": {
			build: func(w *Writer) error {
				if err := w.WriteFile("a", 0o644, nil); err != nil {
					return err
				}
				return w.WriteFile("/a", 0o644, nil)
			},
			want: "already in the archive",
		},
		"file under a file": {
			build: func(w *Writer) error {
				if err := w.WriteFile("a", 0o644, nil); err != nil {
					return err
				}
				return w.WriteFile("a/b", 0o644, nil)
			},
			want: "is not a directory",
		},
		"directory over a file": {
			build: func(w *Writer) error {
				if err := w.Symlink("a", "b"); err != nil {
					return err
				}
				return w.Mkdir("a", 0o755)
			},
			want: "another type",
		},
		"empty name":            {build: func(w *Writer) error { return w.WriteFile("/", 0o644, nil) }, want: "invalid entry name"},
		"trailer name":          {build: func(w *Writer) error { return w.WriteFile(Trailer, 0o644, nil) }, want: "invalid entry name"},
		"empty symlink target":  {build: func(w *Writer) error { return w.Symlink("a", "") }, want: "empty target"},
		"write after close":     {build: func(w *Writer) error { _ = w.Close(); return w.Mkdir("a", 0o755) }, want: ErrClosed.Error()},
		"close after close":     {build: func(w *Writer) error { _ = w.Close(); return w.Close() }, want: ErrClosed.Error()},
		"dot-dot stays at root": {build: func(w *Writer) error { return w.WriteFile("../../x", 0o644, nil) }, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.build(NewWriter(io.Discard))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// failAfter fails every write after the first n bytes.
type failAfter struct{ n int }

var errDisk = errors.New("disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errDisk
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterKeepsWriteError(t *testing.T) {
	t.Parallel()
	w := NewWriter(&failAfter{n: 200})
	var err error
	for i := 0; err == nil && i < 10; i++ {
		err = w.WriteFile(fmt.Sprintf("f%d", i), 0o644, []byte("data"))
	}
	if !errors.Is(err, errDisk) {
		t.Fatalf("got %v, want the write error", err)
	}
	if err := w.Mkdir("d", 0o755); !errors.Is(err, errDisk) {
		t.Errorf("call after a failed write: %v, want the write error again", err)
	}
	if err := w.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close after a failed write: %v, want the write error again", err)
	}
}

// TestBusyboxReads checks that another implementation, busybox cpio,
// lists and extracts what the Writer wrote.
func TestBusyboxReads(t *testing.T) {
	t.Parallel()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: this test reads the archive back with busybox cpio (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, err := range []error{
		w.WriteFile("init", 0o755, []byte("#!/bin/sh\n")),
		w.WriteFile("etc/scout/modules", 0o644, []byte("a.ko\nb.ko\n")),
		w.Symlink("bin/init", "../init"),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	archive := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	list := exec.Command(busybox, "cpio", "-t", "-F", archive)
	list.Stderr = &stderr // "N blocks"
	out, err := list.Output()
	if err != nil {
		t.Fatalf("busybox cpio -t: %v\n%s", err, stderr.String())
	}
	wantList := "init\netc\netc/scout\netc/scout/modules\nbin\nbin/init\n"
	if diff := cmp.Diff(wantList, string(out)); diff != "" {
		t.Errorf("busybox cpio -t (-want +got):\n%s", diff)
	}
	dir := t.TempDir()
	cmd := exec.Command(busybox, "cpio", "-i", "-d", "-F", archive)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "etc/scout/modules"))
	if err != nil || string(b) != "a.ko\nb.ko\n" {
		t.Errorf("extracted etc/scout/modules: %q, %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "init"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("extracted init: %v, %v; want mode 0755", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/init")); err != nil || target != "../init" {
		t.Errorf("extracted bin/init: %q, %v; want a link to ../init", target, err)
	}
}

func TestReadAll(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, err := range []error{
		w.WriteFile("a/b", 0o640, []byte("odd")),
		w.Symlink("c", "a/b"),
		w.CharDevice("dev/null", 0o666, 1, 3),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadAll(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "a", Mode: TypeDir | 0o755, Nlink: 2, Data: []byte{}},
		{Name: "a/b", Mode: TypeRegular | 0o640, Nlink: 1, Data: []byte("odd")},
		{Name: "c", Mode: TypeSymlink | 0o777, Nlink: 1, Data: []byte("a/b")},
		{Name: "dev", Mode: TypeDir | 0o755, Nlink: 2, Data: []byte{}},
		{Name: "dev/null", Mode: TypeChar | 0o666, Nlink: 1, RdevMajor: 1, RdevMinor: 3, Data: []byte{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadAll (-want +got):\n%s", diff)
	}

	for name, tc := range map[string]struct {
		archive []byte
		want    string
	}{
		"truncated":     {buf.Bytes()[:buf.Len()-20], "without a trailer"},
		"not newc":      {append([]byte("070707"), buf.Bytes()[6:]...), "magic"},
		"empty":         {nil, "without a trailer"},
		"no trailer":    {buf.Bytes()[:len(buf.Bytes())-headerLen-12], "without a trailer"},
		"bad field":     {append([]byte(Magic+"zzzzzzzz"), buf.Bytes()[14:]...), "field 0"},
		"cut in data":   {buf.Bytes()[:headerLen*2+8+4], ""},
		"cut in a name": {buf.Bytes()[:headerLen+1], ""},
	} {
		_, err := ReadAll(bytes.NewReader(tc.archive))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}
