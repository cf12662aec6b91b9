// Package secrets seals the secrets Carbide keeps (BMC passwords) at rest,
// and to the one daemon process that needs one.
//
// At rest a secret is sealed with AES-256-GCM under a key of a Keyring,
// with associated data that binds it to its row; the id of the key is
// stored beside it, so that keys can be rotated: the first key of the
// keyring seals, every key opens, and Reseal moves a secret to the first.
//
// On the wire a secret goes sealed once more to a daemon's own X25519
// public key with HPKE (RFC 9180): only that process can open it.
package secrets

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
)

// KeySize is the size of a key: AES-256.
const KeySize = 32

// ErrNoKeyring is the error of an operation that needs a keyring when the
// API was started without one.
var ErrNoKeyring = errors.New("the API has no keyring to seal secrets with: start it with --secrets-key-file (or CARBIDE_SECRETS_KEYS); carbide-api secrets-key prints a new key")

// Sealed is a secret sealed under the key KeyID names: the 12-byte GCM
// nonce, then the ciphertext and its tag.
type Sealed struct {
	KeyID      string
	Ciphertext []byte
}

// Keyring holds the keys that seal secrets at rest. Its String, GoString
// and LogValue never show key material.
type Keyring struct {
	primary string
	aeads   map[string]cipher.AEAD
	ids     []string // in the order of the file
}

var keyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Parse reads a keyring: one key per line, "<id> <base64 of 32 bytes>";
// blank lines and lines starting with # are skipped. The first key is the
// primary: it seals; the others only open.
func Parse(text string) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("keyring line %d: want \"<id> <base64 key>\"", n)
		}
		id := fields[0]
		if !keyID.MatchString(id) {
			return nil, fmt.Errorf("keyring line %d: key id must be 1 to 64 letters, digits, '.', '_' or '-'", n)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("keyring line %d: key id %q appears twice", n, id)
		}
		key, err := base64.StdEncoding.DecodeString(fields[1])
		if err != nil || len(key) != KeySize {
			return nil, fmt.Errorf("keyring line %d (key %q): want %d bytes in base64 (carbide-api secrets-key prints one)", n, id, KeySize)
		}
		block, err := aes.NewCipher(key)
		clear(key)
		if err != nil {
			return nil, fmt.Errorf("keyring line %d: %w", n, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring line %d: %w", n, err)
		}
		if k.primary == "" {
			k.primary = id
		}
		k.aeads[id] = aead
		k.ids = append(k.ids, id)
	}
	if k.primary == "" {
		return nil, errors.New("keyring holds no key")
	}
	return k, nil
}

// Load reads a keyring file, which no one but its owner may read or write
// (as ssh requires of private keys).
func Load(path string) (*Keyring, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keyring %s is open to others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	k, err := Parse(string(b))
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return k, nil
}

// GenerateKeyLine returns a new random key as a keyring line.
func GenerateKeyLine(id string) (string, error) {
	if !keyID.MatchString(id) {
		return "", errors.New("key id must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return "", err
	}
	line := id + " " + base64.StdEncoding.EncodeToString(key)
	clear(key)
	return line, nil
}

// Primary is the id of the key that seals.
func (k *Keyring) Primary() string { return k.primary }

// Seal seals plaintext under the primary key, bound to aad.
func (k *Keyring) Seal(plaintext, aad []byte) (Sealed, error) {
	aead := k.aeads[k.primary]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return Sealed{}, fmt.Errorf("seal: %w", err)
	}
	return Sealed{KeyID: k.primary, Ciphertext: aead.Seal(nonce, nonce, plaintext, aad)}, nil
}

// Open opens s, which must have been sealed with the same aad.
func (k *Keyring) Open(s Sealed, aad []byte) ([]byte, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("the secret is sealed under key %q, which the keyring lacks: add that key back to the keyring (below the first)", s.KeyID)
	}
	if len(s.Ciphertext) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("the sealed secret is truncated")
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, s.Ciphertext[:n], s.Ciphertext[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("the secret sealed under key %q does not open: it was altered, or sealed for another row", s.KeyID)
	}
	return pt, nil
}

// Reseal seals s again under the primary key if another key sealed it;
// changed says whether it did.
func (k *Keyring) Reseal(s Sealed, aad []byte) (Sealed, bool, error) {
	if s.KeyID == k.primary {
		return s, false, nil
	}
	pt, err := k.Open(s, aad)
	if err != nil {
		return s, false, err
	}
	defer clear(pt)
	out, err := k.Seal(pt, aad)
	if err != nil {
		return s, false, err
	}
	return out, true, nil
}

// String names the keys, never their material.
func (k *Keyring) String() string {
	return fmt.Sprintf("keyring(primary %s, keys %s)", k.primary, strings.Join(k.ids, ","))
}

// GoString is String, for %#v.
func (k *Keyring) GoString() string { return k.String() }

// Format prints String for every verb.
func (k *Keyring) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue is String, for slog.
func (k *Keyring) LogValue() slog.Value { return slog.StringValue(k.String()) }

// SealTo seals plaintext to the holder of the X25519 private key whose
// public key is recipient, with HPKE: DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256 and AES-256-GCM, and the given info. The recipient opens it
// with hpke.Open(hpke.NewDHKEMPrivateKey(key), hpke.HKDFSHA256(),
// hpke.AES256GCM(), info, sealed).
func SealTo(recipient, info, plaintext []byte) ([]byte, error) {
	if len(recipient) != 32 {
		return nil, fmt.Errorf("want an X25519 public key of 32 bytes, got %d", len(recipient))
	}
	pub, err := ecdh.X25519().NewPublicKey(recipient)
	if err != nil {
		return nil, fmt.Errorf("not an X25519 public key: %w", err)
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("not an X25519 public key: %w", err)
	}
	if bytes.Equal(recipient, make([]byte, 32)) {
		return nil, errors.New("the X25519 public key is all zeros")
	}
	return hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, plaintext)
}
