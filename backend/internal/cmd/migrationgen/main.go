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

	atlasmigrate "ariga.io/atlas/sql/migrate"
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
	)
	if err != nil {
		return fmt.Errorf("set up migration planner: %w", err)
	}
	if err := m.NamedDiff(ctx, name, migrate.Tables...); err != nil {
		return fmt.Errorf("diff schema: %w", err)
	}
	return nil
}
