// Package principal carries the identity of an RPC's caller in its context,
// so that state history and audit records can say who acted.
package principal

import "context"

type key struct{}

// Anonymous names a caller that presented no identity.
const Anonymous = "anonymous"

// With returns ctx carrying the caller's name.
func With(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, key{}, name)
}

// From returns the caller's name, or Anonymous.
func From(ctx context.Context) string {
	if name, ok := ctx.Value(key{}).(string); ok && name != "" {
		return name
	}
	return Anonymous
}
