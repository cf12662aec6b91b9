// Package pagetoken encodes the opaque page tokens of list RPCs (AIP-158):
// the sort key of the last item returned, bound to the filters of the
// request that produced it.
package pagetoken

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
)

// DefaultSize is the page size used when a request asks for 0.
const DefaultSize = 100

// ErrInvalid is returned for a token that is malformed or was issued for
// other filters.
var ErrInvalid = errors.New("page_token is invalid or was issued for a request with other filters; start again without page_token")

type token struct {
	After  string `json:"a"`
	Filter string `json:"f,omitempty"`
}

// Size returns the page size to use for a requested size.
func Size(requested int32) int {
	if requested <= 0 {
		return DefaultSize
	}
	return int(requested)
}

// Filter fingerprints a request's filters so a token cannot be replayed
// against a different query. Pass the filter values in a fixed order.
func Filter(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Encode returns the token that continues after the item with sort key after.
func Encode(after, filter string) string {
	b, _ := json.Marshal(token{After: after, Filter: filter}) // cannot fail for strings
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the sort key a token continues after; "" for an empty token.
func Decode(raw, filter string) (string, error) {
	if raw == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return "", ErrInvalid
	}
	var t token
	if err := json.Unmarshal(b, &t); err != nil || t.After == "" || t.Filter != filter {
		return "", ErrInvalid
	}
	return t.After, nil
}
