package secrets_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/backend/internal/secrets"
)

// daemonKey is what carbide-bmc does at start: an X25519 key pair, whose
// public half it sends with its requests.
func daemonKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// daemonOpen is how carbide-bmc opens what the API sealed to it: crypto/hpke
// alone, with the same suite.
func daemonOpen(t *testing.T, priv *ecdh.PrivateKey, info, sealed []byte) ([]byte, error) {
	t.Helper()
	k, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), info, sealed)
}

func TestSecretsSealTo(t *testing.T) {
	t.Parallel()
	priv := daemonKey(t)
	info := []byte("carbide bmc password v1 11111111-1111-4111-8111-111111111111")
	pt := []byte("calvin")
	sealed, err := secrets.SealTo(priv.PublicKey().Bytes(), info, pt)
	if err != nil {
		t.Fatal(err)
	}
	if want := 32 + len(pt) + 16; len(sealed) != want {
		t.Errorf("sealed is %d bytes; want encapsulated key 32 + %d + tag 16 = %d", len(sealed), len(pt), want)
	}
	got, err := daemonOpen(t, priv, info, sealed)
	if err != nil {
		t.Fatalf("the daemon cannot open it: %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Errorf("opened %q, want %q", got, pt)
	}
	again, err := secrets.SealTo(priv.PublicKey().Bytes(), info, pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, sealed) || bytes.Equal(again[:32], sealed[:32]) {
		t.Error("two seals share an ephemeral key")
	}

	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	otherEnc := bytes.Clone(sealed)
	otherEnc[0] ^= 1
	fails := map[string]struct {
		priv   *ecdh.PrivateKey
		info   []byte
		sealed []byte
	}{
		"another process's key":    {daemonKey(t), info, sealed},
		"another machine's info":   {priv, []byte("carbide bmc password v1 22222222-2222-4222-8222-222222222222"), sealed},
		"no info":                  {priv, nil, sealed},
		"ciphertext changed":       {priv, info, tampered},
		"encapsulated key changed": {priv, info, otherEnc},
		"truncated":                {priv, info, sealed[:40]},
	}
	for name, tt := range fails {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got, err := daemonOpen(t, tt.priv, tt.info, tt.sealed); err == nil {
				t.Errorf("opened %q; want an error", got)
			}
		})
	}
}

func TestSecretsSealToBadKey(t *testing.T) {
	t.Parallel()
	p256, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		key  []byte
		want string
	}{
		"none":                 {nil, "its public key is 0 bytes; want the 32 bytes of an X25519 public key"},
		"31 bytes":             {make([]byte, 31), "is 31 bytes; want the 32 bytes"},
		"33 bytes":             {make([]byte, 33), "is 33 bytes; want the 32 bytes"},
		"a P-256 key":          {p256.PublicKey().Bytes(), "is 65 bytes; want the 32 bytes of an X25519"},
		"all zero (low order)": {make([]byte, 32), "seal to recipient"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := secrets.SealTo(tt.key, []byte("info"), []byte("calvin"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SealTo = %x, %v; want an error containing %q", out, err, tt.want)
			}
		})
	}
}
