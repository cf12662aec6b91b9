//go:build linux

// Command carbide-scout is Carbide's discovery agent, the /init of the
// discovery image (see package scout and docs/scout.md). As PID 1 it runs
// the discovery flow and never exits.
//
// Run by an operator on a running Linux system it prints that system's
// inventory, as the agent would report it, and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	"github.com/carbide-dev/carbide/edge/internal/scout"
)

func main() {
	if os.Getpid() == 1 {
		scout.Init() // never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-scout:", err)
		os.Exit(1)
	}
}

const usage = `Usage: carbide-scout [--root DIR] [--bmc] [--config-url URL]

carbide-scout is the /init of Carbide's discovery image. Run as PID 1 it
takes its parameters from the kernel command line (carbide.config=<URL>,
carbide.mac=<MAC>, or carbide.inventory=print) and never exits.

Run as any other process it prints the inventory of the system it runs on
(or of the /sys and /proc tree below --root), as JSON, and exits; with --bmc
it also asks the BMC for its address through /dev/ipmi0 (root only).

With --config-url it instead reports that inventory as the discovery agent
does, with the configuration at URL (the carbide.config URL of the
machine's iPXE script, fetched from the machine's leased address), and
follows the API's instructions until interrupted, without ever powering
the system off or rebooting it.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("carbide-scout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	root := fs.String("root", "/", "directory holding the sys and proc trees to read")
	bmc := fs.Bool("bmc", false, "ask the BMC for its address through "+"<root>/dev/ipmi0")
	configURL := fs.String("config-url", "", "report the inventory with the agent configuration at this URL, and follow the API's instructions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	if *configURL != "" {
		if _, err := scout.ParseCmdline(agentconfig.ParamConfig + "=" + *configURL); err != nil {
			return fmt.Errorf("--config-url: %w", err)
		}
		scout.NewProcessAgent(scout.NewLogger(stderr), *root, *configURL).Run(ctx)
		return nil
	}
	c := &scout.Collector{Root: *root}
	if *bmc {
		c.BMCAddress = scout.BMCAddress(*root, 5*time.Second)
	}
	inv, err := c.Collect(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "carbide-scout: inventory incomplete:", err)
	}
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(inv)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(b))
	return err
}
