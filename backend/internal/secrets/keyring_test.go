package secrets_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/google/go-cmp/cmp"
)

// testKey is a key of a test keyring, in every form it could leak in.
type testKey struct {
	id  string
	raw []byte
	b64 string
}

// newKey makes a random key and registers it as a secret of the run, so
// that the test output is checked for it.
func newKey(t *testing.T, id string) testKey {
	t.Helper()
	raw := make([]byte, secrets.KeySize)
	rand.Read(raw)
	k := testKey{id: id, raw: raw, b64: base64.StdEncoding.EncodeToString(raw)}
	testsecret.Register(t, k.b64, hex.EncodeToString(raw))
	return k
}

func (k testKey) line() string { return k.id + " " + k.b64 }

// keyring parses the keyring of keys, the first one primary.
func keyring(t *testing.T, keys ...testKey) *secrets.Keyring {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.line() + "\n")
	}
	kr, err := secrets.ParseKeyring("test", []byte(b.String()))
	if err != nil {
		t.Fatalf("parse keyring: %v", err)
	}
	return kr
}

// assertNoKey fails if text holds any form of one of the keys.
func assertNoKey(t *testing.T, what, text string, keys ...testKey) {
	t.Helper()
	for _, k := range keys {
		for _, form := range []string{k.b64, strings.TrimRight(k.b64, "="), hex.EncodeToString(k.raw), strings.ToUpper(hex.EncodeToString(k.raw)), string(k.raw), fmt.Sprint(k.raw)} {
			if strings.Contains(text, form) {
				t.Errorf("%s shows key %s: %q", what, k.id, text)
			}
		}
	}
}

func TestSecretsParseKeyring(t *testing.T) {
	t.Parallel()
	k1, k2, k3 := newKey(t, "k1"), newKey(t, "2026-12"), newKey(t, "old.key_3")
	short := newKey(t, "short")
	short.b64 = base64.StdEncoding.EncodeToString(short.raw[:16])
	tests := map[string]struct {
		text        string
		wantPrimary string
		wantIDs     []string
		wantErr     []string // substrings of the error; nil for success
	}{
		"one key":          {text: k1.line() + "\n", wantPrimary: "k1", wantIDs: []string{"k1"}},
		"no final newline": {text: k1.line(), wantPrimary: "k1", wantIDs: []string{"k1"}},
		"first is primary": {
			text:        "# rotated 2026-12\n\n" + k2.line() + "\n  # the old one\n" + k1.line() + "\n" + k3.line() + "\n",
			wantPrimary: "2026-12", wantIDs: []string{"2026-12", "k1", "old.key_3"},
		},
		"CRLF, tabs and a trailing comment": {
			text:        k1.id + "\t" + k1.b64 + "   # lab key\r\n" + k2.line() + "\r\n",
			wantPrimary: "k1", wantIDs: []string{"k1", "2026-12"},
		},
		"unpadded base64": {text: "k1 " + strings.TrimRight(k1.b64, "="), wantPrimary: "k1", wantIDs: []string{"k1"}},
		"empty":           {text: "", wantErr: []string{"test holds no keys", "carbide-api secrets-key"}},
		"comments only":   {text: "# nothing yet\n\n", wantErr: []string{"test holds no keys"}},
		"short key": {text: k1.line() + "\n" + short.line() + "\n",
			wantErr: []string{"test line 2", `key "short"`, "16 bytes; want 32 (AES-256)", "carbide-api secrets-key"}},
		"duplicate id": {text: k1.line() + "\n# comment\n" + "k1 " + k2.b64 + "\n",
			wantErr: []string{"test line 3", `key id "k1" is already used on line 1`}},
		"not base64":             {text: "k1 " + k1.b64[:20] + "!!" + k1.b64[22:], wantErr: []string{"test line 1", `key "k1"`, "not base64"}},
		"id only":                {text: "k1\n", wantErr: []string{"test line 1", "want `<id> <base64 of 32 bytes>`, found 1 fields"}},
		"key without an id":      {text: k1.b64 + "\n", wantErr: []string{"test line 1", "found 1 fields"}},
		"key in place of the id": {text: k1.b64 + " k1\n", wantErr: []string{"test line 1", "the key id (first field) must be"}},
		"three fields":           {text: k1.line() + " extra\n", wantErr: []string{"test line 1", "found 3 fields"}},
		"bad id":                 {text: "-k " + k1.b64 + "\n", wantErr: []string{"test line 1", "key id (first field)"}},
		"long id":                {text: strings.Repeat("a", 33) + " " + k1.b64 + "\n", wantErr: []string{"key id (first field) must be 1 to 32"}},
		"every bad line reported": {text: "k1\n" + short.line() + "\n" + k2.line() + "\n",
			wantErr: []string{"test line 1", "test line 2"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kr, err := secrets.ParseKeyring("test", []byte(tt.text))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseKeyring: %v; want an error", kr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				assertNoKey(t, "the error", err.Error(), k1, k2, k3, short)
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyring: %v", err)
			}
			if kr.PrimaryID() != tt.wantPrimary {
				t.Errorf("primary %q, want %q", kr.PrimaryID(), tt.wantPrimary)
			}
			if diff := cmp.Diff(tt.wantIDs, kr.IDs()); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			for _, id := range tt.wantIDs {
				if !kr.Has(id) {
					t.Errorf("Has(%q) = false", id)
				}
			}
			if kr.Has("absent") {
				t.Error(`Has("absent") = true`)
			}
		})
	}
}

// TestLoadKeyringFilePermissions checks that, like ssh, the loader refuses
// a keyring that its group or others may read or write, and says how to
// fix it.
func TestSecretsKeyringFilePermissions(t *testing.T) {
	t.Parallel()
	k := newKey(t, "k1")
	tests := map[string]struct {
		mode    os.FileMode
		wantErr bool
	}{
		"0600": {mode: 0o600},
		"0400": {mode: 0o400},
		"0700": {mode: 0o700},
		"0640": {mode: 0o640, wantErr: true},
		"0644": {mode: 0o644, wantErr: true},
		"0604": {mode: 0o604, wantErr: true},
		"0620": {mode: 0o620, wantErr: true},
		"0602": {mode: 0o602, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "secrets.keys")
			if err := os.WriteFile(path, []byte(k.line()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			kr, err := secrets.LoadKeyringFile(path)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("LoadKeyringFile: %v", err)
				}
				if kr.PrimaryID() != "k1" {
					t.Errorf("primary %q, want k1", kr.PrimaryID())
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadKeyringFile of a file with mode %s succeeded; want a refusal", name)
			}
			for _, w := range []string{"permissions " + name, path, "too open", "chmod 600 " + path, secrets.EnvKeys} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	t.Run("errors name the file and line", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "secrets.keys")
		if err := os.WriteFile(path, []byte("# keys\n"+k.line()+"\nk1 "+k.b64+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := secrets.LoadKeyringFile(path)
		if err == nil || !strings.Contains(err.Error(), path+" line 3") {
			t.Errorf("LoadKeyringFile: %v; want an error naming %s line 3", err, path)
		}
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "absent.keys")
		_, err := secrets.LoadKeyringFile(path)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadKeyringFile: %v; want a not-exist error naming %s", err, path)
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := secrets.LoadKeyringFile(dir)
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadKeyringFile(directory): %v; want an error saying it is not a regular file", err)
		}
	})
}

func TestSecretsGenerateKeyLine(t *testing.T) {
	t.Parallel()
	line, err := secrets.GenerateKeyLine("2026-12")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(line)
	if len(fields) != 2 || fields[0] != "2026-12" || strings.Contains(line, "\n") {
		t.Fatalf("GenerateKeyLine = a line of %d fields; want `2026-12 <base64>` on one line", len(fields))
	}
	testsecret.Register(t, fields[1])
	if raw, err := base64.StdEncoding.DecodeString(fields[1]); err != nil || len(raw) != secrets.KeySize {
		t.Errorf("the key is not the base64 of %d bytes (%v)", secrets.KeySize, err)
	}
	kr, err := secrets.ParseKeyring("generated", []byte(line))
	if err != nil || kr.PrimaryID() != "2026-12" {
		t.Fatalf("parse a generated line: %v, %v", kr, err)
	}
	other, err := secrets.GenerateKeyLine("2026-12")
	if err != nil {
		t.Fatal(err)
	}
	testsecret.Register(t, strings.Fields(other)[1])
	if other == line {
		t.Error("two generated keys are equal")
	}
	for _, bad := range []string{"", "has space", "-lead", "a/b", strings.Repeat("x", 33)} {
		if _, err := secrets.GenerateKeyLine(bad); err == nil || !strings.Contains(err.Error(), "key id") {
			t.Errorf("GenerateKeyLine(%q): %v; want a key id error", bad, err)
		}
	}
}

// TestEnsureKeyringFile checks the development keyring: created once with
// mode 0600 in a 0700 directory, kept on later starts, and never replaced
// when several processes start at once.
func TestSecretsEnsureKeyringFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	path := filepath.Join(dir, "secrets.keys")
	created, err := secrets.EnsureKeyringFile(path, "dev")
	if err != nil || !created {
		t.Fatalf("EnsureKeyringFile = %v, %v; want created", created, err)
	}
	registerFileKeys(t, path)
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	first, err := secrets.LoadKeyringFile(path)
	if err != nil {
		t.Fatalf("load the created keyring: %v", err)
	}
	if first.PrimaryID() != "dev" {
		t.Errorf("primary %q, want dev", first.PrimaryID())
	}
	before, _ := os.ReadFile(path)
	created, err = secrets.EnsureKeyringFile(path, "dev")
	if err != nil || created {
		t.Fatalf("EnsureKeyringFile on an existing file = %v, %v; want not created", created, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("EnsureKeyringFile changed an existing keyring")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the keyring (no temporary files)", len(entries))
	}

	t.Run("concurrent starts", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "secrets.keys")
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		createdCount := 0
		for range n {
			wg.Go(func() {
				created, err := secrets.EnsureKeyringFile(path, "dev")
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if created {
					createdCount++
				}
			})
		}
		wg.Wait()
		registerFileKeys(t, path)
		if createdCount != 1 {
			t.Errorf("%d of %d concurrent calls created the keyring; want exactly 1", createdCount, n)
		}
		kr, err := secrets.LoadKeyringFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Every process that started then loads the same key.
		s, err := kr.Seal([]byte("pw"), nil)
		if err != nil {
			t.Fatal(err)
		}
		again, err := secrets.LoadKeyringFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := again.Open(s, nil); err != nil {
			t.Errorf("the keyring changed between loads: %v", err)
		}
	})
}

// registerFileKeys registers the keys of a keyring file as secrets of the run.
func registerFileKeys(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			testsecret.Register(t, f[1])
		}
	}
}

// TestKeyringRedaction prints and logs a keyring every way a caller might
// and checks that only its key ids show.
func TestSecretsKeyringRedaction(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	kr := keyring(t, k2, k1)
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %p"} {
		outputs = append(outputs, fmt.Sprintf(verb, kr))
	}
	// A Keyring value, and one inside another struct, do not reach the
	// keys through the pointer methods either.
	holder := struct{ K *secrets.Keyring }{kr}
	for _, verb := range []string{"%v", "%+v", "%#v", "%x"} {
		outputs = append(outputs, fmt.Sprintf(verb, *kr), fmt.Sprintf(verb, holder), fmt.Sprintf(verb, &holder))
	}
	outputs = append(outputs, fmt.Sprint(kr), fmt.Sprintln(kr), kr.String(), kr.GoString())
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("loaded", "keyring", kr, "value", *kr)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("loaded", "keyring", kr, "holder", holder)
	outputs = append(outputs, text.String(), js.String())
	for _, out := range outputs {
		assertNoKey(t, "output", out, k1, k2)
	}

	if got, want := fmt.Sprintf("%v", kr), "secrets.Keyring(primary k2; keys k2, k1)"; got != want {
		t.Errorf("%%v = %q, want %q", got, want)
	}
	if got := fmt.Sprintf("%#v", kr); got != fmt.Sprint(kr) {
		t.Errorf("%%#v = %q; want the same as %%v", got)
	}
	if !strings.Contains(text.String(), "keyring.primary=k2") || !strings.Contains(text.String(), "keyring.keys=\"[k2 k1]\"") {
		t.Errorf("text log %q lacks the key ids", text.String())
	}
	if !strings.Contains(js.String(), `"keyring":{"primary":"k2","keys":["k2","k1"]}`) {
		t.Errorf("JSON log %q lacks the key ids", js.String())
	}

	var nilRing *secrets.Keyring
	if got := fmt.Sprintf("%v %+v %#v", nilRing, nilRing, nilRing); got != "secrets.Keyring(none) secrets.Keyring(none) secrets.Keyring(none)" {
		t.Errorf("nil keyring prints %q", got)
	}
	text.Reset()
	slog.New(slog.NewTextHandler(&text, nil)).Info("none", "keyring", nilRing)
	if !strings.Contains(text.String(), "keyring=none") {
		t.Errorf("nil keyring logs %q", text.String())
	}
}
