package secrets

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func keyLine(t *testing.T, id string) string {
	t.Helper()
	l, err := GenerateKeyLine(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSealOpenAndRotate(t *testing.T) {
	old := keyLine(t, "k1")
	k1, err := Parse(old)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("machine A")
	s, err := k1.Seal([]byte("pw"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != "k1" || bytes.Contains(s.Ciphertext, []byte("pw")) {
		t.Fatalf("sealed %+v", s)
	}
	if pt, err := k1.Open(s, aad); err != nil || string(pt) != "pw" {
		t.Fatalf("open: %q, %v", pt, err)
	}
	// Another row's associated data does not open it.
	if _, err := k1.Open(s, []byte("machine B")); err == nil {
		t.Error("opened with another row's associated data")
	}
	s2 := s
	s2.Ciphertext = bytes.Clone(s.Ciphertext)
	s2.Ciphertext[len(s2.Ciphertext)-1] ^= 1
	if _, err := k1.Open(s2, aad); err == nil {
		t.Error("opened an altered secret")
	}
	// Rotation: a new key first, the old one below.
	k2, err := Parse("# rotated\n" + keyLine(t, "k2") + "\n\n" + old + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if k2.Primary() != "k2" {
		t.Fatalf("primary %s", k2.Primary())
	}
	r, changed, err := k2.Reseal(s, aad)
	if err != nil || !changed || r.KeyID != "k2" {
		t.Fatalf("reseal: %+v %t %v", r, changed, err)
	}
	if pt, err := k2.Open(r, aad); err != nil || string(pt) != "pw" {
		t.Fatalf("open resealed: %q, %v", pt, err)
	}
	if _, changed, _ := k2.Reseal(r, aad); changed {
		t.Error("resealed a secret under the primary again")
	}
	// Without the old key, the old secret names the missing key.
	k3, _ := Parse(keyLine(t, "k3"))
	if _, err := k3.Open(s, aad); err == nil || !strings.Contains(err.Error(), `"k1"`) {
		t.Errorf("open under a missing key: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	good := keyLine(t, "a")
	short := "b " + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for name, text := range map[string]string{
		"empty":      "# nothing\n",
		"duplicate":  good + "\n" + strings.Replace(keyLine(t, "x"), "x ", "a ", 1),
		"short":      short,
		"not base64": "c !!!",
		"bad id":     "bad/id " + strings.Fields(good)[1],
		"one field":  "onlyid",
	} {
		if _, err := Parse(text); err == nil {
			t.Errorf("%s: parsed", name)
		} else if strings.Contains(err.Error(), strings.Fields(good)[1]) {
			t.Errorf("%s: the error shows key material: %v", name, err)
		}
	}
}

func TestLoadRefusesOpenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(keyLine(t, "k1")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("load of a 0644 file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Error(err)
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	line := keyLine(t, "k1")
	k, err := Parse(line)
	if err != nil {
		t.Fatal(err)
	}
	material := strings.Fields(line)[1]
	raw, _ := base64.StdEncoding.DecodeString(material)
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "keys", k)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "keys", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x", k, k, k, k, k, k), logs.String()} {
		if strings.Contains(s, material) || strings.Contains(s, fmt.Sprintf("%x", raw)) || bytes.Contains([]byte(s), raw) {
			t.Errorf("key material printed: %s", s)
		}
	}
}

func TestSealToOpensWithTheDaemonsKey(t *testing.T) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	info := []byte("carbide bmc password m1")
	sealed, err := SealTo(priv.PublicKey().Bytes(), info, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(key, hpke.HKDFSHA256(), hpke.AES256GCM(), info, sealed)
	if err != nil || string(pt) != "pw" {
		t.Fatalf("open: %q, %v", pt, err)
	}
	if _, err := hpke.Open(key, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("carbide bmc password m2"), sealed); err == nil {
		t.Error("opened with another info")
	}
	other, _ := ecdh.X25519().GenerateKey(rand.Reader)
	okey, _ := hpke.NewDHKEMPrivateKey(other)
	if _, err := hpke.Open(okey, hpke.HKDFSHA256(), hpke.AES256GCM(), info, sealed); err == nil {
		t.Error("opened with another key")
	}
	if _, err := SealTo([]byte("short"), info, []byte("pw")); err == nil {
		t.Error("sealed to a 5-byte key")
	}
}
