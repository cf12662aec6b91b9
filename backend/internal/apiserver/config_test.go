package apiserver

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// TestValidateMode checks that exactly one way of serving must be chosen,
// and that contradictory flags are refused with a message naming them.
func TestValidateMode(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cfg       Config
		noDataDir bool
		want      string // "" for valid
	}{
		"dev":                  {cfg: Config{Dev: true}, want: ""},
		"certificate":          {cfg: Config{TLSCert: "s.crt", TLSKey: "s.key"}, want: ""},
		"insecure plaintext":   {cfg: Config{InsecurePlaintext: true}, want: ""},
		"dev with a client CA": {cfg: Config{Dev: true, ClientCA: "ca.crt"}, want: ""},
		"nothing":              {cfg: Config{}, want: "no TLS certificate: give --tls-cert and --tls-key, or --dev"},
		"dev and certificate":  {cfg: Config{Dev: true, TLSCert: "s.crt", TLSKey: "s.key"}, want: "dev: cannot be combined with tls-cert"},
		"dev and plaintext":    {cfg: Config{Dev: true, InsecurePlaintext: true}, want: "dev and insecure-plaintext: choose one"},
		"plaintext and a CA":   {cfg: Config{InsecurePlaintext: true, ClientCA: "ca.crt"}, want: "insecure-plaintext: cannot be combined"},
		"dev without a data dir": {cfg: Config{Dev: true, DatabaseURL: "postgres://db/carbide"}, noDataDir: true,
			want: "data-dir: required for the development PKI of --dev"},
		"negative size":         {cfg: Config{Dev: true, MaxRequestBytes: -1}, want: "max-request-bytes"},
		"negative timeout":      {cfg: Config{Dev: true, IdleTimeout: -1}, want: "durations must not be negative"},
		"wipe mode full":        {cfg: Config{Dev: true, WipeMode: "full"}, want: ""},
		"bad wipe mode":         {cfg: Config{Dev: true, WipeMode: "shred"}, want: `wipe-mode: "shred" is not quick or full`},
		"lease expiry interval": {cfg: Config{Dev: true, LeaseExpiryInterval: time.Second}, want: ""},
		"lease expiry too often": {cfg: Config{Dev: true, LeaseExpiryInterval: time.Millisecond},
			want: "lease-expiry-interval: give 100ms to 1h"},
		"lease expiry too rare": {cfg: Config{Dev: true, LeaseExpiryInterval: 2 * time.Hour},
			want: "lease-expiry-interval: give 100ms to 1h"},
		"negative step timeout": {cfg: Config{Dev: true, Timeouts: lifecycle.Timeouts{WipeFull: -1}},
			want: "timeout-wipe-full: must not be negative"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Listen = "127.0.0.1:0"
			if !tt.noDataDir {
				cfg.DataDir = t.TempDir()
			}
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v; want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestValidateSecrets checks that the keyring comes from one place, and
// that a keyring given in the environment is checked with the rest of the
// configuration, its mistakes named by line without showing a key.
func TestValidateSecrets(t *testing.T) {
	t.Parallel()
	line, err := secrets.GenerateKeyLine("k1")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Fields(line)[1]
	testsecret.Register(t, key)
	loaded, err := secrets.ParseKeyring("test", []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		cfg  Config
		want []string // nil for valid
	}{
		"none":        {cfg: Config{}},
		"file":        {cfg: Config{SecretsKeyFile: "/etc/carbide/secrets.keys"}},
		"environment": {cfg: Config{SecretsKeys: line + "\n"}},
		"loaded":      {cfg: Config{Secrets: loaded}},
		"file and environment": {cfg: Config{SecretsKeyFile: "/etc/carbide/secrets.keys", SecretsKeys: line},
			want: []string{"secrets-key-file and CARBIDE_SECRETS_KEYS: give one"}},
		"loaded and file": {cfg: Config{Secrets: loaded, SecretsKeyFile: "/etc/carbide/secrets.keys"},
			want: []string{"a loaded keyring cannot be combined"}},
		"bad environment keyring": {cfg: Config{SecretsKeys: "# keys\nk1 " + key[:20] + "\n"},
			want: []string{"CARBIDE_SECRETS_KEYS line 2", `key "k1"`, "want 32 (AES-256)"}},
		"every problem at once": {cfg: Config{SecretsKeyFile: "f", SecretsKeys: "k1", IdleTimeout: -1},
			want: []string{"give one", "CARBIDE_SECRETS_KEYS line 1", "durations must not be negative"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			cfg.Listen, cfg.DataDir, cfg.Dev = "127.0.0.1:0", t.TempDir(), true
			err := cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate: %v; want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %v; want an error containing %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key[:20]) {
				t.Errorf("Validate's error shows the key: %v", err)
			}
		})
	}
}

// TestLoadSecrets checks where the server's keyring comes from: the
// environment, a file (refused when others may read it), the development
// keyring that --dev creates once and then keeps, or nowhere, which the
// server survives with a warning.
func TestLoadSecrets(t *testing.T) {
	t.Parallel()
	line, err := secrets.GenerateKeyLine("2026-12")
	if err != nil {
		t.Fatal(err)
	}
	testsecret.Register(t, strings.Fields(line)[1])
	writeKeys := func(t *testing.T, mode os.FileMode) string {
		path := filepath.Join(t.TempDir(), "secrets.keys")
		if err := os.WriteFile(path, []byte(line+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	load := func(t *testing.T, cfg Config) (*secrets.Keyring, string, error) {
		var logs strings.Builder
		keys, err := loadSecrets(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if strings.Contains(logs.String(), strings.Fields(line)[1]) {
			t.Errorf("the log shows the key:\n%s", logs.String())
		}
		return keys, logs.String(), err
	}

	t.Run("environment", func(t *testing.T) {
		t.Parallel()
		keys, logs, err := load(t, Config{SecretsKeys: line, Dev: true, DataDir: t.TempDir()})
		if err != nil || keys.PrimaryID() != "2026-12" {
			t.Fatalf("loadSecrets = %v, %v; want the keyring of CARBIDE_SECRETS_KEYS", keys, err)
		}
		if !strings.Contains(logs, "secrets keyring loaded") || !strings.Contains(logs, "source=CARBIDE_SECRETS_KEYS") || !strings.Contains(logs, "keyring.primary=2026-12") {
			t.Errorf("the log does not say which keyring was loaded:\n%s", logs)
		}
	})
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		keys, _, err := load(t, Config{SecretsKeyFile: writeKeys(t, 0o600), Dev: true, DataDir: dataDir})
		if err != nil || keys.PrimaryID() != "2026-12" {
			t.Fatalf("loadSecrets = %v, %v; want the file's keyring", keys, err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "pki", secrets.DevKeyringFile)); !os.IsNotExist(err) {
			t.Errorf("--dev with a key file created the development keyring too (%v)", err)
		}
	})
	t.Run("file others can read", func(t *testing.T) {
		t.Parallel()
		path := writeKeys(t, 0o644)
		_, _, err := load(t, Config{SecretsKeyFile: path})
		if err == nil || !strings.Contains(err.Error(), "load the secrets keyring") || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("loadSecrets: %v; want a refusal saying to chmod 600 %s", err, path)
		}
	})
	t.Run("development", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		path := filepath.Join(dataDir, "pki", secrets.DevKeyringFile)
		keys, logs, err := load(t, Config{Dev: true, DataDir: dataDir})
		registerKeyring(t, path)
		if err != nil || keys.PrimaryID() != secrets.DevKeyID {
			t.Fatalf("loadSecrets = %v, %v; want the development keyring", keys, err)
		}
		if !strings.Contains(logs, "development secrets keyring written") {
			t.Errorf("the first start does not log the new keyring:\n%s", logs)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("development keyring %s: %v, %v; want mode 0600", path, fi, err)
		}
		sealed, err := keys.Seal([]byte("calvin"), secrets.AAD("bmc", "m1", "password"))
		if err != nil {
			t.Fatal(err)
		}
		again, logs, err := load(t, Config{Dev: true, DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs, "written") {
			t.Errorf("the second start wrote the keyring again:\n%s", logs)
		}
		if pt, err := again.Open(sealed, secrets.AAD("bmc", "m1", "password")); err != nil || string(pt) != "calvin" {
			t.Errorf("after a restart the development keyring does not open what it sealed: %v", err)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		keys, logs, err := load(t, Config{TLSCert: "s.crt", TLSKey: "s.key", DataDir: dataDir})
		if err != nil || keys != nil {
			t.Fatalf("loadSecrets = %v, %v; want no keyring and no error", keys, err)
		}
		for _, w := range []string{"level=WARN", "no --secrets-key-file or CARBIDE_SECRETS_KEYS", "carbide-api secrets-key"} {
			if !strings.Contains(logs, w) {
				t.Errorf("the log lacks %q:\n%s", w, logs)
			}
		}
		if _, err := os.Stat(filepath.Join(dataDir, "pki")); !os.IsNotExist(err) {
			t.Errorf("without --dev a keyring was created (%v)", err)
		}
	})
	t.Run("loaded", func(t *testing.T) {
		t.Parallel()
		given, err := secrets.ParseKeyring("test", []byte(line))
		if err != nil {
			t.Fatal(err)
		}
		keys, _, err := load(t, Config{Secrets: given, Dev: true, DataDir: t.TempDir()})
		if err != nil || keys != given {
			t.Errorf("loadSecrets = %v, %v; want the keyring given", keys, err)
		}
	})
}
