package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// testList is a list flag that the command line replaces when the
// environment set it, as carbide-dhcp's --interface does.
type testList struct {
	values  []string
	fromEnv bool
}

var _ EnvSetter = (*testList)(nil)

func (l *testList) String() string { return strings.Join(l.values, ",") }

func (l *testList) Set(s string) error {
	if l.fromEnv {
		l.values, l.fromEnv = nil, false
	}
	l.values = append(l.values, s)
	return nil
}

func (l *testList) SetEnv(s string) error {
	l.values, l.fromEnv = strings.Split(s, ","), true
	return nil
}

// testFlags is a daemon's command line in miniature.
type testFlags struct {
	URL     string
	Timeout time.Duration
	Port    int
	files   testList
}

// Files is what --file holds.
func (f *testFlags) Files() []string { return f.files.values }

func newTestFlagSet(stderr io.Writer) (*flag.FlagSet, *testFlags) {
	fs := NewFlagSet("carbide-test", "Usage: carbide-test [flags]\n\nFlags:\n", stderr)
	got := &testFlags{URL: "https://127.0.0.1:1079", Timeout: 2 * time.Second, Port: 67}
	fs.StringVar(&got.URL, "api-url", got.URL, "base URL")
	fs.DurationVar(&got.Timeout, "api-timeout", got.Timeout, "deadline")
	fs.IntVar(&got.Port, "port", got.Port, "UDP port")
	fs.Var(&got.files, "file", "a file; repeat")
	return fs, got
}

func TestParse(t *testing.T) {
	t.Parallel()
	type result struct {
		URL     string
		Timeout time.Duration
		Files   []string
	}
	defaults := result{URL: "https://127.0.0.1:1079", Timeout: 2 * time.Second}
	tests := map[string]struct {
		args []string
		env  map[string]string
		want func(*result)
	}{
		"defaults": {want: func(*result) {}},
		"flags": {
			args: []string{"--api-url", "http://x", "--api-timeout=5s", "--file", "a", "--file", "b"},
			want: func(r *result) { r.URL, r.Timeout, r.Files = "http://x", 5*time.Second, []string{"a", "b"} },
		},
		"environment, named after the flag with - as _": {
			env: map[string]string{"CARBIDE_TEST_API_URL": "http://env", "CARBIDE_TEST_API_TIMEOUT": "1s",
				"CARBIDE_TEST_FILE": "a,b", "CARBIDE_OTHER_API_URL": "http://other", "API_URL": "http://bare"},
			want: func(r *result) { r.URL, r.Timeout, r.Files = "http://env", time.Second, []string{"a", "b"} },
		},
		"the command line wins over the environment": {
			args: []string{"--api-url", "http://flag", "--file", "c"},
			env:  map[string]string{"CARBIDE_TEST_API_URL": "http://env", "CARBIDE_TEST_API_TIMEOUT": "1s", "CARBIDE_TEST_FILE": "a,b"},
			want: func(r *result) { r.URL, r.Timeout, r.Files = "http://flag", time.Second, []string{"c"} },
		},
		"an empty variable is a value": {
			env:  map[string]string{"CARBIDE_TEST_API_URL": ""},
			want: func(r *result) { r.URL = "" },
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fs, f := newTestFlagSet(io.Discard)
			if err := Parse(fs, "CARBIDE_TEST_", tt.args, env(tt.env)); err != nil {
				t.Fatal(err)
			}
			want := defaults
			tt.want(&want)
			got := result{URL: f.URL, Timeout: f.Timeout, Files: f.Files()}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("flags (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		args []string
		env  map[string]string
		want []string // substrings of the error and what was printed
		is   error
	}{
		"help": {args: []string{"--help"}, is: flag.ErrHelp,
			want: []string{"Usage: carbide-test [flags]\n\nFlags:\n  -api-timeout", "-api-url", "base URL"}},
		"bad flag value": {args: []string{"--api-timeout", "soon"}, want: []string{"invalid value", "-api-timeout"}},
		"unknown flag":   {args: []string{"--nope"}, want: []string{"flag provided but not defined: -nope"}},
		"bad environment values, every one named": {
			env:  map[string]string{"CARBIDE_TEST_API_TIMEOUT": "soon", "CARBIDE_TEST_PORT": "x"},
			want: []string{"CARBIDE_TEST_API_TIMEOUT: parse error", "CARBIDE_TEST_PORT: parse error"},
		},
		"stray argument": {args: []string{"eth1"}, want: []string{`unexpected arguments ["eth1"]; see --help`}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			fs, _ := newTestFlagSet(&stderr)
			err := Parse(fs, "CARBIDE_TEST_", tt.args, env(tt.env))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Parse = %v, want %v", err, tt.is)
			}
			out := err.Error() + "\n" + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		level, format string
		wantLevel     slog.Level
		wantErr       string
	}{
		"info text":      {level: "info", format: "text", wantLevel: slog.LevelInfo},
		"debug json":     {level: "debug", format: "json", wantLevel: slog.LevelDebug},
		"warn":           {level: "warn", format: "text", wantLevel: slog.LevelWarn},
		"error":          {level: "error", format: "text", wantLevel: slog.LevelError},
		"bad log level":  {level: "loud", format: "text", wantErr: `log-level: "loud" is not debug, info, warn or error`},
		"bad log format": {level: "info", format: "xml", wantErr: `log-format: "xml" is not text or json`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			l, err := NewLogger(&buf, tt.level, tt.format)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("NewLogger = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if !l.Enabled(ctx, tt.wantLevel) || l.Enabled(ctx, tt.wantLevel-1) {
				t.Errorf("the logger does not log from %s on", tt.wantLevel)
			}
			l.Log(ctx, tt.wantLevel, "hello", "k", "v")
			var m map[string]any
			isJSON := json.Unmarshal(buf.Bytes(), &m) == nil
			if isJSON != (tt.format == "json") || !strings.Contains(buf.String(), "hello") {
				t.Errorf("format %s wrote %q", tt.format, buf.String())
			}
		})
	}
}

func TestLogFlags(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	fs := NewFlagSet("carbide-test", "", &help)
	lf := AddLogFlags(fs, "log level: debug (every packet), info, warn or error")
	if err := Parse(fs, "CARBIDE_TEST_", []string{"--log-format", "json"}, env(map[string]string{"CARBIDE_TEST_LOG_LEVEL": "debug"})); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l, err := lf.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("packet")
	if !strings.HasPrefix(buf.String(), "{") || !strings.Contains(buf.String(), `"msg":"packet"`) {
		t.Errorf("--log-level debug --log-format json logged %q", buf.String())
	}

	fs.Usage()
	for _, want := range []string{"-log-level string\n    \tlog level: debug (every packet), info, warn or error (default \"info\")",
		"-log-format string\n    \tlog format: text or json (default \"text\")"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
}
