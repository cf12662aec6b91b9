// Package migrations holds the versioned PostgreSQL schema migrations,
// generated from ../schema by `make generate` (an Atlas migration
// directory). The API applies them at start-up.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
