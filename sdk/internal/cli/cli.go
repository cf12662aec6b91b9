// Package cli is the carbide command-line tool: a noun-verb command for
// every RPC of the Carbide API (carbide machine list, carbide segment get
// rack1), built from the API's protobuf descriptors so that each request
// field is a flag, with names accepted wherever ids are, table, wide,
// JSON and YAML output, named contexts in a config file, shell completion,
// a watch of changes and --wait with live progress.
package cli

//go:generate go run ./gendocs -proto ../../../proto -out protodocs_gen.go

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/spf13/cobra"
)

// app is one run of the tool: its streams and global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	configPath string
	context    string
	over       carbide.Config // connection settings given as flags
	output     string

	client *carbide.Client
}

// Run runs the tool with args (without the program name) and returns the
// process's exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	if isCobraUsage(err) {
		err = &usageError{err}
	}
	msg := err.Error()
	if _, direct := err.(*connect.Error); direct {
		// The API's own error: with its violations, field by field.
		if e, ok := carbide.AsError(err); ok {
			msg = e.Error()
		}
	}
	fmt.Fprintf(stderr, "carbide: %s\n", msg)
	code := exitCode(err)
	if code == ExitUsage {
		fmt.Fprintln(stderr, "Run 'carbide --help' (or the command with --help) for usage.")
	}
	return code
}

// isCobraUsage recognises the errors cobra itself returns for a bad
// command line.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires ", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

const rootLong = `carbide drives the Carbide bare-metal provisioning API: machines, network
segments, address leases, OS images, instances, BMCs and the audit log.

Every API call has a command, noun first: carbide machine list, carbide
segment create, carbide instance delete. Request fields are flags (see each
command's --help), or give the whole request with -f file.json|yaml.
Wherever an id is asked for, a name works too: a segment's name, a machine's
or an instance's hostname, an image's name or name:version.

Connection settings come from the config file's current context (see
carbide config --help), then CARBIDE_* environment variables
(CARBIDE_ENDPOINT, CARBIDE_CA_CERT, CARBIDE_CLIENT_CERT, CARBIDE_CLIENT_KEY,
CARBIDE_TOKEN, CARBIDE_TOKEN_COMMAND, CARBIDE_PROTOCOL, CARBIDE_CONTEXT,
CARBIDE_CONFIG), then the flags below.

` + exitCodesHelp

// newRoot builds the command tree.
func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "carbide",
		Short:         "Command-line tool of the Carbide bare-metal provisioning API",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  # Point carbide at an API started with carbide-api --dev --data-dir ./data
  carbide config set-context lab --endpoint https://127.0.0.1:1079 \
    --ca-cert ./data/pki/ca.crt --client-cert ./data/pki/admin.crt --client-key ./data/pki/admin.key
  carbide machine list --state ready
  carbide instance create --hostname web1 --image-id debian:12 --selector-label rack=r1 --wait`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(formats, a.output) {
				return usageErrorf("-o %s: want one of %s", a.output, strings.Join(formats, ", "))
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", carbide.DefaultConfigPath(), "config file with named contexts ($CARBIDE_CONFIG)")
	pf.StringVar(&a.context, "context", "", "context of the config file to use ($CARBIDE_CONTEXT; default: its current-context)")
	pf.StringVar(&a.over.Endpoint, "endpoint", "", "API base URL, e.g. https://carbide.example:1079 ($CARBIDE_ENDPOINT)")
	pf.StringVar(&a.over.CACert, "ca-cert", "", "CA bundle (PEM) that signs the API's certificate ($CARBIDE_CA_CERT)")
	pf.StringVar(&a.over.ClientCert, "client-cert", "", "client certificate (PEM) for mutual TLS ($CARBIDE_CLIENT_CERT)")
	pf.StringVar(&a.over.ClientKey, "client-key", "", "key of the client certificate ($CARBIDE_CLIENT_KEY)")
	pf.StringVar(&a.over.Token, "token", "", "bearer token ($CARBIDE_TOKEN; prefer --token-command, which keeps it out of the shell history)")
	pf.StringVar(&a.over.TokenCommand, "token-command", "", "command whose output is the bearer token, run with sh -c ($CARBIDE_TOKEN_COMMAND)")
	pf.StringVar(&a.over.Protocol, "protocol", "", "wire protocol: connect (default), grpc or grpc-web ($CARBIDE_PROTOCOL)")
	pf.StringVarP(&a.output, "output", "o", formatTable, "output format: table, wide, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion(formats...))
	_ = root.RegisterFlagCompletionFunc("protocol", fixedCompletion("connect", "grpc", "grpc-web"))
	_ = root.RegisterFlagCompletionFunc("context", a.completeContexts)

	root.AddGroup(&cobra.Group{ID: "api", Title: "API commands:"}, &cobra.Group{ID: "daemon", Title: "Calls the daemons make (for debugging and tests):"}, &cobra.Group{ID: "tool", Title: "Other commands:"})
	for _, sd := range services {
		root.AddCommand(newNounCommand(a, sd))
	}
	watch := newWatchCommand(a)
	watch.GroupID = "api"
	root.AddCommand(watch)
	cfg := newConfigCommand(a)
	cfg.GroupID = "tool"
	root.AddCommand(cfg)
	root.SetHelpCommandGroupID("tool")
	root.SetCompletionCommandGroupID("tool")
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Example = "  # bash, for this shell\n  source <(carbide completion bash)\n  # zsh, for every new shell\n  carbide completion zsh > \"${fpath[1]}/_carbide\"\n  # fish\n  carbide completion fish | source"
			for _, sub := range c.Commands() {
				sub.Example = fmt.Sprintf("  carbide completion %s", sub.Name())
			}
		}
		if c.Name() == "help" {
			c.Example = "  carbide help machine list"
		}
	}
	return root
}

// fixedCompletion completes a flag from a fixed list.
func fixedCompletion(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// clientConfig is the connection configuration: the config file's
// context, the environment, then the flags.
func (a *app) clientConfig() (carbide.Config, error) {
	cfg, err := carbide.LoadConfig(a.configPath, a.context)
	if err != nil {
		return carbide.Config{}, &usageError{err}
	}
	return cfg.Merge(a.over), nil
}

// getClient builds the API client once.
func (a *app) getClient() (*carbide.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	cfg, err := a.clientConfig()
	if err != nil {
		return nil, err
	}
	c, err := cfg.NewClient()
	if err != nil {
		return nil, &usageError{err}
	}
	a.client = c
	return c, nil
}

var errNoContext = errors.New("no current context: set one with carbide config use-context NAME")
