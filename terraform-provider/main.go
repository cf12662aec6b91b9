// Command terraform-provider-carbide is Carbide's Terraform provider
// (registry.terraform.io/carbide-dev/carbide). Terraform starts it as a
// plugin; run it with -debug to start it by hand for a debugger, and set
// the TF_REATTACH_PROVIDERS line it prints in Terraform's environment.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/carbide-dev/carbide/terraform-provider/internal/provider"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-carbide:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("terraform-provider-carbide", flag.ContinueOnError)
	debug := fs.Bool("debug", false, "start the provider for a debugger (delve) and print the TF_REATTACH_PROVIDERS value Terraform needs to use it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: provider.Address,
		Debug:   *debug,
	})
}
