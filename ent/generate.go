// Package ent holds Carbide's data model (schema/) and the ent client
// generated from it. Regenerate with `make generate`.
package ent

//go:generate go run entc.go
