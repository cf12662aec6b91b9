package secrets_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/interceptor"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
)

func TestSecretsSealOpen(t *testing.T) {
	t.Parallel()
	kr := keyring(t, newKey(t, "k2"), newKey(t, "k1"))
	aad := secrets.AAD("bmc", "6f1c1c47-0a47-4b6a-9f6e-1f0b8f7f3c11", "password")
	for name, pt := range map[string][]byte{"password": []byte("calvin-Ø-ünïcode"), "empty": {}, "long": bytes.Repeat([]byte("x"), 4096)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := kr.Seal(pt, aad)
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID != "k2" {
				t.Errorf("sealed under %q; want the primary, k2", s.KeyID)
			}
			if want := 12 + len(pt) + 16; len(s.Ciphertext) != want {
				t.Errorf("ciphertext is %d bytes; want nonce 12 + %d + tag 16 = %d", len(s.Ciphertext), len(pt), want)
			}
			if len(pt) > 4 && bytes.Contains(s.Ciphertext, pt) {
				t.Error("the ciphertext holds the plaintext")
			}
			got, err := kr.Open(s, aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, pt) {
				t.Errorf("Open = %q, want %q", got, pt)
			}
			again, err := kr.Seal(pt, aad)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(again.Ciphertext[:12], s.Ciphertext[:12]) || bytes.Equal(again.Ciphertext, s.Ciphertext) {
				t.Error("two seals of one secret share a nonce or a ciphertext")
			}
		})
	}
}

// TestAADBindsRow checks that a ciphertext opens only for the row and field
// it was sealed for: swapped between machines or between fields, or
// changed anywhere, it fails.
func TestSecretsAADBindsRow(t *testing.T) {
	t.Parallel()
	kr := keyring(t, newKey(t, "k1"))
	const m1, m2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	s1, err := kr.Seal([]byte("password-of-m1"), secrets.AAD("bmc", m1, "password"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := kr.Seal([]byte("password-of-m2"), secrets.AAD("bmc", m2, "password"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) secrets.Sealed {
		c := bytes.Clone(s1.Ciphertext)
		c[i] ^= 1
		return secrets.Sealed{KeyID: s1.KeyID, Ciphertext: c}
	}
	tests := map[string]struct {
		sealed secrets.Sealed
		aad    []byte
	}{
		"m1's secret in m2's row": {s1, secrets.AAD("bmc", m2, "password")},
		"m2's secret in m1's row": {s2, secrets.AAD("bmc", m1, "password")},
		"another field":           {s1, secrets.AAD("bmc", m1, "username")},
		"no aad":                  {s1, nil},
		"parts run together":      {s1, secrets.AAD("bmc"+m1, "password")},
		"nonce changed":           {flip(0), secrets.AAD("bmc", m1, "password")},
		"ciphertext changed":      {flip(14), secrets.AAD("bmc", m1, "password")},
		"tag changed":             {flip(len(s1.Ciphertext) - 1), secrets.AAD("bmc", m1, "password")},
		"truncated":               {secrets.Sealed{KeyID: "k1", Ciphertext: s1.Ciphertext[:20]}, secrets.AAD("bmc", m1, "password")},
		"empty":                   {secrets.Sealed{KeyID: "k1"}, secrets.AAD("bmc", m1, "password")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pt, err := kr.Open(tt.sealed, tt.aad)
			if !errors.Is(err, secrets.ErrMismatch) {
				t.Fatalf("Open = %q, %v; want ErrMismatch", pt, err)
			}
			if !strings.Contains(err.Error(), `key "k1"`) {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
	if got, err := kr.Open(s1, secrets.AAD("bmc", m1, "password")); err != nil || string(got) != "password-of-m1" {
		t.Errorf("Open in its own row = %q, %v", got, err)
	}
	if bytes.Equal(secrets.AAD("ab", "c"), secrets.AAD("a", "bc")) || bytes.Equal(secrets.AAD("a", ""), secrets.AAD("", "a")) {
		t.Error("AAD lets parts run together")
	}
}

func TestSecretsOpenUnknownKey(t *testing.T) {
	t.Parallel()
	old := keyring(t, newKey(t, "2025-01"))
	s, err := old.Seal([]byte("pw"), nil)
	if err != nil {
		t.Fatal(err)
	}
	kr := keyring(t, newKey(t, "2026-12"), newKey(t, "k1"))
	_, err = kr.Open(s, nil)
	if !errors.Is(err, secrets.ErrUnknownKey) {
		t.Fatalf("Open under a key the keyring lacks: %v; want ErrUnknownKey", err)
	}
	for _, w := range []string{`"2025-01"`, "the keyring has 2026-12, k1", "--secrets-key-file", secrets.EnvKeys, "below the primary key"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if _, err := kr.Open(secrets.Sealed{Ciphertext: s.Ciphertext}, nil); err == nil || !strings.Contains(err.Error(), "no key id") {
		t.Errorf("Open without a key id: %v; want an error saying so", err)
	}
}

// TestReseal follows a key rotation: the new key goes first, the old one
// stays below it; secrets under the old key still open, Reseal moves each
// to the new key once, and then the old key can go.
func TestSecretsReseal(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	before := keyring(t, k1)
	aad := secrets.AAD("bmc", "m1", "password")
	s, err := before.Seal([]byte("calvin"), aad)
	if err != nil {
		t.Fatal(err)
	}
	rotated := keyring(t, k2, k1)
	if pt, err := rotated.Open(s, aad); err != nil || string(pt) != "calvin" {
		t.Fatalf("the old key no longer opens after rotation: %q, %v", pt, err)
	}
	if _, _, err := rotated.Reseal(s, secrets.AAD("bmc", "m2", "password")); !errors.Is(err, secrets.ErrMismatch) {
		t.Errorf("Reseal with another row's aad: %v; want ErrMismatch", err)
	}
	moved, changed, err := rotated.Reseal(s, aad)
	if err != nil || !changed {
		t.Fatalf("Reseal = %v, %v; want changed", changed, err)
	}
	if moved.KeyID != "k2" {
		t.Errorf("resealed under %q, want k2", moved.KeyID)
	}
	same, changed, err := rotated.Reseal(moved, aad)
	if err != nil || changed || same.KeyID != moved.KeyID || !bytes.Equal(same.Ciphertext, moved.Ciphertext) {
		t.Errorf("Reseal of a secret under the primary = %v, %v; want it unchanged", changed, err)
	}
	after := keyring(t, k2)
	if pt, err := after.Open(moved, aad); err != nil || string(pt) != "calvin" {
		t.Errorf("the resealed secret without the old key: %q, %v", pt, err)
	}
	if _, err := after.Open(s, aad); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Errorf("the old ciphertext without the old key: %v; want ErrUnknownKey", err)
	}
	if _, _, err := after.Reseal(s, aad); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Errorf("Reseal without the old key: %v; want ErrUnknownKey", err)
	}
}

// TestNoKeyring checks that an API started without keys fails every use
// with ErrNoKeyring, which reaches a client as FailedPrecondition saying
// what to set.
func TestSecretsNoKeyring(t *testing.T) {
	t.Parallel()
	for name, kr := range map[string]*secrets.Keyring{"nil": nil, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := kr.Seal([]byte("pw"), nil); !errors.Is(err, secrets.ErrNoKeyring) {
				t.Errorf("Seal: %v; want ErrNoKeyring", err)
			}
			if _, err := kr.Open(secrets.Sealed{KeyID: "k1", Ciphertext: make([]byte, 40)}, nil); !errors.Is(err, secrets.ErrNoKeyring) {
				t.Errorf("Open: %v; want ErrNoKeyring", err)
			}
			if _, _, err := kr.Reseal(secrets.Sealed{KeyID: "k1"}, nil); !errors.Is(err, secrets.ErrNoKeyring) {
				t.Errorf("Reseal: %v; want ErrNoKeyring", err)
			}
			if kr.PrimaryID() != "" || kr.IDs() != nil || kr.Has("k1") {
				t.Errorf("an empty keyring reports keys: %q %v", kr.PrimaryID(), kr.IDs())
			}
		})
	}
	for _, w := range []string{"--secrets-key-file", secrets.EnvKeys, "carbide-api secrets-key"} {
		if !strings.Contains(secrets.ErrNoKeyring.Error(), w) {
			t.Errorf("ErrNoKeyring %q lacks %q", secrets.ErrNoKeyring, w)
		}
	}
	var nilRing *secrets.Keyring
	_, err := nilRing.Seal([]byte("pw"), nil)
	cerr := interceptor.Translate(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), "/carbide.bmc.v1.BMCService/SetBMC", err)
	if cerr.Code() != connect.CodeFailedPrecondition || cerr.Message() != secrets.ErrNoKeyring.Error() {
		t.Errorf("at the RPC boundary: %v; want failed_precondition with ErrNoKeyring's text", cerr)
	}
}
