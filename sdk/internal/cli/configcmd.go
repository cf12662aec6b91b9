package cli

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// newConfigCommand manages the config file's contexts.
func newConfigCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage the config file's named contexts",
		Long: `Manage the config file (--config, $CARBIDE_CONFIG, else
$XDG_CONFIG_HOME/carbide/config.yaml or ~/.config/carbide/config.yaml).

A context is an endpoint with its CA and credentials: a client certificate
and key, a bearer token, or a command that prints a token (such as
"vault read -field=token secret/carbide"). Paths in the file are relative
to the file's directory. The file is written with mode 0600.`,
		Example: `  carbide config set-context lab --endpoint https://carbide.lab.example:1079 \
    --ca-cert ca.crt --client-cert admin.crt --client-key admin.key
  carbide config set-context prod --endpoint https://carbide.example:1079 \
    --token-command 'idp-cli token --audience carbide'
  carbide config use-context prod
  carbide config get-contexts`,
		Args: noSubcommand,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var makeCurrent bool
	setContext := &cobra.Command{
		Use:   "set-context <name>",
		Short: "Create a context or change its settings",
		Long: `Create the named context, or change the settings given as flags in an
existing one (--endpoint, --ca-cert, --client-cert, --client-key, --token,
--token-command, --protocol). File paths are stored as absolute paths. The
first context becomes the current one; --use makes this one current.`,
		Example: `  carbide config set-context lab --endpoint https://127.0.0.1:1079 \
    --ca-cert ./data/pki/ca.crt --client-cert ./data/pki/admin.crt --client-key ./data/pki/admin.key
  carbide config set-context lab --protocol grpc --use`,
		Args: exactArgs(1, "<name>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := carbide.ReadConfigFile(a.configPath)
			if err != nil {
				return err
			}
			if f.Contexts == nil {
				f.Contexts = map[string]carbide.Config{}
			}
			over := a.over
			for _, p := range []*string{&over.CACert, &over.ClientCert, &over.ClientKey} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			merged := f.Contexts[args[0]].Merge(over)
			f.Contexts[args[0]] = merged
			if makeCurrent || f.CurrentContext == "" {
				f.CurrentContext = args[0]
			}
			if err := f.Write(a.configPath); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "context %q set in %s\n", args[0], a.configPath)
			return nil
		},
	}
	setContext.Flags().BoolVar(&makeCurrent, "use", false, "make it the current context")
	useContext := &cobra.Command{
		Use:               "use-context <name>",
		Short:             "Make a context the current one",
		Example:           "  carbide config use-context prod",
		Args:              exactArgs(1, "<name>"),
		ValidArgsFunction: a.completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := carbide.ReadConfigFile(a.configPath)
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return &exitError{ExitNotFound, fmt.Errorf("no context %q in %s; its contexts are: %s", args[0], a.configPath, strings.Join(contextNames(f), ", "))}
			}
			f.CurrentContext = args[0]
			if err := f.Write(a.configPath); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "current context is %q\n", args[0])
			return nil
		},
	}
	getContexts := &cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts",
		Example: "  carbide config get-contexts",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := carbide.ReadConfigFile(a.configPath)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tENDPOINT\tAUTH")
			for _, n := range contextNames(f) {
				c := f.Contexts[n]
				cur := ""
				if n == f.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, n, orDash(c.Endpoint), authOf(c))
			}
			return tw.Flush()
		},
	}
	currentContext := &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context's name",
		Example: "  carbide config current-context",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := carbide.ReadConfigFile(a.configPath)
			if err != nil {
				return err
			}
			if f.CurrentContext == "" {
				return &exitError{ExitNotFound, errNoContext}
			}
			fmt.Fprintln(a.stdout, f.CurrentContext)
			return nil
		},
	}
	view := &cobra.Command{
		Use:   "view",
		Short: "Print the config file, without secrets",
		Long: `Print the config file as YAML. Tokens are shown as <hidden>; token commands
and file paths are shown as they are (they are not secrets themselves).
With --merged, print only the settings the other commands would use: the
context, then the environment, then the flags.`,
		Example: "  carbide config view\n  carbide config view --merged --context prod",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var doc any
			if merged, _ := cmd.Flags().GetBool("merged"); merged {
				c, err := a.clientConfig()
				if err != nil {
					return err
				}
				doc = hideToken(c)
			} else {
				f, err := carbide.ReadConfigFile(a.configPath)
				if err != nil {
					return err
				}
				for n, c := range f.Contexts {
					f.Contexts[n] = hideToken(c)
				}
				doc = f
			}
			b, err := yaml.Marshal(doc)
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(b)
			return err
		},
	}
	view.Flags().Bool("merged", false, "print the effective settings instead of the file")
	cmd.AddCommand(setContext, useContext, getContexts, currentContext, view)
	return cmd
}

// exactArgs wants n arguments, named name in the error.
func exactArgs(n int, name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usageErrorf("%s takes no arguments", cmd.CommandPath())
		}
		return usageErrorf("%s takes %s", cmd.CommandPath(), name)
	}
}

func hideToken(c carbide.Config) carbide.Config {
	if c.Token != "" {
		c.Token = "<hidden>"
	}
	return c
}

// authOf says how a context authenticates.
func authOf(c carbide.Config) string {
	switch {
	case c.ClientCert != "":
		return "client certificate"
	case c.Token != "":
		return "token"
	case c.TokenCommand != "":
		return "token command"
	}
	return "none"
}

func contextNames(f *carbide.ConfigFile) []string {
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// completeContexts completes context names.
func (a *app) completeContexts(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	f, err := carbide.ReadConfigFile(a.configPath)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return contextNames(f), cobra.ShellCompDirectiveNoFileComp
}
