package secrets

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Sealed is a secret encrypted at rest: the id of the keyring key that
// sealed it, stored beside it, and the AES-256-GCM ciphertext. Ciphertext
// is the 12-byte random nonce, then the encrypted secret, then the 16-byte
// authentication tag.
type Sealed struct {
	// KeyID is the id of the key that sealed the secret.
	KeyID string
	// Ciphertext is nonce || encrypted secret || tag.
	Ciphertext []byte
}

// AAD builds associated data from parts, each prefixed with its length so
// that different parts never run together into the same bytes
// (AAD("ab", "c") differs from AAD("a", "bc")). Pass the row's identity
// and the field, e.g. AAD("bmc", machineID, "password"), so that a
// ciphertext copied to another row or field does not open.
func AAD(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += binary.MaxVarintLen64 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

// Seal encrypts plaintext under the primary key with a random 96-bit nonce.
// aad binds the secret to its row and field (see AAD); Open needs the same.
func (k *Keyring) Seal(plaintext, aad []byte) (Sealed, error) {
	if k == nil || len(k.ids) == 0 {
		return Sealed{}, ErrNoKeyring
	}
	return Sealed{KeyID: k.primary, Ciphertext: k.aeads[k.primary].Seal(nil, nil, plaintext, aad)}, nil
}

// Open decrypts s with the key it names and the aad it was sealed with.
// A key id the keyring lacks gives an error wrapping ErrUnknownKey that
// names it; a ciphertext that does not authenticate (another row's, or
// changed) gives one wrapping ErrMismatch.
func (k *Keyring) Open(s Sealed, aad []byte) ([]byte, error) {
	if k == nil || len(k.ids) == 0 {
		return nil, ErrNoKeyring
	}
	if s.KeyID == "" {
		return nil, fmt.Errorf("open secret: it names no key id")
	}
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("open secret: %w: %q (the keyring has %s); put that key's line back in the keyring "+
			"(--secrets-key-file or %s), below the primary key, and restart; without it the secret cannot be recovered and must be set again",
			ErrUnknownKey, s.KeyID, strings.Join(k.ids, ", "), EnvKeys)
	}
	pt, err := aead.Open(nil, nil, s.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("open secret sealed under key %q: %w", s.KeyID, ErrMismatch)
	}
	return pt, nil
}

// Reseal re-encrypts s under the primary key if another key sealed it,
// and reports whether it did; a secret under the primary already is
// returned as it is. Key rotation re-seals every stored secret this way
// until none is left under an old key.
func (k *Keyring) Reseal(s Sealed, aad []byte) (Sealed, bool, error) {
	if k == nil || len(k.ids) == 0 {
		return Sealed{}, false, ErrNoKeyring
	}
	if s.KeyID == k.primary {
		return s, false, nil
	}
	pt, err := k.Open(s, aad)
	if err != nil {
		return Sealed{}, false, fmt.Errorf("reseal: %w", err)
	}
	defer clear(pt)
	out, err := k.Seal(pt, aad)
	if err != nil {
		return Sealed{}, false, fmt.Errorf("reseal: %w", err)
	}
	return out, true, nil
}
