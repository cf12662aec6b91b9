// Command migrationgen writes a new versioned PostgreSQL migration into
// ent/migrations when the ent schema differs from what the existing
// migrations build. It replays the migrations into a throwaway PostgreSQL
// cluster and diffs that against the schema, so it needs the PostgreSQL
// server binaries (or CARBIDE_TEST_DATABASE_URL). With no difference it
// writes nothing.
//
// Usage: migrationgen <migrations-dir> [name]
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"strings"

	atlasmigrate "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	atlas "ariga.io/atlas/sql/schema"
	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/schema"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent/migrate"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "migrationgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) (err error) {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("usage: migrationgen <migrations-dir> [name]")
	}
	name := "schema"
	if len(args) == 2 {
		name = args[1]
	}
	dir, err := atlasmigrate.NewLocalDir(args[0])
	if err != nil {
		return fmt.Errorf("open migrations dir: %w", err)
	}

	url := os.Getenv(pgtest.EnvDatabaseURL)
	if url == "" {
		cluster, err := pgtest.StartCluster(ctx)
		if err != nil {
			return fmt.Errorf("start throwaway PostgreSQL (install the server binaries or set %s): %w", pgtest.EnvDatabaseURL, err)
		}
		defer cluster.Stop()
		if url, err = cluster.CreateDatabase(ctx); err != nil {
			return err
		}
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		return fmt.Errorf("open dev database: %w", err)
	}
	defer db.Close()
	m, err := schema.NewMigrate(entsql.OpenDB(dialect.Postgres, db),
		schema.WithDir(dir),
		schema.WithMigrationMode(schema.ModeReplay),
		schema.WithDialect(dialect.Postgres),
		schema.WithFormatter(atlasmigrate.DefaultFormatter),
		schema.WithDropColumn(true),
		schema.WithDropIndex(true),
		schema.WithDiffHook(canonicalPredicates(ctx, db)),
	)
	if err != nil {
		return fmt.Errorf("set up migration planner: %w", err)
	}
	if err := m.NamedDiff(ctx, name, migrate.Tables...); err != nil {
		return fmt.Errorf("diff schema: %w", err)
	}
	return nil
}

// canonicalPredicates makes the predicate of a partial index, as the ent
// schema writes it (state IN ('provisioning', ...)), compare equal to the
// same predicate as PostgreSQL prints it back from the database, with
// casts and parentheses added (((state)::text = ANY (...))). Atlas
// compares the two as text, so without this every run would drop and
// re-create such an index in a new migration. PostgreSQL itself prints the
// schema's predicate, from an index on a scratch copy of the table in a
// transaction that is rolled back; a predicate that prints differently is
// a real change and stays one.
func canonicalPredicates(ctx context.Context, db *sql.DB) schema.DiffHook {
	return func(next schema.Differ) schema.Differ {
		return schema.DiffFunc(func(current, desired *atlas.Schema) ([]atlas.Change, error) {
			for _, t := range desired.Tables {
				ct, ok := current.Table(t.Name)
				if !ok {
					continue
				}
				for _, idx := range t.Indexes {
					want := predicate(idx.Attrs)
					cur, ok := ct.Index(idx.Name)
					if want == nil || !ok {
						continue
					}
					have := predicate(cur.Attrs)
					if have == nil || have.P == want.P {
						continue
					}
					printed, err := printPredicate(ctx, db, ct, want.P)
					if err != nil {
						return nil, fmt.Errorf("print predicate of index %s: %w", idx.Name, err)
					}
					if printed == have.P {
						want.P = have.P
					}
				}
			}
			return next.Diff(current, desired)
		})
	}
}

// predicate is the partial-index predicate among attrs, or nil.
func predicate(attrs []atlas.Attr) *postgres.IndexPredicate {
	for _, a := range attrs {
		if p, ok := a.(*postgres.IndexPredicate); ok {
			return p
		}
	}
	return nil
}

// printPredicate is pred as PostgreSQL prints it back for an index on a
// table with the columns of t (the migrations' replay is gone by the time
// changes are computed, so t is built anew, empty and temporary).
func printPredicate(ctx context.Context, db *sql.DB, t *atlas.Table, pred string) (string, error) {
	cols := make([]string, 0, len(t.Columns))
	for _, c := range t.Columns {
		if c.Type == nil || c.Type.Raw == "" {
			return "", fmt.Errorf("column %s of %s has no type", c.Name, t.Name)
		}
		cols = append(cols, `"`+strings.ReplaceAll(c.Name, `"`, `""`)+`" `+c.Type.Raw)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "CREATE TEMP TABLE carbide_predicate ("+strings.Join(cols, ", ")+")"); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, "CREATE INDEX carbide_predicate_index ON carbide_predicate ((1)) WHERE "+pred); err != nil {
		return "", err
	}
	var printed string
	err = tx.QueryRowContext(ctx, `SELECT pg_get_expr(indpred, indrelid) FROM pg_index
		WHERE indexrelid = 'pg_temp.carbide_predicate_index'::regclass`).Scan(&printed)
	return printed, err
}
