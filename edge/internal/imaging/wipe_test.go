package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mkfsAt makes an ext4 filesystem of size bytes at off of disk.
func mkfsAt(t *testing.T, disk string, off, size int64) {
	t.Helper()
	run(t, nil, needTool(t, "mkfs.ext4", "e2fsprogs"), "-q", "-F", "-E", fmt.Sprintf("offset=%d", off), disk, fmt.Sprintf("%dk", size>>10))
}

// signaturesAt returns what blkid -p finds at off of disk, "" for
// nothing.
func signaturesAt(t *testing.T, disk string, off int64) string {
	t.Helper()
	out, err := runErr(needTool(t, "blkid", "util-linux"), "-p", "-O", fmt.Sprint(off), disk)
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return "" // blkid's "nothing found"
	}
	if err != nil {
		t.Fatalf("blkid -p -O %d: %v\n%s", off, err, out)
	}
	return strings.TrimSpace(out)
}

const marker = "CARBIDE-MARKER: quick wipe must leave this"

func TestWipeQuick(t *testing.T) {
	t.Parallel()
	sfdisk := needTool(t, "sfdisk", "fdisk")
	sgdisk := needTool(t, "sgdisk", "gdisk")
	wipefs := needTool(t, "wipefs", "util-linux")
	const size = 96 << 20
	tests := map[string]struct {
		make func(disk string)
		// fs are the offsets and sizes of the filesystems made.
		fs [][2]int64
	}{
		"MBR with a logical partition": {
			// p1 1-41 MiB, extended 41-91 MiB holding p5 42-62 MiB.
			make: func(disk string) {
				run(t, []byte("label: dos\n"+disk+"1 : start=2048, size=40MiB, type=83\n"+
					disk+"2 : size=50MiB, type=5\n"+disk+"5 : size=20MiB, type=83\n"), sfdisk, "-q", disk)
			},
			fs: [][2]int64{{1 << 20, 40 << 20}, {42 << 20, 20 << 20}},
		},
		"GPT": {
			make: func(disk string) {
				run(t, nil, sgdisk, "-n", "1:0:+40M", "-n", "2:0:+30M", disk)
			},
			fs: [][2]int64{{1 << 20, 40 << 20}, {41 << 20, 30 << 20}},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			disk := newDisk(t, size)
			tt.make(disk)
			for _, fs := range tt.fs {
				mkfsAt(t, disk, fs[0], fs[1])
			}
			// Prove the fixture: the table and the filesystems are found.
			if out := run(t, nil, wipefs, disk); out == "" {
				t.Fatal("fixture: wipefs finds no partition table")
			}
			for _, fs := range tt.fs {
				if got := signaturesAt(t, disk, fs[0]); !strings.Contains(got, `TYPE="ext4"`) {
					t.Fatalf("fixture: blkid at %d: %q, want ext4", fs[0], got)
				}
			}
			markAt := tt.fs[0][0] + tt.fs[0][1]/2
			writeAt(t, disk, markAt, []byte(marker))

			var pl progressLog
			res, err := Wipe(context.Background(), disk, Quick, pl.add)
			if err != nil {
				t.Fatalf("Wipe: %v", err)
			}
			if out := run(t, nil, wipefs, disk); out != "" {
				t.Errorf("wipefs still finds:\n%s", out)
			}
			if got := signaturesAt(t, disk, 0); got != "" {
				t.Errorf("blkid -p on the disk finds %s", got)
			}
			b := readFile(t, disk)
			for _, fs := range tt.fs {
				if got := signaturesAt(t, disk, fs[0]); got != "" {
					t.Errorf("blkid -p at %d finds %s", fs[0], got)
				}
				if !isZero(b[fs[0]:fs[0]+mib]) || !isZero(b[fs[0]+fs[1]-mib:fs[0]+fs[1]]) {
					t.Errorf("the first or last MiB of the partition at %d is not zero", fs[0])
				}
			}
			if !isZero(b[:mib]) || !isZero(b[size-mib:]) {
				t.Error("the first or last MiB of the disk is not zero")
			}
			if !bytes.Equal(b[markAt:markAt+int64(len(marker))], []byte(marker)) {
				t.Error("the marker in the middle of a partition is gone: a quick wipe wrote more than the regions")
			}
			if res.Method != MethodQuick || res.Regions < 4 || res.Zeroed < 4*mib || res.Zeroed > 12*mib || res.Discarded {
				t.Errorf("WipeResult %+v", res)
			}
			if p, ok := pl.last(PhaseWipe); !ok || p.Done != res.Zeroed || p.Total != res.Zeroed {
				t.Errorf("last progress %+v (%v), want done = total = %d", p, ok, res.Zeroed)
			}
		})
	}
}

func TestWipeFull(t *testing.T) {
	t.Parallel()
	const size = 24<<20 + 4096 // not a multiple of the block size
	disk := writeFile(t, "disk", randomBytes(3, size))
	var pl progressLog
	res, err := Wipe(context.Background(), disk, Full, pl.add)
	if err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	b := readFile(t, disk)
	if len(b) != size || !isZero(b) {
		t.Errorf("after a full wipe the disk has %d bytes, all zero: %v", len(b), isZero(b))
	}
	if want := (WipeResult{Mode: Full, Method: MethodOverwrite, Size: size, Zeroed: size}); res.Duration <= 0 || !cmp.Equal(res, want, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Duration" }, cmp.Ignore())) {
		t.Errorf("WipeResult %+v, want %+v", res, want)
	}
	if p, ok := pl.last(PhaseWipe); !ok || p.Done != size || p.Total != size {
		t.Errorf("last progress %+v (%v)", p, ok)
	}
}

func TestWipeCanceled(t *testing.T) {
	t.Parallel()
	disk := newDisk(t, 16<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, m := range []WipeMode{Quick, Full} {
		if _, err := Wipe(ctx, disk, m, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Wipe %v: %v; want context.Canceled", m, err)
		}
	}
}

func TestQuickRegions(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		size  int64
		parts []extent
		want  []extent
	}{
		"disk only":  {size: 10 * mib, want: []extent{{0, mib}, {9 * mib, mib}}},
		"small disk": {size: mib + 512, want: []extent{{0, mib + 512}}},
		"partitions": {
			size:  100 * mib,
			parts: []extent{{mib, 10 * mib}, {11 * mib, 512 * 1024}, {50 * mib, 60 * mib}},
			want:  []extent{{0, 2 * mib}, {10 * mib, mib + 512*1024}, {50 * mib, mib}, {99 * mib, mib}},
		},
		"beyond the end": {size: 4 * mib, parts: []extent{{3 * mib, 8 * mib}}, want: []extent{{0, mib}, {3 * mib, mib}}},
	}
	for name, tt := range tests {
		if got := quickRegions(tt.size, tt.parts); !cmp.Equal(got, tt.want, cmp.AllowUnexported(extent{})) {
			t.Errorf("%s: quickRegions = %v, want %v", name, got, tt.want)
		}
	}
}

// writeAt writes b at off of the file p.
func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
