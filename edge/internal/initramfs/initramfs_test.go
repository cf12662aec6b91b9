package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/edge/internal/cpio"
	"github.com/google/go-cmp/cmp"
)

const release = "6.1.0-99-test-amd64"

// fakePackage lays out an unpacked kernel package in a temporary
// directory: the kernel, modules (each file holds its own name), and
// modules.dep, modules.builtin and modules.softdep as depmod writes them.
// Files whose name ends in .xz or .gz are compressed.
func fakePackage(t *testing.T, dep string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-"+release, []byte("kernel image"))
	write("boot/config-"+release, []byte("CONFIG_X=y\n"))
	write(filepath.Join("lib/modules", release, "modules.dep"), []byte(dep))
	write(filepath.Join("lib/modules", release, "modules.builtin"), []byte("kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/nvme/host/nvme.ko\n"))
	write(filepath.Join("lib/modules", release, "modules.softdep"),
		[]byte("# Soft dependencies extracted from modules themselves.\nsoftdep virtio_blk pre: blk-helper crc-alias post: virtio_net\n"))
	for line := range strings.Lines(dep) {
		file, _, _ := strings.Cut(line, ":")
		content := []byte("module " + ModuleName(file))
		switch {
		case strings.HasSuffix(file, ".gz"):
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(content)
			zw.Close()
			write(filepath.Join("lib/modules", release, file), b.Bytes())
		case strings.HasSuffix(file, ".xz"):
			xz, err := exec.LookPath("xz")
			if err != nil {
				t.Fatal("xz not found: this test compresses a module with it (apt-get install xz-utils)")
			}
			cmd := exec.Command(xz, "-c", "--check=crc32")
			cmd.Stdin = bytes.NewReader(content)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("xz: %v", err)
			}
			write(filepath.Join("lib/modules", release, file), out)
		default:
			write(filepath.Join("lib/modules", release, file), content)
		}
	}
	return dir
}

// Lines of modules.dep as Debian's 6.1 cloud kernel has them (virtio
// part), in depmod's order: each module's whole closure, nearest first.
const virtioDep = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/block/blk-helper.ko.gz:
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
`

func TestResolve(t *testing.T) {
	t.Parallel()
	ix, err := LoadModuleIndex(filepath.Join(fakePackage(t, virtioDep), "lib/modules", release))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		wanted []string
		want   Resolution
	}{
		"closure in load order": {
			wanted: []string{"virtio_pci", "virtio_net"},
			want: Resolution{Files: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
				"kernel/net/core/failover.ko",
				"kernel/drivers/net/net_failover.ko",
				"kernel/drivers/net/virtio_net.ko",
			}},
		},
		"dependency wanted after its user": {
			wanted: []string{"virtio_net", "virtio_ring", "failover"},
			want: Resolution{Files: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/net/core/failover.ko",
				"kernel/drivers/net/net_failover.ko",
				"kernel/drivers/net/virtio_net.ko",
			}},
		},
		"soft pre-dependency that is a file; alias skipped; post ignored": {
			wanted: []string{"virtio_blk"},
			want: Resolution{Files: []string{
				"kernel/block/blk-helper.ko.gz",
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/block/virtio_blk.ko.xz",
			}},
		},
		"dashes and underscores, built in, missing, duplicates": {
			wanted: []string{"sd-mod", "nvme", "nvme_core", "e1000e", "sd_mod", " ", "ahci"},
			want: Resolution{
				Files: []string{
					"kernel/drivers/scsi/scsi_mod.ko",
					"kernel/drivers/scsi/sd_mod.ko",
				},
				Builtin: []string{"nvme", "nvme_core"},
				Missing: []string{"e1000e", "ahci"},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ix.Resolve(tc.wanted)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("Resolve(%q) (-want +got):\n%s", tc.wanted, diff)
			}
		})
	}
}

func TestLoadModuleIndexErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		dep  *string // nil: no modules.dep
		want string
	}{
		"no modules.dep":        {want: "depmod"},
		"line without a colon":  {dep: ptr("kernel/a.ko\n"), want: "has no ':'"},
		"unknown dependency":    {dep: ptr("kernel/a.ko: kernel/b.ko\n"), want: "has no line of its own"},
		"cycle is found later":  {dep: ptr("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"), want: ""},
		"comments and blank ok": {dep: ptr("# comment\n\nkernel/a.ko:\n"), want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.dep != nil {
				if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(*tc.dep), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadModuleIndex(dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestResolveCycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dep := "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Resolve([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle: kernel/a.ko -> kernel/b.ko -> kernel/a.ko") {
		t.Fatalf("got %v, want the cycle named", err)
	}
}

func ptr[T any](v T) *T { return &v }

// elfExecutable returns a minimal x86-64 ELF executable: the header and
// one PT_LOAD program header, plus PT_INTERP when dynamic.
func elfExecutable(dynamic bool) []byte {
	le := binary.LittleEndian
	phnum := uint16(1)
	if dynamic {
		phnum = 2
	}
	b := []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b = le.AppendUint16(b, uint16(elf.ET_EXEC))
	b = le.AppendUint16(b, uint16(elf.EM_X86_64))
	b = le.AppendUint32(b, 1)        // version
	b = le.AppendUint64(b, 0x401000) // entry
	b = le.AppendUint64(b, 64)       // program headers right after the header
	b = le.AppendUint64(b, 0)        // no section headers
	b = le.AppendUint32(b, 0)        // flags
	b = le.AppendUint16(b, 64)       // header size
	b = le.AppendUint16(b, 56)       // program header size
	b = le.AppendUint16(b, phnum)
	b = le.AppendUint16(b, 64) // section header size
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	prog := func(typ elf.ProgType, off, size uint64) {
		b = le.AppendUint32(b, uint32(typ))
		b = le.AppendUint32(b, uint32(elf.PF_R|elf.PF_X))
		b = le.AppendUint64(b, off)
		b = le.AppendUint64(b, 0x400000+off)
		b = le.AppendUint64(b, 0x400000+off)
		b = le.AppendUint64(b, size)
		b = le.AppendUint64(b, size)
		b = le.AppendUint64(b, 0x1000)
	}
	end := uint64(64 + 56*int(phnum))
	prog(elf.PT_LOAD, 0, end+16)
	if dynamic {
		prog(elf.PT_INTERP, end, 16)
	}
	return append(b, "/lib/ld-x.so.2\x00\x00"...)
}

func TestBuild(t *testing.T) {
	t.Parallel()
	pkg := fakePackage(t, virtioDep)
	scout := filepath.Join(t.TempDir(), "carbide-scout")
	if err := os.WriteFile(scout, elfExecutable(false), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "artifacts")
	opts := Options{KernelDir: pkg, Scout: scout, OutDir: out, CABundle: ca,
		Modules: []string{"virtio_net", "virtio_blk", "nvme", "e1000e"}}
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Release != release || res.Kernel != filepath.Join(out, "vmlinuz") || res.Initramfs != filepath.Join(out, "scout.cpio.gz") {
		t.Errorf("result %+v", res)
	}
	if diff := cmp.Diff([]string{"nvme"}, res.Modules.Builtin); diff != "" {
		t.Errorf("built in (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"e1000e"}, res.Modules.Missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(res.Kernel); err != nil || string(b) != "kernel image" {
		t.Errorf("vmlinuz: %q, %v", b, err)
	}

	archive, err := os.ReadFile(res.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := cpio.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]cpio.Entry{}
	for _, e := range entries {
		files[e.Name] = e
	}
	mods := "/lib/modules/" + release + "/kernel/"
	wantList := strings.Join([]string{
		mods + "drivers/virtio/virtio_ring.ko",
		mods + "drivers/virtio/virtio.ko",
		mods + "net/core/failover.ko",
		mods + "drivers/net/net_failover.ko",
		mods + "drivers/net/virtio_net.ko",
		mods + "block/blk-helper.ko",
		mods + "drivers/block/virtio_blk.ko",
	}, "\n") + "\n"
	if diff := cmp.Diff(wantList, string(files["etc/scout/modules"].Data)); diff != "" {
		t.Errorf("module list (-want +got):\n%s", diff)
	}
	for line := range strings.Lines(wantList) {
		p := strings.TrimPrefix(strings.TrimSpace(line), "/")
		e, ok := files[p]
		if !ok {
			t.Errorf("%s is listed but not in the archive", p)
			continue
		}
		// Compressed modules are stored uncompressed.
		if want := "module " + ModuleName(p); string(e.Data) != want {
			t.Errorf("%s holds %q, want %q", p, e.Data, want)
		}
	}
	checks := map[string]struct {
		mode         uint32
		major, minor uint32
		data         string
	}{
		"init":                              {mode: cpio.TypeRegular | 0o755, data: string(elfExecutable(false))},
		"dev/console":                       {mode: cpio.TypeChar | 0o600, major: 5, minor: 1},
		"dev/null":                          {mode: cpio.TypeChar | 0o666, major: 1, minor: 3},
		"tmp":                               {mode: cpio.TypeDir | 0o1777},
		"proc":                              {mode: cpio.TypeDir | 0o555},
		"etc/scout/kernel-release":          {mode: cpio.TypeRegular | 0o644, data: release + "\n"},
		"etc/ssl/certs/ca-certificates.crt": {mode: cpio.TypeRegular | 0o644, data: "-----BEGIN CERTIFICATE-----\n"},
	}
	for name, want := range checks {
		e, ok := files[name]
		if !ok {
			t.Errorf("%s is not in the archive", name)
			continue
		}
		if e.Mode != want.mode || e.RdevMajor != want.major || e.RdevMinor != want.minor || string(e.Data) != want.data {
			t.Errorf("%s: mode %o dev %d:%d data %q; want mode %o dev %d:%d data %q",
				name, e.Mode, e.RdevMajor, e.RdevMinor, e.Data, want.mode, want.major, want.minor, want.data)
		}
	}
	if _, ok := files["lib/modules/"+release+"/kernel/drivers/scsi/sd_mod.ko"]; ok {
		t.Error("sd_mod is in the archive but was not wanted")
	}

	// The same inputs give the same bytes.
	if _, err := Build(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(res.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(archive, again) {
		t.Error("a second build of the same inputs gave a different initramfs")
	}
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	scout := filepath.Join(dir, "carbide-scout")
	dynamic := filepath.Join(dir, "dynamic")
	text := filepath.Join(dir, "script")
	for p, b := range map[string][]byte{scout: elfExecutable(false), dynamic: elfExecutable(true), text: []byte("#!/bin/sh\n")} {
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	twoKernels := fakePackage(t, virtioDep)
	if err := os.WriteFile(filepath.Join(twoKernels, "boot/vmlinuz-7.0"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noModules := t.TempDir()
	if err := os.MkdirAll(filepath.Join(noModules, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(noModules, "boot/vmlinuz-"+release), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noDep := fakePackage(t, virtioDep)
	if err := os.Remove(filepath.Join(noDep, "lib/modules", release, "modules.dep")); err != nil {
		t.Fatal(err)
	}
	unknownType := fakePackage(t, "kernel/a.ko.lz4:\n")
	tests := map[string]struct {
		opts Options
		want string
	}{
		"nothing given":    {opts: Options{}, want: "run scripts/fetch-kernel"},
		"dynamic scout":    {opts: Options{KernelDir: unknownType, Scout: dynamic, OutDir: t.TempDir()}, want: "linked dynamically: build it with CGO_ENABLED=0"},
		"script as scout":  {opts: Options{KernelDir: unknownType, Scout: text, OutDir: t.TempDir()}, want: "not an ELF executable"},
		"no scout":         {opts: Options{KernelDir: twoKernels, Scout: "/nonexistent/scout", OutDir: t.TempDir()}, want: "scout binary"},
		"not a package":    {opts: Options{KernelDir: t.TempDir(), Scout: scout, OutDir: t.TempDir()}, want: "no boot/vmlinuz-*"},
		"two kernels":      {opts: Options{KernelDir: twoKernels, Scout: scout, OutDir: t.TempDir()}, want: "several kernels"},
		"no module dir":    {opts: Options{KernelDir: noModules, Scout: scout, OutDir: t.TempDir()}, want: "no lib/modules/" + release},
		"no modules.dep":   {opts: Options{KernelDir: noDep, Scout: scout, OutDir: t.TempDir()}, want: "depmod -b"},
		"unknown compress": {opts: Options{KernelDir: unknownType, Scout: scout, OutDir: t.TempDir(), Modules: []string{"a.ko.lz4"}}, want: "unknown file type"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Build(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
