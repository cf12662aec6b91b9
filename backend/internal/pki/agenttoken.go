package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

// Agent tokens are the credentials of discovery agents booted over the
// network. BootService.GetBootConfig issues one for the machine that boots
// (only to the PXE daemon, for the address that holds the machine's lease,
// in exchange for the nonce of the machine's current boot); the agent
// presents it as a bearer token, and it names that one machine, exactly
// like an agent certificate (spiffe://<td>/agent/<machine-id>) does, and
// the boot it was issued for, which the agent service checks is still the
// machine's current one. They are JWTs that
// the API signs with its own key and alone verifies, with an issuer and
// audience no identity provider uses.
const (
	// AgentTokenKeyFile is the development agent-token signing key, next
	// to the development CA.
	AgentTokenKeyFile = "agent-token.key"
	// AgentTokenIssuer is the iss of every agent token.
	AgentTokenIssuer = "carbide-api/agent"
	// AgentTokenAudience is the aud of every agent token.
	AgentTokenAudience = "carbide-agent"
	// DefaultAgentTokenTTL is how long after a boot starts its agent
	// tokens are valid, however often they are renewed: long enough for a
	// slow boot and inventory, short enough that a leaked one soon expires.
	DefaultAgentTokenTTL = time.Hour

	agentTokenLeeway = 30 * time.Second
)

// ErrNotAgentToken means a bearer token is not an agent token at all, so
// another verifier should look at it.
var ErrNotAgentToken = errors.New("not an agent token")

// ErrBootEnded means a token was asked for a boot whose tokens have
// expired: the machine must boot again.
var ErrBootEnded = errors.New("the boot's agent tokens have expired")

// AgentTokens issues and verifies agent tokens.
type AgentTokens struct {
	key         crypto.Signer
	signer      jose.Signer
	keyID       string
	trustDomain string
	ttl         time.Duration
}

// NewAgentTokens returns an issuer that signs with the ECDSA P-256 key in
// the PEM file keyFile. With create set, a missing file is generated (the
// development setup); otherwise it must exist. Every API replica must use
// the same key, or a token issued by one is refused by the others.
func NewAgentTokens(keyFile, trustDomain string, ttl time.Duration, create bool) (*AgentTokens, bool, error) {
	created := false
	if create {
		if err := ensureDir(filepath.Dir(keyFile)); err != nil {
			return nil, false, err
		}
		ok, err := exists(keyFile)
		if err != nil {
			return nil, false, err
		}
		if !ok {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, false, fmt.Errorf("generate agent token key: %w", err)
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return nil, false, fmt.Errorf("encode agent token key: %w", err)
			}
			if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), 0o600); err != nil {
				return nil, false, err
			}
			created = true
		}
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("agent token key: %w", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, false, fmt.Errorf("agent token key %s: want an ECDSA P-256 key", keyFile)
	}
	if ttl <= 0 {
		ttl = DefaultAgentTokenTTL
	}
	pubDER, err := x509.MarshalPKIXPublicKey(ec.Public())
	if err != nil {
		return nil, false, fmt.Errorf("encode agent token public key: %w", err)
	}
	sum := sha256.Sum256(pubDER)
	kid := "agent-" + base64.RawURLEncoding.EncodeToString(sum[:12])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ec},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return nil, false, fmt.Errorf("agent token signer: %w", err)
	}
	return &AgentTokens{key: ec, signer: signer, keyID: kid, trustDomain: trustDomain, ttl: ttl}, created, nil
}

// agentClaims are an agent token's claims: the machine (sub) and the
// boot it was issued for.
type agentClaims struct {
	jwt.Claims
	Boot string `json:"boot"`
}

// TTL is how long after a boot starts its agent tokens stop working.
func (a *AgentTokens) TTL() time.Duration { return a.ttl }

// Issue returns a token for the agent of machine id in boot, and when it
// expires: the TTL from now, but never after limit (the boot's end).
func (a *AgentTokens) Issue(id, boot uuid.UUID, now, limit time.Time) (string, time.Time, error) {
	exp := now.Add(a.ttl)
	if limit.Before(exp) {
		exp = limit
	}
	exp = exp.Truncate(time.Second)
	if !exp.After(now) {
		return "", time.Time{}, ErrBootEnded
	}
	claims := agentClaims{Claims: jwt.Claims{
		Issuer:    AgentTokenIssuer,
		Subject:   id.String(),
		Audience:  jwt.Audience{AgentTokenAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(exp),
		ID:        uuid.NewString(),
	}, Boot: boot.String()}
	tok, err := jwt.Signed(a.signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign agent token: %w", err)
	}
	return tok, exp, nil
}

// Verify checks an agent token and returns the agent it names. It returns
// ErrNotAgentToken, unwrapped, for a token signed by any other key, so the
// caller can hand it to the user-token verifier.
func (a *AgentTokens) Verify(token string, now time.Time) (*principal.Principal, error) {
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(parsed.Headers) != 1 || parsed.Headers[0].KeyID != a.keyID {
		return nil, ErrNotAgentToken
	}
	var claims agentClaims
	if err := parsed.Claims(a.key.Public(), &claims); err != nil {
		return nil, fmt.Errorf("agent token signature is invalid: %w", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      AgentTokenIssuer,
		AnyAudience: jwt.Audience{AgentTokenAudience},
		Time:        now,
	}, agentTokenLeeway); err != nil {
		return nil, fmt.Errorf("agent token not accepted: %w", err)
	}
	id, err := uuid.Parse(claims.Subject)
	boot, berr := uuid.Parse(claims.Boot)
	if err != nil || berr != nil || claims.Expiry == nil {
		return nil, errors.New("agent token not accepted: it names no machine or boot, or has no expiry")
	}
	return &principal.Principal{
		Name:      AgentID(a.trustDomain, id.String()),
		Roles:     []principal.Role{principal.RoleAgent},
		MachineID: id.String(),
		BootID:    boot.String(),
		Method:    principal.MethodAgentToken,
		Expires:   claims.Expiry.Time(),
	}, nil
}
