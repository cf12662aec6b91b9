package main

// Tests of the secrets keyring options of the carbide-api binary: the
// secrets-key command, --secrets-key-file and CARBIDE_SECRETS_KEYS, and
// the development keyring of --dev.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// newKeyLine runs `carbide-api secrets-key` and returns its line, the key
// registered as a secret of the run.
func newKeyLine(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, apiBinary, append([]string{"secrets-key"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if f := strings.Fields(string(out)); len(f) == 2 {
		testsecret.Register(t, f[1])
	}
	if err != nil {
		t.Fatalf("carbide-api secrets-key %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSuffix(string(out), "\n")
}

// TestSecretsKeyCommand checks that `carbide-api secrets-key` prints one
// keyring line the API loads, with the id given or today's date.
func TestSecretsKeyCommand(t *testing.T) {
	t.Parallel()
	line := newKeyLine(t, "--id", "k9")
	if strings.Contains(line, "\n") {
		t.Fatalf("secrets-key printed more than one line")
	}
	keys, err := secrets.ParseKeyring("secrets-key output", []byte(line))
	if err != nil {
		t.Fatalf("the printed line is not a keyring: %v", err)
	}
	if keys.PrimaryID() != "k9" {
		t.Errorf("key id %q, want k9", keys.PrimaryID())
	}
	if other := newKeyLine(t, "--id", "k9"); other == line {
		t.Error("two runs printed the same key")
	}
	dated := newKeyLine(t)
	if id := strings.Fields(dated)[0]; !regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`).MatchString(id) {
		t.Errorf("default key id %q; want today's date, YYYY-MM-DD", id)
	}

	out, err := exec.Command(apiBinary, "secrets-key", "--id", "no/slash").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `key id "no/slash"`) {
		t.Errorf("secrets-key --id no/slash: %v; want a refusal naming the id:\n%s", err, out)
	}
	out, _ = exec.Command(apiBinary, "--help").CombinedOutput()
	for _, w := range []string{"carbide-api secrets-key [--id <id>]", "-secrets-key-file", "CARBIDE_SECRETS_KEYS"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("carbide-api --help lacks %q", w)
		}
	}
}

// TestSecretsFlagsRefused checks the keyring options the server refuses
// before it starts anything, with a message that says what to fix and
// never shows a key.
func TestSecretsFlagsRefused(t *testing.T) {
	t.Parallel()
	line := newKeyLine(t, "--id", "k1")
	key := strings.Fields(line)[1]
	openFile := filepath.Join(t.TempDir(), "open.keys")
	if err := os.WriteFile(openFile, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openFile, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.keys")
	tests := map[string]struct {
		args []string
		env  []string
		want []string
	}{
		"file and environment": {args: []string{"--secrets-key-file", openFile}, env: []string{"CARBIDE_SECRETS_KEYS=" + line},
			want: []string{"invalid configuration", "secrets-key-file and CARBIDE_SECRETS_KEYS: give one"}},
		"empty environment": {env: []string{"CARBIDE_SECRETS_KEYS="}, want: []string{"CARBIDE_SECRETS_KEYS is set but empty"}},
		"short key in the environment": {env: []string{"CARBIDE_SECRETS_KEYS=k1 " + key[:24]},
			want: []string{"invalid configuration", "CARBIDE_SECRETS_KEYS line 1", "want 32 (AES-256)"}},
		"file others can read": {args: []string{"--secrets-key-file", openFile},
			want: []string{"load the secrets keyring", "permissions 0644", "too open", "chmod 600 " + openFile}},
		"missing file from the environment": {env: []string{"CARBIDE_SECRETS_KEY_FILE=" + missing},
			want: []string{"load the secrets keyring", missing}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, apiBinary, append([]string{"--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, tc.args...)...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("carbide-api started (%v); want a refusal\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), key[:16]) {
				t.Errorf("the output shows the key:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(dataDir, "pki")); !os.IsNotExist(err) {
				t.Errorf("a refused start left %s/pki behind (%v)", dataDir, err)
			}
		})
	}
}

// TestSecretsKeyringAtStart starts the server three ways: --dev creates
// its development keyring, mode 0600, and keeps it across restarts; a
// keyring in CARBIDE_SECRETS_KEYS is loaded and logged by key id only;
// and with no keyring at all the server serves and warns.
func TestSecretsKeyringAtStart(t *testing.T) {
	t.Parallel()
	t.Run("dev", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		path := filepath.Join(dataDir, "pki", secrets.DevKeyringFile)
		api := startAPI(t, dataDir)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("--dev did not create %s: %v", path, err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
				testsecret.Register(t, f[1])
				if strings.Contains(api.log.String(), f[1]) {
					t.Errorf("the log shows the development key:\n%s", api.log)
				}
			}
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", path, fi, err)
		}
		for _, w := range []string{"development secrets keyring written", "secrets keyring loaded", "keyring.primary=dev"} {
			if !strings.Contains(api.log.String(), w) {
				t.Errorf("the log lacks %q:\n%s", w, api.log)
			}
		}
		api.stop(t)
		again := startAPI(t, dataDir)
		if after, _ := os.ReadFile(path); string(after) != string(b) {
			t.Error("a restart changed the development keyring")
		}
		if strings.Contains(again.log.String(), "development secrets keyring written") {
			t.Errorf("a restart wrote the development keyring again:\n%s", again.log)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Parallel()
		newer, older := newKeyLine(t, "--id", "k2"), newKeyLine(t, "--id", "k1")
		api := startAPIEnv(t, t.TempDir(), []string{"CARBIDE_SECRETS_KEYS=" + newer + "\n" + older + "\n"}, "--insecure-plaintext")
		for _, w := range []string{"secrets keyring loaded", "source=CARBIDE_SECRETS_KEYS", "keyring.primary=k2", `keyring.keys="[k2 k1]"`} {
			if !strings.Contains(api.log.String(), w) {
				t.Errorf("the log lacks %q:\n%s", w, api.log)
			}
		}
		for _, l := range []string{newer, older} {
			if strings.Contains(api.log.String(), strings.Fields(l)[1]) {
				t.Errorf("the log shows a key:\n%s", api.log)
			}
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		api := startAPIArgs(t, dataDir, "--insecure-plaintext")
		if !strings.Contains(api.log.String(), "no --secrets-key-file or CARBIDE_SECRETS_KEYS") {
			t.Errorf("the log does not warn that there is no keyring:\n%s", api.log)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "pki", secrets.DevKeyringFile)); !os.IsNotExist(err) {
			t.Errorf("without --dev a keyring was created (%v)", err)
		}
	})
}
