package authn

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// CertIdentifier turns a verified client certificate into a principal.
type CertIdentifier func(cert *x509.Certificate) (*principal.Principal, error)

// Authenticator finds out who makes each HTTP request: a client certificate
// that chains to ClientCAs, else a bearer JWT. It never rejects a request
// itself; it puts the principal, or the reason the credentials were
// refused, into the request's context for authorization to act on.
type Authenticator struct {
	// ClientCAs verifies client certificates; nil accepts none.
	ClientCAs *x509.CertPool
	// Identify maps a verified certificate to its principal.
	Identify CertIdentifier
	// JWT verifies users' bearer tokens; nil accepts none.
	JWT *JWTVerifier
	// Agents verifies the agent tokens the API itself issues; nil accepts
	// none.
	Agents *pki.AgentTokens

	cache verifiedCache
}

// tokenCacheTTL bounds how long a verified token is trusted without being
// verified again, so that a key the issuer withdraws stops working soon.
const tokenCacheTTL = 5 * time.Minute

type failureKey struct{}

// Failure returns why the credentials of the request in ctx were refused,
// or nil.
func Failure(ctx context.Context) error {
	err, _ := ctx.Value(failureKey{}).(error)
	return err
}

// Middleware authenticates each request before next handles it.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r)
		ctx := r.Context()
		switch {
		case err != nil:
			ctx = context.WithValue(ctx, failureKey{}, err)
		case p != nil:
			ctx = principal.With(ctx, p)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (a *Authenticator) authenticate(r *http.Request) (*principal.Principal, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return a.certificate(r.TLS.PeerCertificates)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, nil
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errors.New("the authorization header must be 'Bearer <JWT>'")
	}
	token = strings.TrimSpace(token)
	// Verified tokens are remembered by their hash (never the token) until
	// they expire, at most tokenCacheTTL: a signature check costs about a
	// hundred times more than the lookup.
	now := time.Now()
	key := sha256.Sum256([]byte(token))
	if p, ok := a.cache.get(key, now); ok {
		return p, nil
	}
	p, err := a.verifyToken(r.Context(), token, now)
	if err != nil {
		return nil, err
	}
	until := now.Add(tokenCacheTTL)
	if p.Expires.Before(until) {
		until = p.Expires
	}
	a.cache.put(key, p, until)
	return p, nil
}

// verifyToken verifies a bearer token: an agent token the API issued, else
// a user's JWT.
func (a *Authenticator) verifyToken(ctx context.Context, token string, now time.Time) (*principal.Principal, error) {
	if a.Agents != nil {
		p, err := a.Agents.Verify(token, now)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, pki.ErrNotAgentToken) {
			return nil, err
		}
	}
	if a.JWT == nil {
		return nil, errors.New("bearer tokens are not accepted: the API has no JWT issuer configured")
	}
	p, err := a.JWT.Verify(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("bearer token not accepted: %w", err)
	}
	return p, nil
}

// certificate verifies a client certificate chain. The TLS handshake only
// requests the certificate, so that a bad one gets a clear Unauthenticated
// answer instead of a failed handshake. Results are cached per leaf
// certificate until it expires.
func (a *Authenticator) certificate(chain []*x509.Certificate) (*principal.Principal, error) {
	leaf := chain[0]
	now := time.Now()
	key := sha256.Sum256(leaf.Raw)
	if p, ok := a.cache.get(key, now); ok {
		return p, nil
	}
	if a.ClientCAs == nil {
		return nil, errors.New("client certificates are not accepted: the API has no client CA configured")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         a.ClientCAs,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("client certificate not accepted: %w", err)
	}
	p, err := a.Identify(leaf)
	if err != nil {
		return nil, fmt.Errorf("client certificate not accepted: %w", err)
	}
	a.cache.put(key, p, leaf.NotAfter)
	return p, nil
}

// verifiedCache remembers verified certificates and tokens by hash; it is
// emptied when full.
type verifiedCache struct {
	mu sync.RWMutex
	m  map[[32]byte]cachedCert
}

type cachedCert struct {
	p       *principal.Principal
	expires time.Time
}

const cacheSize = 4096

func (c *verifiedCache) get(key [32]byte, now time.Time) (*principal.Principal, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[key]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.p, true
}

func (c *verifiedCache) put(key [32]byte, p *principal.Principal, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= cacheSize {
		c.m = make(map[[32]byte]cachedCert)
	}
	c.m[key] = cachedCert{p: p, expires: expires}
}
