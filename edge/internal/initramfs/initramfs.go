// Package initramfs builds the discovery image that Carbide network-boots
// bare machines into: a Debian kernel, copied from an unpacked kernel
// package, and an initramfs whose /init is the discovery agent
// (carbide-scout), with the kernel modules the agent loads and the list
// of them in load order. The layout of the initramfs (ModuleListPath and
// the directories below) is the contract between the builder and the
// agent. docs/scout.md describes the image.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/carbide-dev/carbide/edge/internal/cpio"
)

// Paths inside the initramfs.
const (
	// InitPath is the agent: the kernel runs it as PID 1.
	InitPath = "/init"
	// ModuleListPath lists the modules to load, one absolute path per
	// line, in load order.
	ModuleListPath = "/etc/scout/modules"
	// KernelReleasePath holds the release of the kernel the modules are
	// for (uname -r).
	KernelReleasePath = "/etc/scout/kernel-release"
	// CABundlePath is where Go's crypto/x509 looks for the system's
	// trusted CAs on Linux; the builder puts a bundle there on request.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
)

// Output file names.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "scout.cpio.gz"
)

// The modules the image carries by default, by purpose. Only those the
// kernel package has are included; the others are reported as missing.
var (
	// BusModules drive the buses the other devices sit on, and the
	// virtual machines' random number generator.
	BusModules = []string{"virtio_pci", "virtio_rng"}
	// NICModules are network drivers: virtual NICs, then the common
	// server NICs.
	NICModules = []string{
		"virtio_net", "vmxnet3", "ena", "gve",
		"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice",
		"bnxt_en", "tg3", "mlx4_en", "mlx5_core",
	}
	// DiskModules are storage drivers.
	DiskModules = []string{
		"virtio_blk", "virtio_scsi", "sd_mod", "nvme", "ahci",
		"megaraid_sas", "mpt3sas",
	}
	// IPMIModules give the agent /dev/ipmi0, to ask the BMC for its
	// address.
	IPMIModules = []string{"ipmi_msghandler", "ipmi_devintf", "ipmi_si"}
)

// DefaultModules returns the modules the image carries by default.
func DefaultModules() []string {
	return slices.Concat(BusModules, NICModules, DiskModules, IPMIModules)
}

// Options say what to build from what.
type Options struct {
	// KernelDir is an unpacked Debian kernel package (dpkg -x): it holds
	// boot/vmlinuz-<release> and lib/modules/<release>/ (or
	// usr/lib/modules/<release>/) with modules.dep.
	KernelDir string
	// Scout is the agent binary, linked statically.
	Scout string
	// Modules are the wanted modules by name; nil means DefaultModules.
	Modules []string
	// CABundle, when set, is a PEM file copied to CABundlePath.
	CABundle string
	// OutDir receives KernelFile and InitramfsFile.
	OutDir string
}

// Result describes what Build wrote.
type Result struct {
	// Release is the kernel release, e.g. 6.1.0-56-cloud-amd64.
	Release string
	// Kernel and Initramfs are the paths of the files written.
	Kernel, Initramfs string
	// Modules is the resolution of the wanted modules: the files in
	// load order, and the wanted ones that are built in or missing.
	Modules *Resolution
}

// Build writes the kernel and the initramfs into opts.OutDir. Both are
// written to temporary files and renamed into place, so a failed build
// leaves the previous image as it was. The initramfs is reproducible:
// the same inputs give the same bytes.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	release, vmlinuz, modDir, err := findKernel(opts.KernelDir)
	if err != nil {
		return nil, err
	}
	ix, err := LoadModuleIndex(modDir)
	if err != nil {
		return nil, err
	}
	wanted := opts.Modules
	if wanted == nil {
		wanted = DefaultModules()
	}
	res, err := ix.Resolve(wanted)
	if err != nil {
		return nil, err
	}
	var archive bytes.Buffer
	if err := writeArchive(ctx, &archive, opts, release, modDir, res.Files); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create the output directory: %w", err)
	}
	out := &Result{
		Release:   release,
		Kernel:    filepath.Join(opts.OutDir, KernelFile),
		Initramfs: filepath.Join(opts.OutDir, InitramfsFile),
		Modules:   res,
	}
	kernel, err := os.ReadFile(vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("read the kernel: %w", err)
	}
	if err := writeAtomic(out.Kernel, kernel); err != nil {
		return nil, err
	}
	if err := writeAtomic(out.Initramfs, archive.Bytes()); err != nil {
		return nil, err
	}
	return out, nil
}

func (o Options) validate() error {
	var errs []error
	if o.KernelDir == "" {
		errs = append(errs, errors.New("no kernel package directory: run scripts/fetch-kernel and give its directory"))
	}
	if o.Scout == "" {
		errs = append(errs, errors.New("no scout binary"))
	} else if fi, err := os.Stat(o.Scout); err != nil {
		errs = append(errs, fmt.Errorf("scout binary: %w", err))
	} else if !fi.Mode().IsRegular() {
		errs = append(errs, fmt.Errorf("scout binary %s is not a regular file", o.Scout))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("no output directory"))
	}
	return errors.Join(errs...)
}

// findKernel finds the kernel image and the module directory of the one
// kernel release in an unpacked package.
func findKernel(dir string) (release, vmlinuz, modDir string, err error) {
	images, err := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if err != nil {
		return "", "", "", err
	}
	switch len(images) {
	case 0:
		return "", "", "", fmt.Errorf("%s holds no boot/vmlinuz-*: is it an unpacked kernel package? (scripts/fetch-kernel unpacks one into .build/kernel/current)", dir)
	case 1:
	default:
		return "", "", "", fmt.Errorf("%s holds several kernels (%s): unpack one package per directory", dir, strings.Join(images, ", "))
	}
	vmlinuz = images[0]
	release = strings.TrimPrefix(filepath.Base(vmlinuz), "vmlinuz-")
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		d := filepath.Join(dir, base, release)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return release, vmlinuz, d, nil
		}
	}
	return "", "", "", fmt.Errorf("%s has a kernel %s but no lib/modules/%s", dir, release, release)
}

// writeArchive writes the gzip-compressed initramfs to w.
func writeArchive(ctx context.Context, w io.Writer, opts Options, release, modDir string, files []string) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	scout, err := os.ReadFile(opts.Scout)
	if err != nil {
		return fmt.Errorf("read the scout binary: %w", err)
	}
	if err := checkStatic(opts.Scout, scout); err != nil {
		return err
	}
	// The kernel opens /dev/console for init's stdin, stdout and
	// stderr before devtmpfs is mounted: the node must be in the
	// archive.
	steps := []error{
		cw.WriteFile(InitPath, 0o755, scout),
		cw.Mkdir("dev", 0o755),
		cw.CharDevice("dev/console", 0o600, 5, 1),
		cw.CharDevice("dev/null", 0o666, 1, 3),
		cw.Mkdir("proc", 0o555),
		cw.Mkdir("sys", 0o555),
		cw.Mkdir("run", 0o755),
		cw.Mkdir("tmp", 0o777|os.ModeSticky),
		cw.WriteFile(KernelReleasePath, 0o644, []byte(release+"\n")),
	}
	if err := errors.Join(steps...); err != nil {
		return err
	}
	if opts.CABundle != "" {
		pem, err := os.ReadFile(opts.CABundle)
		if err != nil {
			return fmt.Errorf("read the CA bundle: %w", err)
		}
		if err := cw.WriteFile(CABundlePath, 0o644, pem); err != nil {
			return err
		}
	}
	var list strings.Builder
	for _, f := range files {
		data, name, err := readModule(ctx, filepath.Join(modDir, f))
		if err != nil {
			return err
		}
		target := path.Join("/lib/modules", release, path.Dir(filepath.ToSlash(f)), name)
		if err := cw.WriteFile(target, 0o644, data); err != nil {
			return err
		}
		list.WriteString(target + "\n")
	}
	if err := cw.WriteFile(ModuleListPath, 0o644, []byte(list.String())); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress the initramfs: %w", err)
	}
	return nil
}

// checkStatic fails unless b is a statically linked ELF executable: the
// initramfs has no dynamic loader, and the kernel panics when /init
// cannot run.
func checkStatic(name string, b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("scout binary %s is not an ELF executable: %w", name, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("scout binary %s is an ELF %s, not an executable", name, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("scout binary %s is linked dynamically: build it with CGO_ENABLED=0", name)
		}
	}
	return nil
}

// decompressors are the external programs for compressed modules that
// compress/gzip does not cover, with the Debian package of each.
var decompressors = map[string][2]string{
	".ko.xz":  {"xz", "xz-utils"},
	".ko.zst": {"zstd", "zstd"},
}

// readModule returns the uncompressed contents of a module file and its
// name in the image (with a plain .ko suffix). The agent loads modules
// with finit_module and no flags, so the image carries them uncompressed.
func readModule(ctx context.Context, file string) ([]byte, string, error) {
	base := filepath.Base(file)
	switch {
	case strings.HasSuffix(base, ".ko"):
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, "", fmt.Errorf("read module: %w", err)
		}
		return b, base, nil
	case strings.HasSuffix(base, ".ko.gz"):
		f, err := os.Open(file)
		if err != nil {
			return nil, "", fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, "", fmt.Errorf("decompress %s: %w", file, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, "", fmt.Errorf("decompress %s: %w", file, err)
		}
		return b, strings.TrimSuffix(base, ".gz"), nil
	}
	for ext, tool := range decompressors {
		if !strings.HasSuffix(base, ext) {
			continue
		}
		prog, err := exec.LookPath(tool[0])
		if err != nil {
			return nil, "", fmt.Errorf("module %s is compressed and %s is not installed (apt-get install %s)", file, tool[0], tool[1])
		}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, prog, "-d", "-c", file)
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, "", fmt.Errorf("decompress %s with %s: %w: %s", file, tool[0], err, strings.TrimSpace(stderr.String()))
		}
		return b, strings.TrimSuffix(base, ext) + ".ko", nil
	}
	return nil, "", fmt.Errorf("module %s: unknown file type (want .ko, .ko.gz, .ko.xz or .ko.zst)", file)
}

// writeAtomic writes data to a temporary file next to path and renames it
// into place.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
