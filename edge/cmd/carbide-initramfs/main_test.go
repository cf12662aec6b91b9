package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakePackage writes an unpacked kernel package with two modules (b
// depends on a) and one built-in module.
func fakePackage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"boot/vmlinuz-6.1.0-1-test":                       "kernel",
		"lib/modules/6.1.0-1-test/modules.dep":            "kernel/a.ko:\nkernel/drivers/b.ko: kernel/a.ko\n",
		"lib/modules/6.1.0-1-test/modules.builtin":        "kernel/drivers/nvme/host/nvme.ko\n",
		"lib/modules/6.1.0-1-test/kernel/a.ko":            "a",
		"lib/modules/6.1.0-1-test/kernel/drivers/b.ko":    "b",
		"lib/modules/6.1.0-1-test/kernel/drivers/virt.ko": "unused",
		"scout": "scout binary",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A minimal static x86-64 ELF executable.
	scout, err := os.ReadFile("testdata/static.elf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scout"), scout, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRun(t *testing.T) {
	t.Parallel()
	pkg := fakePackage(t)
	out := filepath.Join(t.TempDir(), "scout")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--kernel-dir", pkg, "--scout", filepath.Join(pkg, "scout"), "--out", out,
		"--modules", "b,nvme", "--add-modules", "e1000e"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	want := []string{
		"kernel 6.1.0-1-test",
		"modules in load order (2): a b",
		"built into the kernel (1): nvme",
		"missing from the package, left out (1): e1000e",
		"wrote " + filepath.Join(out, "vmlinuz") + " (0.0 MiB)",
		"wrote " + filepath.Join(out, "scout.cpio.gz") + " (0.0 MiB)",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	pkg := fakePackage(t)
	tests := map[string]struct {
		args []string
		want string
	}{
		"help":           {args: []string{"--help"}, want: flag.ErrHelp.Error()},
		"extra argument": {args: []string{"--scout", "x", "--out", "y", "z"}, want: `unexpected arguments ["z"]`},
		"no scout":       {args: []string{"--kernel-dir", pkg, "--out", t.TempDir()}, want: "no scout binary"},
		"no kernel":      {args: []string{"--kernel-dir", t.TempDir(), "--scout", filepath.Join(pkg, "scout"), "--out", t.TempDir()}, want: "scripts/fetch-kernel"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, flag.ErrHelp) && !strings.Contains(stderr.String(), "Default modules:") {
				t.Errorf("--help printed:\n%s", stderr.String())
			}
		})
	}
}
