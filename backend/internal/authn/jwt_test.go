package authn

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

const (
	testIssuer   = "https://idp.test/realms/carbide"
	testAudience = "carbide"
)

// base is the fake "now" of every verifier in these tests.
var base = time.Unix(1_800_000_000, 0)

// testKey is a signing key with the kid and alg it is published under.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm // put in the JWK when jwkAlg is set
	priv crypto.Signer
	// jwkAlg publishes alg in the JWK's alg member.
	jwkAlg bool
}

func (k testKey) jwk() jose.JSONWebKey {
	j := jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Use: "sig"}
	if k.jwkAlg {
		j.Algorithm = string(k.alg)
	}
	return j
}

type testKeyring struct {
	rsaA, rsaP, rsaB, rsaEvil, ecA, ecB, edA testKey
}

var keys = sync.OnceValue(func() testKeyring {
	newRSA := func() crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	newEC := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeyring{
		rsaA:    testKey{kid: "rsa-a", alg: jose.RS256, priv: newRSA(), jwkAlg: true},
		rsaP:    testKey{kid: "rsa-p", alg: jose.PS256, priv: newRSA()},
		rsaB:    testKey{kid: "rsa-b", alg: jose.RS256, priv: newRSA()},
		rsaEvil: testKey{kid: "rsa-a", alg: jose.RS256, priv: newRSA()}, // same kid as rsaA
		ecA:     testKey{kid: "ec-a", alg: jose.ES256, priv: newEC(), jwkAlg: true},
		ecB:     testKey{kid: "ec-b-rotated", alg: jose.ES256, priv: newEC()},
		edA:     testKey{kid: "ed-a", alg: jose.EdDSA, priv: ed, jwkAlg: true},
	}
})

// defaultSet is the key set most tests serve.
func defaultSet() []testKey {
	k := keys()
	return []testKey{k.rsaA, k.rsaP, k.ecA, k.edA}
}

func jwksJSON(t testing.TB, ks ...testKey) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range ks {
		set.Keys = append(set.Keys, k.jwk())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims are valid claims for the default config at base.
func claims(mods ...func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss":   testIssuer,
		"sub":   "alice",
		"aud":   testAudience,
		"exp":   base.Add(time.Hour).Unix(),
		"iat":   base.Add(-time.Minute).Unix(),
		"nbf":   base.Add(-time.Minute).Unix(),
		"roles": []string{"admin", "other-app-admin"},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
func del(k string) func(map[string]any)        { return func(c map[string]any) { delete(c, k) } }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign signs payload with k, naming k.kid unless kid overrides it ("-" for
// no kid at all).
func sign(t testing.TB, k testKey, alg jose.SignatureAlgorithm, kid string, payload []byte, extra map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	switch kid {
	case "":
		opts = opts.WithHeader("kid", k.kid)
	case "-":
	default:
		opts = opts.WithHeader("kid", kid)
	}
	for h, v := range extra {
		opts = opts.WithHeader(h, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	testsecret.Register(t, tok)
	return tok
}

// signClaims signs claims with k under its own kid and alg.
func signClaims(t testing.TB, k testKey, c map[string]any) string {
	t.Helper()
	return sign(t, k, k.alg, "", mustJSON(t, c), nil)
}

var b64 = base64.RawURLEncoding

// craft builds a compact token by hand; mac, if set, signs it with HMAC-SHA256.
func craft(t testing.TB, header, payload map[string]any, mac []byte) string {
	t.Helper()
	in := b64.EncodeToString(mustJSON(t, header)) + "." + b64.EncodeToString(mustJSON(t, payload))
	var sig []byte
	if mac != nil {
		h := hmac.New(sha256.New, mac)
		h.Write([]byte(in))
		sig = h.Sum(nil)
	}
	return in + "." + b64.EncodeToString(sig)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwksServer serves a JWK Set that tests can swap, counting fetches.
type jwksServer struct {
	*httptest.Server
	body   atomic.Pointer[[]byte]
	status atomic.Int32
	hits   atomic.Int64
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.serve(body)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(body []byte) { s.body.Store(&body) }

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type env struct {
	v     *JWTVerifier
	srv   *jwksServer // nil for a file config
	clock *fakeClock
	logs  *syncBuffer
}

// newEnv serves ks and starts a verifier on it; cfg fills in the rest.
func newEnv(t testing.TB, cfg JWTConfig, ks ...testKey) *env {
	t.Helper()
	e := &env{}
	if cfg.JWKSFile == "" && cfg.JWKSURL == "" {
		e.srv = newJWKSServer(t, jwksJSON(t, ks...))
		cfg.JWKSURL = e.srv.URL + "/certs"
	}
	v, clock, logs, err := startVerifier(t, cfg)
	if err != nil {
		t.Fatalf("NewJWTVerifier: %v", err)
	}
	e.v, e.clock, e.logs = v, clock, logs
	return e
}

// startVerifier fills in issuer and audience and starts a verifier at base
// with a debug logger, stopped at cleanup.
func startVerifier(t testing.TB, cfg JWTConfig) (*JWTVerifier, *fakeClock, *syncBuffer, error) {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = testAudience
	}
	clock := &fakeClock{t: base}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	v, err := newJWTVerifier(ctx, cfg, logger, clock.Now)
	if err != nil {
		cancel()
		return nil, clock, logs, err
	}
	t.Cleanup(func() {
		cancel()
		<-v.done
	})
	return v, clock, logs, nil
}

// assertNoLeak fails if the token, or any long part of it, shows up in s.
func assertNoLeak(t testing.TB, what, s, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(s, token) {
		t.Errorf("%s contains the token: %s", what, s)
		return
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 16 && strings.Contains(s, part) {
			t.Errorf("%s contains part of the token (%q): %s", what, part, s)
		}
	}
}

func TestJWTConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func(mods ...func(*JWTConfig)) JWTConfig {
		c := JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSURL: "https://idp.test/certs"}
		for _, m := range mods {
			m(&c)
		}
		return c
	}
	tests := map[string]struct {
		cfg  JWTConfig
		want []string // substrings, one per expected problem; none means valid
	}{
		"valid https":      {cfg: valid()},
		"valid file":       {cfg: valid(func(c *JWTConfig) { c.JWKSURL, c.JWKSFile = "", "/etc/carbide/jwks.json" })},
		"http loopback v4": {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "http://127.0.0.1:8080/certs" })},
		"http loopback v6": {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "http://[::1]:8080/certs" })},
		"http localhost":   {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "http://localhost/certs" })},
		"all options": {cfg: valid(func(c *JWTConfig) {
			c.Algorithms, c.Leeway, c.RefreshInterval, c.RolesClaim = []string{"ES256"}, MaxLeeway, time.Second, "realm_access.roles"
		})},
		"empty":              {cfg: JWTConfig{}, want: []string{"jwks: set one of", "issuer: required", "audience: required"}},
		"url and file":       {cfg: valid(func(c *JWTConfig) { c.JWKSFile = "/etc/jwks.json" }), want: []string{"not both"}},
		"http remote":        {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "http://idp.test/certs" }), want: []string{"must use https"}},
		"other scheme":       {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "ftp://idp.test/certs" }), want: []string{"must be an https URL"}},
		"no host":            {cfg: valid(func(c *JWTConfig) { c.JWKSURL = "https:///certs" }), want: []string{"has no host"}},
		"alg none":           {cfg: valid(func(c *JWTConfig) { c.Algorithms = []string{"RS256", "none"} }), want: []string{`"none" is never allowed`}},
		"alg HS256":          {cfg: valid(func(c *JWTConfig) { c.Algorithms = []string{"HS256"} }), want: []string{`"HS256" is not allowed`}},
		"alg hs512":          {cfg: valid(func(c *JWTConfig) { c.Algorithms = []string{"hs512"} }), want: []string{`"hs512" is not allowed`}},
		"alg unknown":        {cfg: valid(func(c *JWTConfig) { c.Algorithms = []string{"RS1"} }), want: []string{`"RS1" is not supported`}},
		"leeway too long":    {cfg: valid(func(c *JWTConfig) { c.Leeway = 6 * time.Minute }), want: []string{"leeway"}},
		"leeway negative":    {cfg: valid(func(c *JWTConfig) { c.Leeway = -time.Second }), want: []string{"leeway"}},
		"refresh too short":  {cfg: valid(func(c *JWTConfig) { c.RefreshInterval = 10 * time.Millisecond }), want: []string{"refresh interval"}},
		"roles claim broken": {cfg: valid(func(c *JWTConfig) { c.RolesClaim = "realm_access..roles" }), want: []string{"empty path element"}},
		"every problem at once": {
			cfg: JWTConfig{JWKSURL: "http://idp.test/", Algorithms: []string{"none", "HS256"}, Leeway: time.Hour, RefreshInterval: -1},
			want: []string{
				"must use https", "issuer: required", "audience: required", `"none"`, `"HS256"`,
				"leeway", "refresh interval",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Validate() = %q, want it to mention %q", msg, w)
				}
			}
			if got := strings.Count(msg, "\n") + 1; got != len(tc.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%s", got, len(tc.want), msg)
			}
		})
	}
}

func TestVerifyAccepts(t *testing.T) {
	t.Parallel()
	k := keys()
	tests := map[string]struct {
		cfg   JWTConfig
		set   []testKey // default: defaultSet()
		token func(t testing.TB) string
		want  *principal.Principal
	}{
		"RS256": {
			token: func(t testing.TB) string { return signClaims(t, k.rsaA, claims()) },
			want:  &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"ES256": {
			token: func(t testing.TB) string { return signClaims(t, k.ecA, claims(set("sub", "bob"))) },
			want:  &principal.Principal{Name: testIssuer + "#bob", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"PS256": {
			token: func(t testing.TB) string { return signClaims(t, k.rsaP, claims()) },
			want:  &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"RS512 with a key that names no alg": {
			token: func(t testing.TB) string { return sign(t, k.rsaP, jose.RS512, "", mustJSON(t, claims()), nil) },
			want:  &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"EdDSA": {
			token: func(t testing.TB) string { return signClaims(t, k.edA, claims()) },
			want:  &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"no kid, one key": {
			set:   []testKey{k.rsaA},
			token: func(t testing.TB) string { return sign(t, k.rsaA, jose.RS256, "-", mustJSON(t, claims()), nil) },
			want:  &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"audience array": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("aud", []string{"account", testAudience})))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"expired within leeway": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("exp", base.Add(-29*time.Second).Unix())))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"nbf within leeway": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("nbf", base.Add(29*time.Second).Unix()), set("iat", base.Add(29*time.Second).Unix())))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"longer leeway": {
			cfg: JWTConfig{Leeway: 2 * time.Minute},
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("exp", base.Add(-90*time.Second).Unix())))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin}, Method: principal.MethodJWT},
		},
		"roles as space-separated string, deduplicated, canonical order": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("roles", "viewer  operator viewer admin-not")))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleOperator, principal.RoleViewer}, Method: principal.MethodJWT},
		},
		"nested roles claim (Keycloak)": {
			cfg: JWTConfig{RolesClaim: "realm_access.roles"},
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(del("roles"), set("realm_access", map[string]any{"roles": []string{"offline_access", "viewer"}})))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleViewer}, Method: principal.MethodJWT},
		},
		"namespaced claim with dots (Auth0)": {
			cfg: JWTConfig{RolesClaim: "https://carbide.dev/roles"},
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(del("roles"), set("https://carbide.dev/roles", []string{"operator"})))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleOperator}, Method: principal.MethodJWT},
		},
		"role prefix": {
			cfg: JWTConfig{RolePrefix: "carbide-"},
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("roles", []string{"admin", "carbide-viewer", "carbide-root", "wiki-operator"})))
			},
			// "admin" lacks the prefix: it may be another application's admin.
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleViewer}, Method: principal.MethodJWT},
		},
		"all three roles": {
			token: func(t testing.TB) string {
				return signClaims(t, k.ecA, claims(set("roles", []string{"viewer", "admin", "operator"})))
			},
			want: &principal.Principal{Name: testIssuer + "#alice", Roles: []principal.Role{principal.RoleAdmin, principal.RoleOperator, principal.RoleViewer}, Method: principal.MethodJWT},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := tc.set
			if ks == nil {
				ks = defaultSet()
			}
			e := newEnv(t, tc.cfg, ks...)
			got, err := e.v.Verify(context.Background(), tc.token(t))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(principal.Principal{}, "Expires")); diff != "" {
				t.Errorf("Verify principal (-want +got):\n%s", diff)
			}
			if got.Expires.IsZero() {
				t.Error("Verify left Expires unset; the token's exp belongs there")
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	k := keys()
	rsaPub := k.rsaA.priv.Public().(*rsa.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hdr := func(alg, kid string) map[string]any {
		h := map[string]any{"alg": alg, "typ": "JWT"}
		if kid != "" {
			h["kid"] = kid
		}
		return h
	}
	tests := map[string]struct {
		cfg     JWTConfig
		token   func(t testing.TB) string
		wantErr error
		wantMsg string // optional substring of the error
	}{
		"alg none": {
			token:   func(t testing.TB) string { return craft(t, hdr("none", "rsa-a"), claims(), nil) },
			wantErr: ErrAlgorithmNotAllowed, wantMsg: `"none"`,
		},
		"alg None": {
			token:   func(t testing.TB) string { return craft(t, hdr("None", "rsa-a"), claims(), nil) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"alg none without kid": {
			token:   func(t testing.TB) string { return craft(t, hdr("none", ""), claims(), nil) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"HS256 keyed with the RSA public key PEM": {
			token:   func(t testing.TB) string { return craft(t, hdr("HS256", "rsa-a"), claims(), pemBytes) },
			wantErr: ErrAlgorithmNotAllowed, wantMsg: `"HS256"`,
		},
		"HS256 keyed with the RSA public key DER": {
			token:   func(t testing.TB) string { return craft(t, hdr("HS256", "rsa-a"), claims(), der) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"HS256 keyed with the RSA modulus": {
			token:   func(t testing.TB) string { return craft(t, hdr("HS256", "rsa-a"), claims(), rsaPub.N.Bytes()) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"HS256 keyed with the JWKS JSON, no kid": {
			token:   func(t testing.TB) string { return craft(t, hdr("HS256", ""), claims(), jwksJSON(t, defaultSet()...)) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"algorithm outside a narrowed list": {
			cfg:     JWTConfig{Algorithms: []string{"ES256"}},
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims()) },
			wantErr: ErrAlgorithmNotAllowed,
		},
		"unknown kid": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaB, claims()) },
			wantErr: ErrUnknownKey, wantMsg: `"rsa-b"`,
		},
		"unknown kid, very long": {
			token: func(t testing.TB) string {
				return sign(t, k.rsaB, jose.RS256, strings.Repeat("k", 10000), mustJSON(t, claims()), nil)
			},
			wantErr: ErrUnknownKey,
		},
		"kid of the wrong type": {
			token: func(t testing.TB) string {
				return craft(t, map[string]any{"alg": "RS256", "kid": map[string]any{"x": strings.Repeat("y", 10000)}}, claims(), nil)
			},
			wantErr: ErrMalformedToken,
		},
		"different key, same kid": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaEvil, claims()) },
			wantErr: ErrInvalidSignature,
		},
		"attacker key embedded in the jwk header": {
			token: func(t testing.TB) string {
				evil := k.rsaEvil.jwk()
				return sign(t, k.rsaEvil, jose.RS256, "", mustJSON(t, claims()), map[jose.HeaderKey]any{"jwk": evil})
			},
			wantErr: ErrInvalidSignature,
		},
		"claims altered after signing": {
			token: func(t testing.TB) string {
				parts := strings.Split(signClaims(t, k.rsaA, claims(set("roles", "viewer"))), ".")
				parts[1] = b64.EncodeToString(mustJSON(t, claims(set("roles", "admin"))))
				return strings.Join(parts, ".")
			},
			wantErr: ErrInvalidSignature,
		},
		"signature stripped": {
			token: func(t testing.TB) string {
				tok := signClaims(t, k.rsaA, claims())
				return tok[:strings.LastIndex(tok, ".")+1]
			},
			wantErr: ErrInvalidSignature,
		},
		"unknown critical header": {
			token: func(t testing.TB) string {
				return sign(t, k.rsaA, jose.RS256, "", mustJSON(t, claims()), map[jose.HeaderKey]any{"crit": []string{"carbide-extension"}, "carbide-extension": true})
			},
			wantErr: ErrInvalidSignature,
		},
		"RSA signature under an EC key's kid": {
			token:   func(t testing.TB) string { return sign(t, k.rsaA, jose.RS256, "ec-a", mustJSON(t, claims()), nil) },
			wantErr: ErrUnknownKey, wantMsg: "cannot check RS256",
		},
		"ES384 claimed for a P-256 key": {
			token:   func(t testing.TB) string { return craft(t, hdr("ES384", "ec-a"), claims(), nil) },
			wantErr: ErrUnknownKey,
		},
		"alg other than the JWK's alg": {
			token:   func(t testing.TB) string { return sign(t, k.rsaA, jose.RS512, "", mustJSON(t, claims()), nil) },
			wantErr: ErrUnknownKey,
		},
		"no kid, several keys could match": {
			token:   func(t testing.TB) string { return sign(t, k.rsaA, jose.RS256, "-", mustJSON(t, claims()), nil) },
			wantErr: ErrUnknownKey, wantMsg: "names no kid",
		},
		"expired": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("exp", base.Add(-31*time.Second).Unix())))
			},
			wantErr: ErrExpired,
		},
		"expired long ago": {
			token: func(t testing.TB) string {
				return signClaims(t, k.ecA, claims(set("exp", base.Add(-24*time.Hour).Unix())))
			},
			wantErr: ErrExpired,
		},
		"missing exp": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("exp"))) },
			wantErr: ErrMissingClaim, wantMsg: "exp",
		},
		"null exp": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("exp", nil))) },
			wantErr: ErrMissingClaim,
		},
		"exp as a string": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("exp", "2099-01-01"))) },
			wantErr: ErrMalformedToken,
		},
		"exp beyond any real date": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("exp", 1e300))) },
			wantErr: ErrMalformedToken,
		},
		"not yet valid": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("nbf", base.Add(31*time.Second).Unix())))
			},
			wantErr: ErrNotYetValid,
		},
		"nbf so large it would wrap": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("nbf", 9.3e18))) },
			wantErr: ErrMalformedToken,
		},
		"issued in the future": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("iat", base.Add(time.Hour).Unix())))
			},
			wantErr: ErrIssuedInFuture,
		},
		"wrong issuer": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("iss", "https://evil.test"))) },
			wantErr: ErrWrongIssuer, wantMsg: `"https://evil.test"`,
		},
		"issuer differs in case": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("iss", strings.ToUpper(testIssuer))))
			},
			wantErr: ErrWrongIssuer,
		},
		"missing issuer": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("iss"))) },
			wantErr: ErrWrongIssuer,
		},
		"issuer under another case of the claim name": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("iss"), set("ISS", testIssuer))) },
			wantErr: ErrWrongIssuer,
		},
		"wrong audience": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("aud", "grafana"))) },
			wantErr: ErrWrongAudience, wantMsg: `"grafana"`,
		},
		"audience array without ours": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("aud", []string{"grafana", "account"})))
			},
			wantErr: ErrWrongAudience,
		},
		"missing audience": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("aud"))) },
			wantErr: ErrWrongAudience,
		},
		"audience as a number": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("aud", 7))) },
			wantErr: ErrMalformedToken,
		},
		"missing subject": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("sub"))) },
			wantErr: ErrMissingClaim, wantMsg: "sub",
		},
		"no roles claim": {
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(del("roles"))) },
			wantErr: ErrNoRole, wantMsg: `token carries no Carbide role in claim "roles"`,
		},
		"no Carbide role": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("roles", []string{"Admin", "superuser"})))
			},
			wantErr: ErrNoRole, wantMsg: "admin, operator, viewer",
		},
		"roles without the prefix": {
			cfg:     JWTConfig{RolePrefix: "carbide-"},
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("roles", []string{"admin"}))) },
			wantErr: ErrNoRole, wantMsg: "carbide-admin",
		},
		"roles claim is an object": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("roles", map[string]any{"admin": true})))
			},
			wantErr: ErrNoRole,
		},
		"nested roles claim missing": {
			cfg:     JWTConfig{RolesClaim: "realm_access.roles"},
			token:   func(t testing.TB) string { return signClaims(t, k.rsaA, claims(set("realm_access", "admin"))) },
			wantErr: ErrNoRole, wantMsg: `"realm_access.roles"`,
		},
		"empty":      {token: func(testing.TB) string { return "" }, wantErr: ErrMalformedToken},
		"one part":   {token: func(testing.TB) string { return "not-a-jwt" }, wantErr: ErrMalformedToken},
		"two parts":  {token: func(testing.TB) string { return "eyJhbGciOiJSUzI1NiJ9.e30" }, wantErr: ErrMalformedToken},
		"four parts": {token: func(testing.TB) string { return "a.b.c.d" }, wantErr: ErrMalformedToken},
		"not base64": {token: func(testing.TB) string { return "!!!!.####.$$$$" }, wantErr: ErrMalformedToken},
		"bearer prefix": {
			token:   func(t testing.TB) string { return "Bearer " + signClaims(t, k.rsaA, claims()) },
			wantErr: ErrMalformedToken,
		},
		"header not JSON": {
			token: func(t testing.TB) string {
				return b64.EncodeToString([]byte("RS256")) + "." + b64.EncodeToString(mustJSON(t, claims())) + ".c2ln"
			},
			wantErr: ErrMalformedToken,
		},
		"JWE (five parts)": {
			token:   func(testing.TB) string { return "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d" },
			wantErr: ErrMalformedToken,
		},
		"signed claims not JSON": {
			token:   func(t testing.TB) string { return sign(t, k.rsaA, jose.RS256, "", []byte("admin please"), nil) },
			wantErr: ErrMalformedToken,
		},
		"signed claims a JSON array": {
			token:   func(t testing.TB) string { return sign(t, k.rsaA, jose.RS256, "", []byte(`["admin"]`), nil) },
			wantErr: ErrMalformedToken,
		},
		"huge token": {
			token: func(t testing.TB) string {
				return signClaims(t, k.rsaA, claims(set("padding", strings.Repeat("x", maxTokenBytes))))
			},
			wantErr: ErrMalformedToken, wantMsg: "bytes",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.cfg, defaultSet()...)
			token := tc.token(t)
			p, err := e.v.Verify(context.Background(), token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", p)
			}
			if p != nil {
				t.Errorf("Verify returned a principal with its error: %+v", p)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Verify error = %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "verify token: ") {
				t.Errorf("Verify error = %q, want it to start with \"verify token: \"", err)
			}
			if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Verify error = %q, want it to mention %q", err, tc.wantMsg)
			}
			if n := len(err.Error()); n > 512 {
				t.Errorf("Verify error is %d bytes long; a hostile token must not blow up the logs: %.600s", n, err)
			}
			assertNoLeak(t, "error", err.Error(), token)
			assertNoLeak(t, "log", e.logs.String(), token)
		})
	}
}

// HS256 stays impossible even if the algorithm check were bypassed: no key
// in a key set can check an HMAC, because symmetric JWKs are never loaded.
func TestHMACRejectedEvenIfAlgorithmAllowed(t *testing.T) {
	t.Parallel()
	k := keys()
	secret := []byte("shared-secret-shared-secret-0123")
	oct := jose.JSONWebKey{Key: secret, KeyID: "rsa-a", Algorithm: "HS256", Use: "sig"}
	body := mustJSON(t, map[string]any{"keys": []any{oct, k.rsaA.jwk()}})
	srv := newJWKSServer(t, body)
	v, _, logs, err := startVerifier(t, JWTConfig{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "private or symmetric key material") {
		t.Errorf("no warning about the symmetric key in the logs:\n%s", logs)
	}
	v.algs = append(v.algs, jose.HS256) // what a broken Validate would allow

	der, err := x509.MarshalPKIXPublicKey(k.rsaA.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string][]byte{"oct secret": secret, "RSA public key": der} {
		tok := craft(t, map[string]any{"alg": "HS256", "kid": "rsa-a"}, claims(), secret)
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("HS256 with the %s: Verify error = %v, want %v", name, err, ErrUnknownKey)
		}
	}
	if _, err := v.Verify(context.Background(), signClaims(t, k.rsaA, claims())); err != nil {
		t.Errorf("Verify RS256 next to an ignored oct key: %v", err)
	}
}

func TestUnknownKidRefreshesOnceThenRateLimits(t *testing.T) {
	t.Parallel()
	k := keys()
	e := newEnv(t, JWTConfig{}, defaultSet()...)
	unknown := signClaims(t, k.rsaB, claims())
	ctx := context.Background()

	if got := e.srv.hits.Load(); got != 1 {
		t.Fatalf("fetches after start = %d, want 1", got)
	}
	if _, err := e.v.Verify(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify = %v, want %v", err, ErrUnknownKey)
	}
	if got := e.srv.hits.Load(); got != 2 {
		t.Fatalf("fetches after an unknown kid = %d, want 2 (one refresh attempt)", got)
	}
	e.clock.Advance(UnknownKeyRefreshInterval - time.Second)
	for range 5 {
		if _, err := e.v.Verify(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Verify = %v, want %v", err, ErrUnknownKey)
		}
	}
	if got := e.srv.hits.Load(); got != 2 {
		t.Errorf("fetches after more unknown kids within %s = %d, want still 2", UnknownKeyRefreshInterval, got)
	}
	// Known kids never trigger a fetch.
	if _, err := e.v.Verify(ctx, signClaims(t, k.rsaA, claims())); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	if _, err := e.v.Verify(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify = %v, want %v", err, ErrUnknownKey)
	}
	if got := e.srv.hits.Load(); got != 3 {
		t.Errorf("fetches once the rate limit passed = %d, want 3", got)
	}
}

func TestConcurrentUnknownKidsShareOneRefresh(t *testing.T) {
	t.Parallel()
	k := keys()
	e := newEnv(t, JWTConfig{}, defaultSet()...)
	e.srv.serve(jwksJSON(t, append(defaultSet(), k.rsaB)...))
	tok := signClaims(t, k.rsaB, claims())
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := e.v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	// Every caller either waited for the one refresh or came after it.
	for err := range errs {
		if err != nil {
			t.Errorf("Verify = %v", err)
		}
	}
	if got := e.srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2 (start + one shared refresh)", got)
	}
	if _, err := e.v.Verify(context.Background(), tok); err != nil {
		t.Errorf("Verify after the refresh: %v", err)
	}
}

func TestUnknownKidWaitIsBoundedByContext(t *testing.T) {
	t.Parallel()
	k := keys()
	release := make(chan struct{})
	var hits atomic.Int64
	body := jwksJSON(t, defaultSet()...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) > 1 {
			<-release // the refresh hangs
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	v, _, _, err := startVerifier(t, JWTConfig{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(ctx, signClaims(t, k.rsaB, claims())); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify = %v, want %v", err, ErrUnknownKey)
	}
	// Known kids are still served while the refresh hangs.
	if _, err := v.Verify(context.Background(), signClaims(t, k.ecA, claims())); err != nil {
		t.Errorf("Verify with a known kid during a hanging refresh: %v", err)
	}
}

func TestKeyRotationViaURL(t *testing.T) {
	t.Parallel()
	k := keys()
	e := newEnv(t, JWTConfig{}, k.rsaA)
	ctx := context.Background()
	oldTok, newTok := signClaims(t, k.rsaA, claims()), signClaims(t, k.rsaB, claims())
	if _, err := e.v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("Verify with the first key: %v", err)
	}

	e.srv.serve(jwksJSON(t, k.rsaB)) // the provider rotates, dropping rsa-a
	p, err := e.v.Verify(ctx, newTok)
	if err != nil {
		t.Fatalf("Verify with the rotated key: %v", err)
	}
	if p.Name != testIssuer+"#alice" {
		t.Errorf("Name = %q", p.Name)
	}
	if _, err := e.v.Verify(ctx, oldTok); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify with the retired key = %v, want %v", err, ErrUnknownKey)
	}
	if !strings.Contains(e.logs.String(), "rsa-b") {
		t.Errorf("the new kid is not logged:\n%s", e.logs)
	}
}

func TestPeriodicRefreshViaURL(t *testing.T) {
	t.Parallel()
	k := keys()
	e := newEnv(t, JWTConfig{RefreshInterval: MinRefreshInterval}, k.rsaA)
	e.srv.serve(jwksJSON(t, k.rsaB))
	waitFor(t, "a periodic fetch", func() bool { return e.srv.hits.Load() >= 2 })
	// Loaded by the timer, so a token with the new kid needs no refresh.
	hits := e.srv.hits.Load()
	if _, err := e.v.Verify(context.Background(), signClaims(t, k.rsaB, claims())); err != nil {
		t.Fatalf("Verify with the new key: %v", err)
	}
	if got := e.srv.hits.Load(); got > hits+1 { // +1: the timer may tick meanwhile
		t.Errorf("Verify fetched keys (%d -> %d); the timer should have loaded them", hits, got)
	}
}

func TestRefreshFailureKeepsKeys(t *testing.T) {
	t.Parallel()
	k := keys()
	e := newEnv(t, JWTConfig{}, defaultSet()...)
	e.srv.status.Store(http.StatusServiceUnavailable)
	ctx := context.Background()
	tok := signClaims(t, k.rsaB, claims())
	if _, err := e.v.Verify(ctx, tok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify = %v, want %v", err, ErrUnknownKey)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "503") || !strings.Contains(logs, "keeping the current keys") {
		t.Errorf("the failed refresh is not logged:\n%s", logs)
	}
	assertNoLeak(t, "log", e.logs.String(), tok)
	if _, err := e.v.Verify(ctx, signClaims(t, k.rsaA, claims())); err != nil {
		t.Errorf("Verify with a known key after a failed refresh: %v", err)
	}
}

func TestJWKSFile(t *testing.T) {
	t.Parallel()
	k := keys()
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(ks ...testKey) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, jwksJSON(t, ks...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // how a Kubernetes secret or a careful operator updates it
			t.Fatal(err)
		}
	}
	write(k.rsaA)
	e := newEnv(t, JWTConfig{JWKSFile: path, RefreshInterval: MinRefreshInterval})
	ctx := context.Background()
	if _, err := e.v.Verify(ctx, signClaims(t, k.rsaA, claims())); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	// A new kid makes the verifier re-read the file at once.
	write(k.rsaB)
	if _, err := e.v.Verify(ctx, signClaims(t, k.rsaB, claims())); err != nil {
		t.Fatalf("Verify after the file changed: %v", err)
	}

	// The clock stands still, so another unknown kid cannot trigger a
	// re-read: only the periodic check of the changed file can load it.
	write(k.rsaB, k.ecB)
	tok := signClaims(t, k.ecB, claims())
	waitFor(t, "the periodic re-read", func() bool {
		_, err := e.v.Verify(ctx, tok)
		return err == nil
	})
	if _, err := e.v.Verify(ctx, signClaims(t, k.rsaA, claims())); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify with the removed key = %v, want %v", err, ErrUnknownKey)
	}
}

func TestNewJWTVerifierFailsWithoutKeys(t *testing.T) {
	t.Parallel()
	k := keys()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	privJWK := mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.rsaA.priv, KeyID: "leaked", Use: "sig"}}})
	var leakedD string
	{
		var raw struct {
			Keys []struct {
				D string `json:"d"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(privJWK, &raw); err != nil || raw.Keys[0].D == "" {
			t.Fatalf("private JWK has no d: %v", err)
		}
		leakedD = raw.Keys[0].D
	}
	tests := map[string]struct {
		status  int
		body    []byte
		file    string // a file config instead of the server
		wantMsg string
	}{
		"server error":       {status: http.StatusInternalServerError, body: []byte("oops"), wantMsg: "500"},
		"not JSON":           {body: []byte("<html>login</html>"), wantMsg: "parse JWK set"},
		"no keys member":     {body: []byte(`{"issuer":"x"}`), wantMsg: `no "keys"`},
		"empty set":          {body: []byte(`{"keys":[]}`), wantMsg: "no usable signing key"},
		"only a private key": {body: privJWK, wantMsg: "no usable signing key"},
		"only an oct key": {
			body:    mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"}}}),
			wantMsg: "no usable signing key",
		},
		"only an encryption key": {
			body:    mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.rsaA.priv.Public(), KeyID: "enc", Use: "enc"}}}),
			wantMsg: "no usable signing key",
		},
		"only a weak RSA key": {
			body:    mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: weak.Public(), KeyID: "weak"}}}),
			wantMsg: "no usable signing key",
		},
		"too large": {body: bytes.Repeat([]byte(" "), maxKeySetBytes+1), wantMsg: "larger than"},
		"missing file": {
			file:    filepath.Join(t.TempDir(), "absent.json"),
			wantMsg: "no such file",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := JWTConfig{JWKSFile: tc.file}
			if tc.file == "" {
				srv := newJWKSServer(t, tc.body)
				if tc.status != 0 {
					srv.status.Store(int32(tc.status))
				}
				cfg.JWKSURL = srv.URL
			}
			v, _, logs, err := startVerifier(t, cfg)
			if err == nil {
				t.Fatalf("NewJWTVerifier succeeded: %+v", v)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "load JWT signing keys: ") {
				t.Errorf("NewJWTVerifier error = %q, want it to start with \"load JWT signing keys: \" and mention %q", err, tc.wantMsg)
			}
			for what, s := range map[string]string{"error": err.Error(), "log": logs.String()} {
				if strings.Contains(s, leakedD) {
					t.Errorf("%s contains private key material: %s", what, s)
				}
			}
		})
	}
}

func TestNewJWTVerifierRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := NewJWTVerifier(context.Background(), JWTConfig{JWKSURL: "https://idp.test/certs", Algorithms: []string{"HS256"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "issuer: required") || !strings.Contains(err.Error(), `"HS256" is not allowed`) {
		t.Fatalf("NewJWTVerifier = %v, want config errors", err)
	}
}

func TestRedirectAwayFromHTTPSRefused(t *testing.T) {
	t.Parallel()
	// The redirect target is never contacted: CheckRedirect refuses it first.
	srv := httptest.NewServer(http.RedirectHandler("http://idp.invalid/certs", http.StatusFound))
	t.Cleanup(srv.Close)
	_, _, _, err := startVerifier(t, JWTConfig{JWKSURL: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "refuse redirect") {
		t.Fatalf("NewJWTVerifier = %v, want a refused redirect", err)
	}
}

func TestRefreshGoroutineEndsWithContext(t *testing.T) {
	t.Parallel()
	k := keys()
	srv := newJWKSServer(t, jwksJSON(t, k.rsaA))
	ctx, cancel := context.WithCancel(context.Background())
	v, err := NewJWTVerifier(ctx, JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSURL: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the refresh goroutine did not end after its context was canceled")
	}
	// A stopped verifier still checks tokens with the keys it has, and an
	// unknown kid fails at once rather than waiting for a refresh.
	tok := signClaims(t, k.rsaA, claims(set("exp", time.Now().Add(time.Hour).Unix()), del("iat"), del("nbf")))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Errorf("Verify after stop: %v", err)
	}
	if _, err := v.Verify(context.Background(), signClaims(t, k.rsaB, claims())); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify with an unknown kid after stop = %v, want %v", err, ErrUnknownKey)
	}
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func BenchmarkVerify(b *testing.B) {
	k := keys()
	for _, key := range []testKey{k.rsaA, k.ecA, k.edA} {
		b.Run(string(key.alg), func(b *testing.B) {
			e := newEnv(b, JWTConfig{}, defaultSet()...)
			tok := signClaims(b, key, claims(set("roles", []string{"operator", "viewer"})))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
