package secrets

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
)

// PublicKeySize is the length of the X25519 public key a recipient sends.
const PublicKeySize = 32

// SealTo encrypts plaintext to a recipient's X25519 public key (its 32
// bytes, as ecdh.PublicKey.Bytes gives them) with HPKE in base mode
// (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. The
// result is the 32-byte encapsulated key followed by the ciphertext and
// its tag. info binds the message to its purpose and subject, e.g.
// "carbide bmc password v1 " + machineID; the recipient must pass the same.
//
// The recipient, e.g. the carbide-bmc process that made the key pair at
// start and sent its public key, opens it with crypto/hpke alone:
//
//	priv, _ := ecdh.X25519().GenerateKey(rand.Reader) // once, at start
//	// send priv.PublicKey().Bytes() with the request
//	k, _ := hpke.NewDHKEMPrivateKey(priv)
//	plaintext, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), info, sealed)
//
// Every call uses a fresh ephemeral key, so two seals of one secret differ.
func SealTo(recipientPublicKey, info, plaintext []byte) ([]byte, error) {
	if len(recipientPublicKey) != PublicKeySize {
		return nil, fmt.Errorf("seal to recipient: its public key is %d bytes; want the %d bytes of an X25519 public key", len(recipientPublicKey), PublicKeySize)
	}
	pk, err := hpke.DHKEM(ecdh.X25519()).NewPublicKey(recipientPublicKey)
	if err != nil {
		return nil, fmt.Errorf("seal to recipient: read its X25519 public key: %w", err)
	}
	out, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal to recipient: %w", err)
	}
	return out, nil
}
