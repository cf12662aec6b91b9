// Package secrets keeps secrets such as BMC passwords encrypted at rest and
// seals them for the one process that needs them.
//
// At rest: a Keyring holds AES-256 key-encryption keys by id. Its primary
// key seals new secrets with AES-256-GCM; every key opens what it sealed, so
// a key can be rotated by putting a new one first and keeping the old ones
// below it until every stored secret has been re-sealed (Reseal). A Sealed
// secret carries the id of its key beside the ciphertext, and associated
// data (AAD) binds it to its row and field, so a ciphertext copied to
// another row does not open.
//
// In transit: SealTo encrypts a secret with HPKE (RFC 9180) to the X25519
// public key of the daemon that asked for it; only the holder of the
// private key, made by that daemon process at start, can open it.
//
// Key material never appears in errors, in fmt output or in logs of a
// Keyring.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// KeySize is the length of a key-encryption key: 32 bytes, for AES-256.
const KeySize = 32

// EnvKeys is the environment variable that can hold the keyring itself,
// in the keyring file's format, instead of a file.
const EnvKeys = "CARBIDE_SECRETS_KEYS"

// ErrNoKeyring is what sealing or opening with a nil *Keyring returns: the
// API was started without keys. At the RPC boundary it becomes
// FailedPrecondition with this text, which says what to set.
var ErrNoKeyring = errors.New("no secrets keyring is configured, so secrets such as BMC passwords cannot be stored or read: " +
	"start carbide-api with --secrets-key-file (or the keyring in " + EnvKeys + "); " +
	"`carbide-api secrets-key` prints a key line for it")

// ErrUnknownKey is wrapped by Open when a secret names a key id that is
// not in the keyring.
var ErrUnknownKey = errors.New("key not in the keyring")

// ErrMismatch is wrapped by Open when a ciphertext does not authenticate
// under its key and associated data: it belongs to another row or field,
// or it was changed.
var ErrMismatch = errors.New("secret does not open: it was sealed for another row or field, or it was changed")

// maxIDLen is the longest key id: ids are stored beside every secret.
const maxIDLen = 32

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// validID checks a key id: 1 to 32 letters, digits, '.', '_' or '-',
// starting with a letter or digit.
func validID(id string) error {
	if len(id) == 0 || len(id) > maxIDLen || !idPattern.MatchString(id) {
		return fmt.Errorf("key id %q: want 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", id, maxIDLen)
	}
	return nil
}

// Keyring holds key-encryption keys by id; the first one is the primary,
// which seals, and all of them open. The zero value and nil hold no keys:
// their Seal, Open and Reseal return ErrNoKeyring. A Keyring is safe for
// concurrent use. Printing or logging it shows its key ids only.
type Keyring struct {
	primary string
	ids     []string // in keyring order, the primary first
	aeads   map[string]cipher.AEAD
}

// ParseKeyring reads a keyring in the keyring file format: one key per
// line, `<id> <base64 of 32 bytes>`, blank lines and lines starting with
// '#' ignored; the first key is the primary. source names where data came
// from (a path, or EnvKeys) in errors, which give line numbers and never
// the line's text.
func ParseKeyring(source string, data []byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	firstLine := map[string]int{}
	var errs []error
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) > 2 && !strings.HasPrefix(fields[2], "#") || len(fields) < 2 {
			errs = append(errs, fmt.Errorf("%s line %d: want `<id> <base64 of %d bytes>`, found %d fields", source, n, KeySize, len(fields)))
			continue
		}
		id := fields[0]
		if validID(id) != nil {
			// Not echoed: a key pasted in the id's place must not reach a log.
			errs = append(errs, fmt.Errorf("%s line %d: the key id (first field) must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", source, n, maxIDLen))
			continue
		}
		if first, dup := firstLine[id]; dup {
			errs = append(errs, fmt.Errorf("%s line %d: key id %q is already used on line %d; every key needs its own id", source, n, id, first))
			continue
		}
		firstLine[id] = n
		aead, err := newAEAD(fields[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: key %q: %w", source, n, id, err))
			continue
		}
		k.ids = append(k.ids, id)
		k.aeads[id] = aead
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(k.ids) == 0 {
		return nil, fmt.Errorf("%s holds no keys: add a line `<id> <base64 of %d bytes>`, e.g. from `carbide-api secrets-key`", source, KeySize)
	}
	k.primary = k.ids[0]
	return k, nil
}

// newAEAD decodes a base64 key and makes its AES-256-GCM cipher with random
// 96-bit nonces. Its errors never hold the key text.
func newAEAD(b64 string) (cipher.AEAD, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return nil, fmt.Errorf("not base64 (standard alphabet); generate a key with `carbide-api secrets-key`")
	}
	defer clear(key)
	if len(key) != KeySize {
		return nil, fmt.Errorf("%d bytes; want %d (AES-256); generate a key with `carbide-api secrets-key`", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("make AES cipher: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("make AES-GCM cipher: %w", err)
	}
	return aead, nil
}

// LoadKeyringFile reads the keyring file at path (see ParseKeyring). Like
// ssh with a private key, it refuses a file that its group or others may
// access: the keys open every stored secret.
func LoadKeyringFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open keyring file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat keyring file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keyring file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("permissions %04o for keyring file %s are too open: it must be accessible by its owner only; run chmod 600 %s, "+
			"or give the keyring in %s instead", perm, path, path, EnvKeys)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read keyring file: %w", err)
	}
	defer clear(data)
	return ParseKeyring(path, data)
}

// EnsureKeyringFile creates a keyring file at path with one new key, id,
// if no file is there, and reports whether it did; the file has mode 0600
// and its directory, created if missing, 0700. It never replaces a file,
// even when several processes start at once. It is for development mode;
// in production the operator writes the file (see GenerateKeyLine).
func EnsureKeyringFile(path, id string) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("stat keyring file: %w", err)
	}
	line, err := GenerateKeyLine(id)
	if err != nil {
		return false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create keyring directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("create keyring file: %w", err)
	}
	defer os.Remove(tmp.Name())
	content := "# Carbide secrets keyring: <id> <base64 of 32 bytes>; the first key seals, all open.\n" + line + "\n"
	if err := writeAndClose(tmp, content); err != nil {
		return false, fmt.Errorf("write keyring file: %w", err)
	}
	// A hard link never replaces an existing file: a process that lost the
	// race keeps the winner's keyring.
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("create keyring file: %w", err)
	}
	return true, nil
}

func writeAndClose(f *os.File, content string) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(content)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// GenerateKeyLine returns a line for a keyring file holding a new random
// key with the given id: `<id> <base64 of 32 bytes>`, without a newline.
func GenerateKeyLine(id string) (string, error) {
	if err := validID(id); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	key := make([]byte, KeySize)
	defer clear(key)
	rand.Read(key) // never fails (crypto/rand)
	return id + " " + base64.StdEncoding.EncodeToString(key), nil
}

// PrimaryID is the id of the key that seals; "" for a nil Keyring.
func (k *Keyring) PrimaryID() string {
	if k == nil {
		return ""
	}
	return k.primary
}

// IDs are the key ids in keyring order, the primary first.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	return append([]string(nil), k.ids...)
}

// Has reports whether the keyring holds a key with this id.
func (k *Keyring) Has(id string) bool {
	if k == nil {
		return false
	}
	_, ok := k.aeads[id]
	return ok
}

// String shows the key ids, never the keys.
func (k *Keyring) String() string {
	if k == nil || len(k.ids) == 0 {
		return "secrets.Keyring(none)"
	}
	return "secrets.Keyring(primary " + k.primary + "; keys " + strings.Join(k.ids, ", ") + ")"
}

// GoString is String: %#v shows no key either.
func (k *Keyring) GoString() string { return k.String() }

// Format prints String for every verb, so that no verb (%x, %+v, %#v…)
// reaches the keys.
func (k *Keyring) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, k.String())
}

// LogValue logs the primary key id and all key ids, never the keys.
func (k *Keyring) LogValue() slog.Value {
	if k == nil || len(k.ids) == 0 {
		return slog.StringValue("none")
	}
	return slog.GroupValue(slog.String("primary", k.primary), slog.Any("keys", k.IDs()))
}

var (
	_ fmt.Stringer   = (*Keyring)(nil)
	_ fmt.GoStringer = (*Keyring)(nil)
	_ fmt.Formatter  = (*Keyring)(nil)
	_ slog.LogValuer = (*Keyring)(nil)
)

// DevKeyringFile is the name of the development keyring that carbide-api
// --dev creates in <data-dir>/pki, and DevKeyID the id of its key.
const (
	DevKeyringFile = "secrets.keys"
	DevKeyID       = "dev"
)
