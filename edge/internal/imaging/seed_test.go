package imaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// seedFixture is what a tenant's instance would get.
func seedFixture() map[string][]byte {
	user := "#cloud-config\nhostname: node-01\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample carbide\nwrite_files:\n  - path: /etc/blob\n    content: |\n"
	for i := range 200 { // several clusters
		user += fmt.Sprintf("      %x\n", randomBytes(uint64(i)+10, 40))
	}
	return map[string][]byte{
		"meta-data":      []byte("instance-id: 6c1d7c1e-0b6e-4b1a-9d7e-000000000001\nlocal-hostname: node-01\n"),
		"user-data":      []byte(user),
		"network-config": []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"),
		"vendor-data":    {},
	}
}

// imageOnDisk copies the image file to the start of a new disk of size
// bytes, as Write would.
func imageOnDisk(t *testing.T, image string, size int64) string {
	t.Helper()
	disk := newDisk(t, size)
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(readFile(t, image), 0); err != nil {
		t.Fatal(err)
	}
	return disk
}

// checkSeed checks with the real tools that the seed partition holds a
// clean FAT filesystem labelled CIDATA with files.
func checkSeed(t *testing.T, disk string, seed Seed, files map[string][]byte) {
	t.Helper()
	blkid := needTool(t, "blkid", "util-linux")
	fsck := needTool(t, "fsck.vfat", "dosfstools")
	mcopy := needTool(t, "mcopy", "mtools")
	mdir := needTool(t, "mdir", "mtools")

	out := run(t, nil, blkid, "-p", "-O", fmt.Sprint(seed.Offset), disk)
	if !strings.Contains(out, `LABEL="CIDATA"`) || !strings.Contains(out, `TYPE="vfat"`) || !strings.Contains(out, `VERSION="FAT16"`) {
		t.Errorf("blkid at the seed's offset: %s; want LABEL=CIDATA TYPE=vfat VERSION=FAT16", out)
	}
	part := filepath.Join(t.TempDir(), "seed.img")
	if err := os.WriteFile(part, readFile(t, disk)[seed.Offset:seed.Offset+seed.Size], 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr(fsck, "-n", "-v", part); err != nil || strings.Contains(out, "differ") {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
	mtools := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(mtools(mdir, "-b", "-i", part, "::")), "\n") {
		names = append(names, strings.TrimPrefix(l, "::/"))
	}
	var want []string
	for n := range files {
		want = append(want, n)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("mdir lists %q, want %q", names, want)
	}
	dir := t.TempDir()
	for n, b := range files {
		mtools(mcopy, "-n", "-i", part, "::"+n, filepath.Join(dir, n))
		if got := readFile(t, filepath.Join(dir, n)); !bytes.Equal(got, b) {
			t.Errorf("%s read back with mcopy: %d bytes, not the %d written", n, len(got), len(b))
		}
	}
}

// sfdiskJSON is what the tests read of sfdisk --json.
type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func readSfdisk(t *testing.T, disk string) sfdiskJSON {
	t.Helper()
	var v sfdiskJSON
	if err := json.Unmarshal([]byte(run(t, nil, needTool(t, "sfdisk", "fdisk"), "--json", disk)), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAddSeedMBR(t *testing.T) {
	t.Parallel()
	sfdisk := needTool(t, "sfdisk", "fdisk")
	image := newDisk(t, 24<<20)
	run(t, []byte("label: dos\n,20MiB,L\n"), sfdisk, "-q", image)
	disk := imageOnDisk(t, image, 64<<20)
	files := seedFixture()
	seed, err := AddSeed(disk, files)
	if err != nil {
		t.Fatalf("AddSeed: %v", err)
	}
	if want := (Seed{Partition: 2, Offset: 21 << 20, Size: 4 << 20}); seed != want {
		t.Errorf("AddSeed = %+v, want %+v", seed, want)
	}
	if out := run(t, nil, sfdisk, "--verify", disk); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk --verify: %s", out)
	}
	pt := readSfdisk(t, disk)
	if n := len(pt.PartitionTable.Partitions); n != 2 {
		t.Fatalf("sfdisk lists %d partitions, want 2", n)
	}
	p := pt.PartitionTable.Partitions[1]
	if p.Start*512 != seed.Offset || p.Size*512 != seed.Size || p.Type != "e" {
		t.Errorf("sfdisk: partition 2 %+v; want start %d size %d type e", p, seed.Offset/512, seed.Size/512)
	}
	checkSeed(t, disk, seed, files)
}

func TestAddSeedGPT(t *testing.T) {
	t.Parallel()
	sgdisk := needTool(t, "sgdisk", "gdisk")
	sfdisk := needTool(t, "sfdisk", "fdisk")
	image := newDisk(t, 24<<20)
	run(t, nil, sgdisk, "-n", "1:0:+8M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:8300", image)
	disk := imageOnDisk(t, image, 64<<20)
	if out, _ := runErr(sgdisk, "-v", disk); strings.Contains(out, "No problems found") {
		t.Fatalf("fixture: sgdisk -v finds no problem with the backup GPT in the middle of the disk:\n%s", out)
	}
	files := seedFixture()
	seed, err := AddSeed(disk, files)
	if err != nil {
		t.Fatalf("AddSeed: %v", err)
	}
	if want := (Seed{Partition: 3, Offset: 24 << 20, Size: 4 << 20}); seed != want {
		t.Errorf("AddSeed = %+v, want %+v", seed, want)
	}
	if out, err := runErr(sgdisk, "-v", disk); err != nil || !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, out)
	}
	if out := run(t, nil, sfdisk, "--verify", disk); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk --verify: %s", out)
	}
	info := run(t, nil, sgdisk, "-i", "3", disk)
	for _, w := range []string{"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 (Microsoft basic data)", "Partition name: 'cidata'",
		fmt.Sprintf("First sector: %d", seed.Offset/512), fmt.Sprintf("Last sector: %d", (seed.Offset+seed.Size)/512-1)} {
		if !strings.Contains(info, w) {
			t.Errorf("sgdisk -i 3 does not say %q:\n%s", w, info)
		}
	}
	// Only the primary table and its backup at the disk's end remain:
	// the old backup header inside the disk is gone.
	out := run(t, nil, needTool(t, "wipefs", "util-linux"), "--noheadings", "--output", "OFFSET,TYPE", disk)
	got := strings.Fields(out)
	want := []string{"0x200", "gpt", fmt.Sprintf("%#x", 64<<20-512), "gpt", "0x1fe", "PMBR"}
	if !slices.Equal(got, want) {
		t.Errorf("wipefs finds %q, want %q", got, want)
	}
	checkSeed(t, disk, seed, files)
}

// TestAddSeedRefused: disks the seed cannot be added to.
func TestAddSeedRefused(t *testing.T) {
	t.Parallel()
	sfdisk := needTool(t, "sfdisk", "fdisk")
	sgdisk := needTool(t, "sgdisk", "gdisk")
	mkfs := needTool(t, "mkfs.ext4", "e2fsprogs")
	tests := map[string]struct {
		make func(disk string)
		want string
	}{
		"bare filesystem": {
			make: func(disk string) { run(t, nil, mkfs, "-q", "-F", disk) },
			want: "no partition table",
		},
		"empty disk": {make: func(string) {}, want: "no partition table"},
		"four primaries": {
			make: func(disk string) { run(t, []byte("label: dos\n,4MiB\n,4MiB\n,4MiB\n,4MiB\n"), sfdisk, "-q", disk) },
			want: "all four primary",
		},
		"MBR full": {
			make: func(disk string) { run(t, []byte("label: dos\n,\n"), sfdisk, "-q", disk) },
			want: "no room",
		},
		"GPT full": {
			make: func(disk string) { run(t, nil, sgdisk, "-n", "1:0:0", disk) },
			want: "no room",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			disk := newDisk(t, 32<<20)
			tt.make(disk)
			before := readFile(t, disk)
			_, err := AddSeed(disk, seedFixture())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("AddSeed: %v; want an error saying %q", err, tt.want)
			}
			if !bytes.Equal(readFile(t, disk), before) {
				t.Error("AddSeed changed the disk")
			}
		})
	}
	t.Run("bad name", func(t *testing.T) {
		t.Parallel()
		disk := newDisk(t, 32<<20)
		run(t, []byte("label: dos\n,4MiB\n"), sfdisk, "-q", disk)
		if _, err := AddSeed(disk, map[string][]byte{"a/b": nil}); err == nil || !strings.Contains(err.Error(), "not valid") {
			t.Fatalf("AddSeed: %v; want an error that the name is not valid", err)
		}
	})
}

// TestShortName checks the 8.3 names and the long-name need.
func TestShortName(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		used  []string
		short string
		long  bool
	}{
		"META":           {short: "META       "},
		"README.TXT":     {short: "README  TXT"},
		"meta-data":      {short: "META-D~1   ", long: true},
		"user-data":      {short: "USER-D~1   ", long: true},
		"network-config": {short: "NETWOR~1   ", long: true},
		"readme.txt":     {short: "README~1TXT", long: true},
		"a b.c":          {used: []string{"AB~1    C  "}, short: "AB~2    C  ", long: true},
	}
	for name, tt := range tests {
		used := map[string]bool{}
		for _, u := range tt.used {
			used[u] = true
		}
		s, long := shortName(name, used)
		if string(s) != tt.short || long != tt.long {
			t.Errorf("shortName(%q) = %q, %v; want %q, %v", name, s, long, tt.short, tt.long)
		}
	}
}
