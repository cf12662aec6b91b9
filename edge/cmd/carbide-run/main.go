// Command carbide-run runs all of Carbide on one machine for a lab:
// carbide-api on the embedded store, then carbide-dhcp, carbide-pxe,
// carbide-dns and carbide-bmc, with one log stream; Ctrl-C stops them all.
// `carbide-run lab` boots a virtual rack of QEMU VMs on the lab network of
// a running carbide-run. See docs/run.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/carbide-dev/carbide/edge/internal/devstack"
	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "carbide-run:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "lab" {
		return runLab(ctx, args[1:])
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := devstack.Config{Root: os.Geteuid() == 0}
	fs := flag.NewFlagSet("carbide-run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: carbide-run [flags]      (runs carbide-api and the edge daemons; Ctrl-C stops them)")
		fmt.Fprintln(fs.Output(), "       carbide-run lab [flags]  (boots a virtual rack on the lab network of a running carbide-run)")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.DataDir, "data-dir", env("CARBIDE_DATA_DIR", "./carbide-data"), "directory of the embedded store and the development PKI ($CARBIDE_DATA_DIR)")
	fs.StringVar(&cfg.BinDir, "bin-dir", filepath.Dir(exe), "directory of carbide-api, carbide-dhcp, carbide-pxe, carbide-dns and carbide-bmc")
	fs.StringVar(&cfg.ArtifactsDir, "artifacts-dir", ".build/artifacts", "what carbide-pxe serves: the discovery image in scout/ (make scout), OS images beside it")
	fs.StringVar(&cfg.Interface, "interface", os.Getenv("CARBIDE_INTERFACE"), "network interface DHCP, TFTP and DNS serve ($CARBIDE_INTERFACE); empty: as root, a lab network in a namespace of its own")
	fs.StringVar(&cfg.Netns, "netns", "carbide", "name of the network namespace of the lab network")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:1079", "host address the API is reached at")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (only `lab` is a subcommand)", fs.Args())
	}
	return devstack.Run(ctx, cfg, os.Stdout)
}

func runLab(ctx context.Context, args []string) error {
	machines, err := strconv.Atoi(env("LAB_MACHINES", "3"))
	if err != nil {
		return fmt.Errorf("LAB_MACHINES=%q: want a number of machines", os.Getenv("LAB_MACHINES"))
	}
	cfg := devstack.LabConfig{TTY: isTerminal(os.Stdout)}
	fs := flag.NewFlagSet("carbide-run lab", flag.ContinueOnError)
	fs.StringVar(&cfg.DataDir, "data-dir", env("CARBIDE_DATA_DIR", "./carbide-data"), "data directory of the running carbide-run ($CARBIDE_DATA_DIR)")
	fs.IntVar(&cfg.Machines, "machines", machines, "how many VMs ($LAB_MACHINES)")
	fs.StringVar(&cfg.Accel, "accel", env("LAB_ACCEL", "auto"), "QEMU accelerator: kvm, tcg, or auto: kvm when /dev/kvm works and this host is not a VM itself ($LAB_ACCEL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return devstack.RunLab(ctx, cfg, os.Stdout)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// isTerminal reports whether f is a terminal, where the live view is
// redrawn in place.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
