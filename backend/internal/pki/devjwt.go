package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The development token issuer: a signing key and its public JSON Web Key
// Set next to the development CA, so that bearer tokens work with zero
// setup. Production deployments configure their own issuer (Vault, any
// OIDC provider) instead.
const (
	DevJWTKeyFile  = "jwt-signing.key"
	DevJWKSFile    = "jwks.json"
	DevJWTIssuer   = "https://carbide.local/dev"
	DevJWTAudience = "carbide-api"
	devJWTKeyID    = "carbide-dev-1"
)

// EnsureDevJWT creates the development signing key and JWKS in dir if they
// are missing, and returns the names of the files it wrote.
func EnsureDevJWT(dir string) (created []string, err error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, DevJWTKeyFile)
	ok, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	if !ok {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate token signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode token signing key: %w", err)
		}
		if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		created = append(created, DevJWTKeyFile)
	} else if err := tighten(keyPath, 0o600); err != nil {
		return nil, err
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	set, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: key.Public(), KeyID: devJWTKeyID, Algorithm: string(jose.ES256), Use: "sig",
	}}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	jwksPath := filepath.Join(dir, DevJWKSFile)
	if old, err := os.ReadFile(jwksPath); err != nil || string(old) != string(set) {
		if err := writeFileAtomic(jwksPath, set, 0o644); err != nil {
			return nil, err
		}
		created = append(created, DevJWKSFile)
	}
	return created, nil
}

// DevToken signs a development bearer token for subject with the given
// roles, valid for ttl, with the key EnsureDevJWT made in dir.
func DevToken(dir, subject string, roles []string, ttl time.Duration) (string, error) {
	if subject == "" || len(roles) == 0 || ttl <= 0 {
		return "", errors.New("a development token needs a subject, at least one role and a positive lifetime")
	}
	key, err := readKeyFile(filepath.Join(dir, DevJWTKeyFile))
	if err != nil {
		return "", fmt.Errorf("%w (start carbide-api --dev once with this data directory to create it)", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", devJWTKeyID))
	if err != nil {
		return "", fmt.Errorf("set up token signer: %w", err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss":   DevJWTIssuer,
		"aud":   DevJWTAudience,
		"sub":   subject,
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(ttl).Unix(),
		"roles": roles,
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}
