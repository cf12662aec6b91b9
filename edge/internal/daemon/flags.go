package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewFlagSet returns the flag set of the daemon name: parse errors are
// returned, not fatal, and --help prints usage and then the flags to
// stderr.
func NewFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// Parse sets the flags of fs from the environment (see [EnvDefaults]) and
// then from args, so that the command line wins, and refuses positional
// arguments. It leaves checking the values to the daemon's Config.
func Parse(fs *flag.FlagSet, envPrefix string, args []string, lookupEnv func(string) (string, bool)) error {
	if err := EnvDefaults(fs, envPrefix, lookupEnv); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	return nil
}

// EnvSetter is a flag value that the environment sets through SetEnv
// instead of Set: a list, say, that the command line then replaces rather
// than extends.
type EnvSetter interface {
	SetEnv(value string) error
}

// EnvDefaults sets each flag of fs from the environment variable prefix
// followed by the flag's name in upper case with - as _ (--pki-dir from
// CARBIDE_DHCP_PKI_DIR for the prefix CARBIDE_DHCP_), when that is set.
// It reports every value that does not parse, naming its variable.
func EnvDefaults(fs *flag.FlagSet, prefix string, lookupEnv func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := lookupEnv(name)
		if !ok {
			return
		}
		set := f.Value.Set
		if e, ok := f.Value.(EnvSetter); ok {
			set = e.SetEnv
		}
		if err := set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// LogFlags are the --log-level and --log-format flags every daemon has.
type LogFlags struct {
	level, format string
}

// AddLogFlags defines --log-level (info), described by levelUsage, and
// --log-format (text) on fs.
func AddLogFlags(fs *flag.FlagSet, levelUsage string) *LogFlags {
	l := &LogFlags{}
	fs.StringVar(&l.level, "log-level", "info", levelUsage)
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	return l
}

// Logger returns the logger the flags ask for, writing to w.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(w, l.level, l.format)
}

// NewLogger returns a logger writing to w at level (debug, info, warn or
// error) in format (text or json).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format: %q is not text or json", format)
}

// ListFlag is a repeatable flag whose values may also be comma-separated
// (--listen a,b --listen c). The list it starts with (a default) and the
// values from the environment are replaced by the first value on the
// command line, not added to.
type ListFlag struct {
	values *[]string
	// replace is set while the list holds a default or the
	// environment's values.
	replace bool
}

var _ EnvSetter = (*ListFlag)(nil)

// NewListFlag returns the flag that fills *values, whose current content
// is the default.
func NewListFlag(values *[]string) *ListFlag {
	return &ListFlag{values: values, replace: len(*values) > 0}
}

func (l *ListFlag) String() string {
	if l == nil || l.values == nil {
		return ""
	}
	return strings.Join(*l.values, ",")
}

func (l *ListFlag) Set(s string) error {
	if l.replace {
		*l.values, l.replace = nil, false
	}
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.values = append(*l.values, v)
		}
	}
	return nil
}

// SetEnv sets the list from the environment, for the command line to
// replace.
func (l *ListFlag) SetEnv(s string) error {
	l.replace = true
	if err := l.Set(s); err != nil {
		return err
	}
	l.replace = len(*l.values) > 0
	return nil
}
