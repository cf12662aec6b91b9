package devstack

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, b := range []string{"carbide-api", "carbide-dhcp", "carbide-pxe", "carbide-dns", "carbide-bmc"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	artifacts := t.TempDir()
	if err := os.MkdirAll(filepath.Join(artifacts, "scout"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifacts, "scout", "vmlinuz"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	valid := func() Config {
		return Config{DataDir: "d", BinDir: bin, ArtifactsDir: artifacts, Netns: "carbide", Listen: "127.0.0.1:1079", Root: true}
	}
	tests := map[string]struct {
		edit     func(*Config)
		mode     string
		problems []string
	}{
		"root makes a namespace":        {mode: ModeNetns},
		"an interface is served":        {edit: func(c *Config) { c.Interface = "eth1" }, mode: ModeInterface},
		"without root, the API only":    {edit: func(c *Config) { c.Root = false; c.ArtifactsDir = "/nonexistent" }, mode: ModeAPIOnly},
		"no discovery image":            {edit: func(c *Config) { c.ArtifactsDir = t.TempDir() }, mode: ModeNetns, problems: []string{"make scout"}},
		"a namespace name with a slash": {edit: func(c *Config) { c.Netns = "a/b" }, mode: ModeNetns, problems: []string{"--netns"}},
		"every problem at once": {
			edit:     func(c *Config) { c.DataDir, c.BinDir, c.Listen = "", t.TempDir(), "1079" },
			mode:     ModeNetns,
			problems: []string{"--data-dir", "carbide-api is not in", "carbide-dns is not in", "--listen"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			if tt.edit != nil {
				tt.edit(&c)
			}
			if got := c.Mode(); got != tt.mode {
				t.Errorf("Mode() = %s, want %s", got, tt.mode)
			}
			err := c.Validate()
			if len(tt.problems) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want problems %v", tt.problems)
			}
			for _, p := range tt.problems {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("Validate() = %v, without %q", err, p)
				}
			}
		})
	}
}

func TestLabConfigValidate(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cfg     LabConfig
		problem string
	}{
		"three machines":    {cfg: LabConfig{DataDir: "d", Machines: 3, Accel: "auto"}},
		"no machines":       {cfg: LabConfig{DataDir: "d", Machines: 0, Accel: "tcg"}, problem: "--machines 0"},
		"too many":          {cfg: LabConfig{DataDir: "d", Machines: 17, Accel: "kvm"}, problem: "1 to 16"},
		"an accelerator":    {cfg: LabConfig{DataDir: "d", Machines: 1, Accel: "hvf"}, problem: "--accel"},
		"no data directory": {cfg: LabConfig{Machines: 1, Accel: "tcg"}, problem: "--data-dir"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			switch {
			case tt.problem == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.problem != "" && (err == nil || !strings.Contains(err.Error(), tt.problem)):
				t.Errorf("Validate() = %v, want a problem with %q", err, tt.problem)
			}
		})
	}
}

// TestLogStream checks that every line, whatever the writes it came in,
// is whole and prefixed with its component's name.
func TestLogStream(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := &logStream{out: &out, width: 11}
	api := s.prefixed("carbide-api").(*lineWriter)
	dhcp := s.prefixed("carbide-dhcp").(*lineWriter)
	for _, w := range []struct {
		w *lineWriter
		b string
	}{{api, "listen"}, {dhcp, "serving\nsecond\r\n"}, {api, "ing\n"}, {api, "partial"}} {
		if _, err := w.w.Write([]byte(w.b)); err != nil {
			t.Fatal(err)
		}
	}
	api.flush()
	s.printf("stopped %d", 5)
	want := "carbide-dhcp | serving\ncarbide-dhcp | second\ncarbide-api | listening\ncarbide-api | partial\ncarbide-run | stopped 5\n"
	if got := out.String(); got != want {
		t.Errorf("stream:\n%s\nwant:\n%s", got, want)
	}
}

func TestReadStateWithoutRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "make run") {
		t.Errorf("ReadState of an empty directory = %v, want an error that says to start make run", err)
	}
	if err := writeState(dir, State{PID: os.Getpid(), Mode: ModeNetns, Netns: "x"}); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadState(dir); err != nil || st.Netns != "x" {
		t.Errorf("ReadState = %+v, %v; want the state written", st, err)
	}
	removeState(dir)
	if _, err := ReadState(dir); err == nil {
		t.Error("ReadState after removeState succeeded")
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	for listen, want := range map[string]string{
		"127.0.0.1:1079": "127.0.0.1:1079",
		"10.80.0.1:1079": "10.80.0.1:1079",
		"0.0.0.0:1079":   "127.0.0.1:1079", // the certificate covers no 0.0.0.0
		":1079":          "127.0.0.1:1079",
		"[::]:1079":      "[::1]:1079",
		"localhost:1079": "localhost:1079",
	} {
		if got := clientAddr(listen); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", listen, got, want)
		}
	}
}

func TestListenCovers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listen, addr string
		want         bool
	}{
		{"127.0.0.1:1079", "10.80.0.1:1079", false},
		{"0.0.0.0:1079", "10.80.0.1:1079", true}, // a forwarder there takes the API's port
		{":1079", "10.80.0.1:1079", true},
		{"[::]:1079", "10.80.0.1:1079", true},
		{"0.0.0.0:2079", "10.80.0.1:1079", false},
		{"127.0.0.1:1079", "127.0.0.1:1079", true}, // CARBIDE_INTERFACE=lo
		{"10.80.0.1:1079", "10.80.0.1:1079", true},
		{"10.80.0.2:1079", "10.80.0.1:1079", false},
		{"bad", "10.80.0.1:1079", false},
	}
	for _, tt := range tests {
		if got := listenCovers(tt.listen, tt.addr); got != tt.want {
			t.Errorf("listenCovers(%q, %q) = %v, want %v", tt.listen, tt.addr, got, tt.want)
		}
	}
}
