// Package authn authenticates callers of the Carbide API and turns what they
// present into a principal.Principal: a bearer JWT issued by an OpenID
// Connect provider, checked against the provider's published keys (JWKS).
package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/go-jose/go-jose/v4"
)

// Defaults and limits of JWTConfig.
const (
	// DefaultLeeway is the clock skew allowed when JWTConfig.Leeway is zero.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the largest clock skew JWTConfig.Leeway may allow.
	MaxLeeway = 5 * time.Minute
	// DefaultRefreshInterval is how often keys are refreshed when
	// JWTConfig.RefreshInterval is zero.
	DefaultRefreshInterval = 5 * time.Minute
	// MinRefreshInterval is the shortest JWTConfig.RefreshInterval allowed.
	MinRefreshInterval = time.Second
	// UnknownKeyRefreshInterval is the least time between two key refreshes
	// triggered by tokens that name an unknown kid, so that a stream of
	// forged tokens cannot turn the verifier against the identity provider.
	UnknownKeyRefreshInterval = 10 * time.Second
	// DefaultRolesClaim is the claim read when JWTConfig.RolesClaim is empty.
	DefaultRolesClaim = "roles"

	defaultHTTPTimeout = 10 * time.Second
	// maxTokenBytes bounds the work a single bearer token can cause.
	maxTokenBytes = 32 << 10
	// maxQuoted bounds how much of a token-supplied value an error quotes.
	maxQuoted = 64
)

// DefaultAlgorithms are the signature algorithms accepted when
// JWTConfig.Algorithms is empty: every asymmetric algorithm Carbide supports.
var DefaultAlgorithms = []string{
	string(jose.RS256), string(jose.RS384), string(jose.RS512),
	string(jose.PS256), string(jose.PS384), string(jose.PS512),
	string(jose.ES256), string(jose.ES384), string(jose.ES512),
	string(jose.EdDSA),
}

// Errors returned by JWTVerifier.Verify, each wrapped with detail. Every one
// means the caller is not authenticated; check them with errors.Is.
var (
	// ErrMalformedToken: the token is not a well-formed signed JWT, or a
	// claim has the wrong JSON type.
	ErrMalformedToken = errors.New("malformed token")
	// ErrAlgorithmNotAllowed: the token's alg is not in JWTConfig.Algorithms.
	ErrAlgorithmNotAllowed = errors.New("token signature algorithm not allowed")
	// ErrUnknownKey: no key in the key set can check the token's signature
	// (unknown kid, even after a refresh, or a key for another algorithm).
	ErrUnknownKey = errors.New("token signing key not found")
	// ErrInvalidSignature: the signature does not verify with the key the
	// token names.
	ErrInvalidSignature = errors.New("token signature is invalid")
	// ErrWrongIssuer: the iss claim is not JWTConfig.Issuer.
	ErrWrongIssuer = errors.New("token issuer not accepted")
	// ErrWrongAudience: the aud claim does not contain JWTConfig.Audience.
	ErrWrongAudience = errors.New("token audience not accepted")
	// ErrExpired: exp is past, beyond the leeway.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf is in the future, beyond the leeway.
	ErrNotYetValid = errors.New("token not valid yet")
	// ErrIssuedInFuture: iat is in the future, beyond the leeway.
	ErrIssuedInFuture = errors.New("token issued in the future")
	// ErrMissingClaim: a required claim (exp, sub) is absent.
	ErrMissingClaim = errors.New("token lacks a required claim")
	// ErrNoRole: the roles claim names no Carbide user role.
	ErrNoRole = errors.New("token carries no Carbide role")
)

// JWTConfig configures bearer-token verification.
type JWTConfig struct {
	// Issuer is required: the iss claim must equal it.
	Issuer string
	// Audience is required: the aud claim must contain it.
	Audience string
	// JWKSURL is where the signing keys (a JWK Set) are fetched from and
	// refreshed: https, or http only for a loopback host. Exactly one of
	// JWKSURL and JWKSFile must be set.
	JWKSURL string
	// JWKSFile is a file holding the JWK Set instead; it is re-read when it
	// changes, checked at most every RefreshInterval.
	JWKSFile string
	// RolesClaim is the claim holding the caller's roles; default "roles".
	// A dotted path such as "realm_access.roles" reaches into nested
	// objects, unless a top-level claim has the whole name (so namespaced
	// claims like "https://carbide.dev/roles" work). The claim may be a
	// JSON array of strings or a space-separated string.
	RolesClaim string
	// RolePrefix, if set, must begin a role name and is stripped from it
	// ("carbide-admin" -> admin). Names without it, and names that are not
	// admin, operator or viewer after stripping, are ignored.
	RolePrefix string
	// Algorithms are the signature algorithms accepted; default
	// DefaultAlgorithms. "none" and HS* are rejected by Validate.
	Algorithms []string
	// Leeway is the clock skew allowed for exp, nbf and iat; zero means
	// DefaultLeeway; at most MaxLeeway.
	Leeway time.Duration
	// RefreshInterval is how often keys are refreshed; zero means
	// DefaultRefreshInterval; at least MinRefreshInterval. A token naming an
	// unknown kid also triggers a refresh, at most once per
	// UnknownKeyRefreshInterval; a bad signature never does.
	RefreshInterval time.Duration
	// HTTPClient fetches JWKSURL; default a client with a 10s timeout. A
	// client without CheckRedirect is copied and given one that refuses
	// redirects to plain http (other than loopback).
	HTTPClient *http.Client
}

// Validate reports every problem with the config at once.
func (c *JWTConfig) Validate() error {
	var errs []error
	switch {
	case c.JWKSURL == "" && c.JWKSFile == "":
		errs = append(errs, errors.New("jwks: set one of the JWKS URL (e.g. https://idp.example.com/realms/carbide/protocol/openid-connect/certs) or a JWKS file"))
	case c.JWKSURL != "" && c.JWKSFile != "":
		errs = append(errs, errors.New("jwks: set either the JWKS URL or the JWKS file, not both"))
	case c.JWKSURL != "":
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			errs = append(errs, fmt.Errorf("jwks url: %w", err))
		}
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer: required, the exact iss claim of accepted tokens (e.g. https://idp.example.com/realms/carbide)"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("audience: required, the aud value the identity provider puts in tokens for Carbide (e.g. carbide)"))
	}
	for _, a := range c.Algorithms {
		if err := checkAlgorithm(a); err != nil {
			errs = append(errs, fmt.Errorf("algorithms: %w", err))
		}
	}
	if c.RolesClaim != "" && strings.Contains("."+c.RolesClaim+".", "..") {
		errs = append(errs, fmt.Errorf("roles claim: %q has an empty path element; use a name like roles or realm_access.roles", c.RolesClaim))
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		errs = append(errs, fmt.Errorf("leeway: %s is outside 0 to %s", c.Leeway, MaxLeeway))
	}
	if c.RefreshInterval < 0 || (c.RefreshInterval > 0 && c.RefreshInterval < MinRefreshInterval) {
		errs = append(errs, fmt.Errorf("refresh interval: %s is below the minimum %s", c.RefreshInterval, MinRefreshInterval))
	}
	return errors.Join(errs...)
}

// checkJWKSURL accepts https URLs, and http ones only for a loopback host.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q must use https: keys fetched over plain http can be replaced in transit (http is allowed only for loopback)", u.Redacted())
	default:
		return fmt.Errorf("%q must be an https URL", u.Redacted())
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkAlgorithm accepts the asymmetric algorithms in DefaultAlgorithms.
func checkAlgorithm(alg string) error {
	for _, a := range DefaultAlgorithms {
		if alg == a {
			return nil
		}
	}
	switch up := strings.ToUpper(alg); {
	case up == "NONE":
		return fmt.Errorf("%q is never allowed: it means an unsigned token", alg)
	case strings.HasPrefix(up, "HS"):
		return fmt.Errorf("%q is not allowed: HMAC needs a shared secret, and next to public keys it invites key-confusion forgeries", alg)
	default:
		return fmt.Errorf("%q is not supported; use some of %s", alg, strings.Join(DefaultAlgorithms, ", "))
	}
}

// JWTVerifier checks bearer tokens against an identity provider's keys and
// turns them into principals. It is safe for concurrent use.
type JWTVerifier struct {
	cfg       JWTConfig // with defaults applied
	algs      []jose.SignatureAlgorithm
	rolePath  []string
	wantRoles string // for error messages: the role names accepted
	logger    *slog.Logger
	client    *http.Client
	source    string // the key set's URL (redacted) or file, for messages
	now       func() time.Time

	// keys is the current key set; Verify only loads it.
	keys atomic.Pointer[keySet]
	// fileStamp identifies the JWKS file content last loaded. Only the
	// refresh goroutine (and NewJWTVerifier before starting it) uses it.
	fileStamp fileStamp

	// refreshMu guards pending and lastKidRefresh: the on-demand refresh
	// triggered by an unknown kid.
	refreshMu      sync.Mutex
	pending        chan struct{} // closed when the queued refresh is done
	lastKidRefresh time.Time
	kick           chan struct{} // asks the refresh goroutine to refresh now
	done           chan struct{} // closed when the refresh goroutine ends
}

// NewJWTVerifier loads the keys once, failing if that fails, then refreshes
// them in a goroutine that ends when ctx is done. A nil logger discards.
func NewJWTVerifier(ctx context.Context, cfg JWTConfig, logger *slog.Logger) (*JWTVerifier, error) {
	return newJWTVerifier(ctx, cfg, logger, time.Now)
}

func newJWTVerifier(ctx context.Context, cfg JWTConfig, logger *slog.Logger, now func() time.Time) (*JWTVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("jwt config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = slices.Clone(DefaultAlgorithms)
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = DefaultRolesClaim
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	v := &JWTVerifier{
		cfg:      cfg,
		rolePath: strings.Split(cfg.RolesClaim, "."),
		logger:   logger,
		now:      now,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	for _, a := range cfg.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	names := make([]string, len(principal.UserRoles))
	for i, r := range principal.UserRoles {
		names[i] = cfg.RolePrefix + string(r)
	}
	v.wantRoles = strings.Join(names, ", ")
	if cfg.JWKSURL != "" {
		u, _ := url.Parse(cfg.JWKSURL) // checked by Validate
		v.source = u.Redacted()
		v.client = httpClient(cfg.HTTPClient)
	} else {
		v.source = cfg.JWKSFile
	}
	if err := v.refresh(ctx, true); err != nil {
		return nil, fmt.Errorf("load JWT signing keys: %w", err)
	}
	go v.run(ctx)
	return v, nil
}

// Verify checks token — the bearer token itself, without "Bearer " — and
// returns the principal it authenticates: Name is iss + "#" + sub, Roles the
// Carbide user roles in the roles claim, Method principal.MethodJWT. Errors
// wrap one of the Err* sentinels and never contain the token.
//
// A token naming an unknown kid triggers one key refresh (shared with
// concurrent callers, rate-limited) and waits for it, bounded by ctx.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (*principal.Principal, error) {
	p, err := v.verify(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	return p, nil
}

func (v *JWTVerifier) verify(ctx context.Context, token string) (*principal.Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty", ErrMalformedToken)
	}
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrMalformedToken, len(token), maxTokenBytes)
	}
	jws, err := jose.ParseSignedCompact(token, v.algs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, fmt.Errorf("%w: %s (allowed: %s)", ErrAlgorithmNotAllowed, quote(string(alg.Got)), strings.Join(v.cfg.Algorithms, ", "))
		}
		// go-jose's parse errors describe the structure (part count,
		// base64 offset, JSON syntax) and at most quote a header value,
		// never the token; cut them short all the same.
		return nil, fmt.Errorf("%w: %s", ErrMalformedToken, clip(strings.TrimPrefix(err.Error(), "go-jose/go-jose: ")))
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d signatures", ErrMalformedToken, len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(hdr.Algorithm)

	keys, err := v.keysFor(ctx, hdr.KeyID, alg)
	if err != nil {
		return nil, err
	}
	var payload []byte
	for _, k := range keys {
		if payload, err = jws.Verify(k.key); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s signature does not verify with key %s", ErrInvalidSignature, alg, quote(hdr.KeyID))
	}
	return v.principal(payload)
}

// keysFor returns the keys that may have signed a token with this kid and
// alg, refreshing the key set once if the kid is unknown.
func (v *JWTVerifier) keysFor(ctx context.Context, kid string, alg jose.SignatureAlgorithm) ([]verificationKey, error) {
	keys, known := v.keys.Load().lookup(kid, alg)
	if len(keys) > 0 {
		return keys, nil
	}
	if kid == "" {
		return nil, fmt.Errorf("%w: the token names no kid and %d keys in the key set can check %s signatures; the token must name one", ErrUnknownKey, known, alg)
	}
	if known > 0 {
		return nil, fmt.Errorf("%w: key %s cannot check %s signatures", ErrUnknownKey, quote(kid), alg)
	}
	// Look again even when no refresh ran: one may have finished between
	// the first lookup and now.
	v.refreshForUnknownKey(ctx)
	if keys, _ = v.keys.Load().lookup(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	return nil, fmt.Errorf("%w: no key with id %s in %s", ErrUnknownKey, quote(kid), v.source)
}

// refreshForUnknownKey asks the refresh goroutine to reload the keys and
// waits for it, unless such a refresh happened recently. Concurrent callers
// share one refresh.
func (v *JWTVerifier) refreshForUnknownKey(ctx context.Context) {
	v.refreshMu.Lock()
	ch := v.pending
	if ch == nil {
		now := v.now()
		if !v.lastKidRefresh.IsZero() && now.Sub(v.lastKidRefresh) < UnknownKeyRefreshInterval {
			v.refreshMu.Unlock()
			return
		}
		v.lastKidRefresh = now
		ch = make(chan struct{})
		v.pending = ch
		v.kick <- struct{}{} // never blocks: one kick at most is outstanding
	}
	v.refreshMu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-v.done:
	}
}

// principal checks the verified claims and builds the caller.
func (v *JWTVerifier) principal(payload []byte) (*principal.Principal, error) {
	// One pass into a map: exact (case-sensitive) claim names, and every
	// claim is read from the same parse.
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("%w: claims are not a JSON object", ErrMalformedToken)
	}

	iss, err := stringClaim(claims, "iss")
	if err != nil {
		return nil, err
	}
	if iss != v.cfg.Issuer {
		return nil, fmt.Errorf("%w: iss is %s, want %q", ErrWrongIssuer, quote(iss), v.cfg.Issuer)
	}
	if err := v.checkAudience(claims["aud"]); err != nil {
		return nil, err
	}
	exp, err := v.checkTimes(claims)
	if err != nil {
		return nil, err
	}
	sub, err := stringClaim(claims, "sub")
	if err != nil {
		return nil, err
	}
	if sub == "" {
		return nil, fmt.Errorf("%w: sub", ErrMissingClaim)
	}
	roles, err := v.roles(claims)
	if err != nil {
		return nil, err
	}
	return &principal.Principal{
		Name:    iss + "#" + sub,
		Roles:   roles,
		Method:  principal.MethodJWT,
		Expires: exp,
	}, nil
}

func (v *JWTVerifier) checkAudience(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("%w: no aud claim, want %q", ErrWrongAudience, v.cfg.Audience)
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == v.cfg.Audience {
			return nil
		}
		return fmt.Errorf("%w: aud is %s, want %q", ErrWrongAudience, quote(one), v.cfg.Audience)
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformedToken)
	}
	for _, a := range many {
		if a == v.cfg.Audience {
			return nil
		}
	}
	return fmt.Errorf("%w: aud has %d values, none is %q", ErrWrongAudience, len(many), v.cfg.Audience)
}

func (v *JWTVerifier) checkTimes(claims map[string]json.RawMessage) (time.Time, error) {
	now, leeway := v.now(), v.cfg.Leeway
	exp, ok, err := timeClaim(claims, "exp")
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, fmt.Errorf("%w: exp (tokens without an expiry are not accepted)", ErrMissingClaim)
	}
	if !now.Before(exp.Add(leeway)) {
		return time.Time{}, fmt.Errorf("%w at %s, %s ago (leeway %s)", ErrExpired, exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second), leeway)
	}
	nbf, ok, err := timeClaim(claims, "nbf")
	if err != nil {
		return time.Time{}, err
	}
	if ok && now.Add(leeway).Before(nbf) {
		return time.Time{}, fmt.Errorf("%w: nbf is %s, %s from now (leeway %s); check the clocks", ErrNotYetValid, nbf.UTC().Format(time.RFC3339), nbf.Sub(now).Round(time.Second), leeway)
	}
	iat, ok, err := timeClaim(claims, "iat")
	if err != nil {
		return time.Time{}, err
	}
	if ok && now.Add(leeway).Before(iat) {
		return time.Time{}, fmt.Errorf("%w: iat is %s, %s from now (leeway %s); check the clocks", ErrIssuedInFuture, iat.UTC().Format(time.RFC3339), iat.Sub(now).Round(time.Second), leeway)
	}
	return exp, nil
}

// roles reads the Carbide user roles from the roles claim, in the order of
// principal.UserRoles.
func (v *JWTVerifier) roles(claims map[string]json.RawMessage) ([]principal.Role, error) {
	raw, ok := claims[v.cfg.RolesClaim]
	if !ok && len(v.rolePath) > 1 {
		raw, ok = lookupPath(claims, v.rolePath)
	}
	if !ok || isNull(raw) {
		return nil, fmt.Errorf("%w in claim %q: the claim is missing; the identity provider must put one of %s in it", ErrNoRole, v.cfg.RolesClaim, v.wantRoles)
	}
	var names []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		names = strings.Fields(one)
	} else if err := json.Unmarshal(raw, &names); err != nil {
		return nil, fmt.Errorf("%w in claim %q: the claim is neither a string nor an array of strings", ErrNoRole, v.cfg.RolesClaim)
	}
	var held uint64 // bit i: principal.UserRoles[i]
	n := 0
	for _, name := range names {
		name, ok := strings.CutPrefix(name, v.cfg.RolePrefix)
		if !ok {
			continue
		}
		for i, r := range principal.UserRoles {
			if name == string(r) && held&(1<<i) == 0 {
				held |= 1 << i
				n++
			}
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%w in claim %q: it has %d values, none of them %s", ErrNoRole, v.cfg.RolesClaim, len(names), v.wantRoles)
	}
	roles := make([]principal.Role, 0, n)
	for i, r := range principal.UserRoles {
		if held&(1<<i) != 0 {
			roles = append(roles, r)
		}
	}
	return roles, nil
}

// lookupPath follows a dotted claim path through nested JSON objects.
func lookupPath(claims map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	cur := claims
	for _, name := range path[:len(path)-1] {
		raw, ok := cur[name]
		if !ok {
			return nil, false
		}
		var next map[string]json.RawMessage
		if err := json.Unmarshal(raw, &next); err != nil {
			return nil, false
		}
		cur = next
	}
	raw, ok := cur[path[len(path)-1]]
	return raw, ok
}

// stringClaim returns a string claim, "" when it is absent.
func stringClaim(claims map[string]json.RawMessage, name string) (string, error) {
	raw := claims[name]
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s is not a string", ErrMalformedToken, name)
	}
	return s, nil
}

// timeClaim returns a NumericDate claim (seconds since the epoch) and
// whether it is present.
func timeClaim(claims map[string]json.RawMessage, name string) (time.Time, bool, error) {
	raw := claims[name]
	if isNull(raw) {
		return time.Time{}, false, nil
	}
	var secs float64
	if err := json.Unmarshal(raw, &secs); err != nil {
		return time.Time{}, false, fmt.Errorf("%w: %s is not a number", ErrMalformedToken, name)
	}
	// Bound the value so the conversion below cannot overflow and wrap an
	// nbf far in the future into the past.
	if secs < 0 || secs > 1<<40 {
		return time.Time{}, false, fmt.Errorf("%w: %s is out of range", ErrMalformedToken, name)
	}
	return time.Unix(int64(secs), 0), true, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// quote quotes a value taken from a token for an error message, cut short
// so that a hostile token cannot flood the logs.
func quote(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q…", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}

// clip cuts a library's error message about a token short.
func clip(s string) string {
	if len(s) > 2*maxQuoted {
		return strings.ToValidUTF8(s[:2*maxQuoted], "") + "…"
	}
	return s
}
