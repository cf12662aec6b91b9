package authn

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// maxKeySetBytes bounds a JWK Set read from the URL or the file.
	maxKeySetBytes = 1 << 20
	// minRSABits is the smallest RSA modulus accepted for signatures.
	minRSABits = 2048
)

// keySet is an immutable snapshot of the verification keys.
type keySet struct {
	byKid map[string][]verificationKey
	all   []verificationKey
	kids  []string // for logs
	hash  [sha256.Size]byte
}

// verificationKey is one public key from the JWK Set.
type verificationKey struct {
	kid string
	alg jose.SignatureAlgorithm // the JWK's alg member; "" when it has none
	key any                     // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// accepts reports whether k may check a signature made with alg: the key
// type and curve must fit the algorithm, and so must the JWK's own alg.
func (k verificationKey) accepts(alg jose.SignatureAlgorithm) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return key.Curve == elliptic.P256()
		case jose.ES384:
			return key.Curve == elliptic.P384()
		case jose.ES512:
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// lookup returns the keys that may check a token with this kid and alg.
// known counts the keys with that kid (any alg); for a token without a kid,
// the keys for alg, which are used only if there is exactly one.
func (s *keySet) lookup(kid string, alg jose.SignatureAlgorithm) (keys []verificationKey, known int) {
	cands := s.all
	if kid != "" {
		cands = s.byKid[kid]
		if len(cands) == 1 && cands[0].accepts(alg) {
			return cands, 1 // the common case, without allocating
		}
	}
	for _, k := range cands {
		if k.accepts(alg) {
			keys = append(keys, k)
		}
	}
	if kid == "" && len(keys) != 1 {
		return nil, len(keys)
	}
	return keys, len(cands)
}

// parseKeySet reads a JWK Set, keeping the public signing keys. It returns
// why each other key was ignored, and an error if no key is usable.
func parseKeySet(data []byte) (*keySet, []string, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, nil, fmt.Errorf("parse JWK set: %w", err)
	}
	if set.Keys == nil {
		return nil, nil, errors.New(`parse JWK set: no "keys" array`)
	}
	ks := &keySet{byKid: make(map[string][]verificationKey), hash: sha256.Sum256(data)}
	var skipped []string
	for i, raw := range set.Keys {
		var meta struct {
			Kid string `json:"kid"`
			Use string `json:"use"`
		}
		_ = json.Unmarshal(raw, &meta) // a bad key fails the full parse below
		if meta.Use != "" && meta.Use != "sig" {
			continue // an encryption key: not ours to use, nothing to warn about
		}
		k, err := signingKey(raw)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %s): %v", i, quote(meta.Kid), err))
			continue
		}
		ks.byKid[k.kid] = append(ks.byKid[k.kid], k)
		ks.all = append(ks.all, k)
		ks.kids = append(ks.kids, k.kid)
	}
	if len(ks.all) == 0 {
		return nil, skipped, fmt.Errorf("JWK set holds no usable signing key (%d keys, %d ignored)", len(set.Keys), len(skipped))
	}
	return ks, skipped, nil
}

// signingKey parses one JWK, accepting only public RSA (2048 bits or
// more), ECDSA and Ed25519 keys.
func signingKey(raw json.RawMessage) (verificationKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return verificationKey{}, fmt.Errorf("parse: %w", err)
	}
	k := verificationKey{kid: jwk.KeyID, alg: jose.SignatureAlgorithm(jwk.Algorithm), key: jwk.Key}
	switch key := jwk.Key.(type) {
	case *rsa.PublicKey:
		if n := key.N.BitLen(); n < minRSABits {
			return verificationKey{}, fmt.Errorf("RSA key of %d bits is too weak; use %d or more", n, minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey, []byte:
		return verificationKey{}, errors.New("holds private or symmetric key material, which a JWK set must never publish; rotate that key")
	default:
		return verificationKey{}, fmt.Errorf("unsupported key type %T", key)
	}
	if k.alg != "" {
		if err := checkAlgorithm(string(k.alg)); err != nil {
			return verificationKey{}, fmt.Errorf("alg: %w", err)
		}
	}
	return k, nil
}

// fileStamp identifies a version of the JWKS file.
type fileStamp struct {
	modTime time.Time
	size    int64
}

// run refreshes the keys every RefreshInterval and on demand, until ctx is
// done.
func (v *JWTVerifier) run(ctx context.Context) {
	defer close(v.done)
	t := time.NewTicker(v.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.refreshAndLog(ctx, false)
		case <-v.kick:
			v.refreshAndLog(ctx, true)
			v.refreshMu.Lock()
			ch := v.pending
			v.pending = nil
			v.refreshMu.Unlock()
			close(ch)
		}
	}
}

func (v *JWTVerifier) refreshAndLog(ctx context.Context, force bool) {
	if err := v.refresh(ctx, force); err != nil && ctx.Err() == nil {
		v.logger.WarnContext(ctx, "refresh JWT signing keys failed; keeping the current keys",
			"source", v.source, "error", err)
	}
}

// refresh reloads the key set. Unless force is set, an unchanged file is
// not re-read. Only the refresh goroutine calls it, and NewJWTVerifier
// before starting that goroutine.
func (v *JWTVerifier) refresh(ctx context.Context, force bool) error {
	var data []byte
	var stamp fileStamp
	if v.cfg.JWKSURL != "" {
		var err error
		if data, err = v.fetch(ctx); err != nil {
			return err
		}
	} else {
		fi, err := os.Stat(v.cfg.JWKSFile)
		if err != nil {
			return fmt.Errorf("read JWK set: %w", err)
		}
		stamp = fileStamp{modTime: fi.ModTime(), size: fi.Size()}
		if !force && stamp == v.fileStamp {
			return nil
		}
		if data, err = readLimited(v.cfg.JWKSFile); err != nil {
			return err
		}
	}
	old := v.keys.Load()
	if old != nil && old.hash == sha256.Sum256(data) {
		v.fileStamp = stamp
		v.logger.DebugContext(ctx, "JWT signing keys unchanged", "source", v.source)
		return nil
	}
	ks, skipped, err := parseKeySet(data)
	for _, s := range skipped {
		v.logger.WarnContext(ctx, "ignored a key in the JWT signing key set", "source", v.source, "reason", s)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", v.source, err)
	}
	v.fileStamp = stamp
	v.keys.Store(ks)
	if old == nil || !slices.Equal(old.kids, ks.kids) {
		v.logger.InfoContext(ctx, "loaded JWT signing keys", "source", v.source, "kids", ks.kids)
	}
	return nil
}

// fetch GETs the JWK Set from the URL.
func (v *JWTVerifier) fetch(ctx context.Context) ([]byte, error) {
	if v.client.Timeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultHTTPTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWK set: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWK set: %w", err) // the client redacts passwords in URLs
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWK set from %s: status %s", v.source, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWK set from %s: %w", v.source, err)
	}
	if len(body) > maxKeySetBytes {
		return nil, fmt.Errorf("fetch JWK set from %s: larger than %d bytes", v.source, maxKeySetBytes)
	}
	return bytes.TrimSpace(body), nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read JWK set: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeySetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read JWK set: %w", err)
	}
	if len(data) > maxKeySetBytes {
		return nil, fmt.Errorf("read JWK set %s: larger than %d bytes", path, maxKeySetBytes)
	}
	return data, nil
}

// httpClient returns c, or a default client, refusing redirects that would
// leave https.
func httpClient(c *http.Client) *http.Client {
	if c == nil {
		return &http.Client{Timeout: defaultHTTPTimeout, CheckRedirect: checkRedirect}
	}
	if c.CheckRedirect != nil {
		return c
	}
	cc := *c
	cc.CheckRedirect = checkRedirect
	return &cc
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if u := req.URL; u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
		return fmt.Errorf("refuse redirect to %s: a JWK set must come over https", u.Redacted())
	}
	return nil
}
