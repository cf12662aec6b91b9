// Command carbide is the command-line tool of the Carbide API; see
// docs/cli.md or carbide --help.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carbide-dev/carbide/sdk/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
