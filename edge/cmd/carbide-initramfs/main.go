// Command carbide-initramfs builds Carbide's discovery image from an
// unpacked Debian kernel package and the carbide-scout binary: vmlinuz and
// scout.cpio.gz. See package initramfs and docs/scout.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/initramfs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-initramfs:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-initramfs --kernel-dir .build/kernel/current --scout carbide-scout --out DIR [flags]

carbide-initramfs writes DIR/vmlinuz, the kernel of an unpacked Debian kernel
package (scripts/fetch-kernel unpacks one), and DIR/scout.cpio.gz, an
initramfs whose /init is the carbide-scout binary (build it with
CGO_ENABLED=0), with the kernel modules it loads. The modules' dependencies
and load order come from the package's lib/modules/<release>/modules.dep.
Wanted modules the package lacks are listed, and left out.

Default modules:
  bus:  %s
  NIC:  %s
  disk: %s
  IPMI: %s

Flags:
`

// listFlag is a comma-separated, repeatable list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("carbide-initramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage,
			strings.Join(initramfs.BusModules, " "), strings.Join(initramfs.NICModules, " "),
			strings.Join(initramfs.DiskModules, " "), strings.Join(initramfs.IPMIModules, " "))
		fs.PrintDefaults()
	}
	var (
		opts    initramfs.Options
		modules listFlag
		extra   listFlag
	)
	fs.StringVar(&opts.KernelDir, "kernel-dir", ".build/kernel/current", "unpacked kernel package (dpkg -x)")
	fs.StringVar(&opts.Scout, "scout", "", "the carbide-scout binary, linked statically")
	fs.StringVar(&opts.OutDir, "out", "", "output directory")
	fs.StringVar(&opts.CABundle, "ca-bundle", "", "PEM file of trusted CAs to put at "+initramfs.CABundlePath+
		" (for an agent configuration without ca_pem)")
	fs.Var(&modules, "modules", "wanted modules, comma-separated, instead of the default list")
	fs.Var(&extra, "add-modules", "modules wanted besides the default list (or --modules)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	if len(modules) == 0 {
		modules = initramfs.DefaultModules()
	}
	opts.Modules = append(modules, extra...)

	res, err := initramfs.Build(ctx, opts)
	if err != nil {
		return err
	}
	names := make([]string, len(res.Modules.Files))
	for i, f := range res.Modules.Files {
		names[i] = initramfs.ModuleName(f)
	}
	fmt.Fprintf(stdout, "kernel %s\n", res.Release)
	fmt.Fprintf(stdout, "modules in load order (%d): %s\n", len(names), strings.Join(names, " "))
	if len(res.Modules.Builtin) > 0 {
		fmt.Fprintf(stdout, "built into the kernel (%d): %s\n", len(res.Modules.Builtin), strings.Join(res.Modules.Builtin, " "))
	}
	if len(res.Modules.Missing) > 0 {
		fmt.Fprintf(stdout, "missing from the package, left out (%d): %s\n", len(res.Modules.Missing), strings.Join(res.Modules.Missing, " "))
	}
	for _, p := range []string{res.Kernel, res.Initramfs} {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%.1f MiB)\n", p, float64(fi.Size())/(1<<20))
	}
	return nil
}
