package pgtest_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/carbide-dev/carbide/backend/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestDatabase gets two databases in parallel subtests, uses each and checks
// that they are distinct.
func TestDatabase(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]string{} // current_database() -> subtest
	)
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"a", "b"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				dbURL := pgtest.Database(t)
				conn, err := pgx.Connect(ctx, dbURL)
				if err != nil {
					t.Fatalf("connect to %s: %v", dbURL, err)
				}
				// Close before Database's cleanup drops the database.
				t.Cleanup(func() { _ = conn.Close(context.Background()) })

				var tables int
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
					t.Fatalf("count tables: %v", err)
				}
				if tables != 0 {
					t.Fatalf("fresh database has %d tables, want 0", tables)
				}
				if _, err := conn.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)"); err != nil {
					t.Fatalf("create table: %v", err)
				}
				if _, err := conn.Exec(ctx, "INSERT INTO items (id, name) VALUES (1, $1)", name); err != nil {
					t.Fatalf("insert: %v", err)
				}
				var got string
				if err := conn.QueryRow(ctx, "SELECT name FROM items WHERE id = 1").Scan(&got); err != nil {
					t.Fatalf("select: %v", err)
				}
				if got != name {
					t.Fatalf("read back %q, want %q", got, name)
				}

				var db string
				if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
					t.Fatalf("current_database: %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				if other, ok := seen[db]; ok {
					t.Fatalf("subtests %s and %s got the same database %s", other, name, db)
				}
				seen[db] = name
			})
		}
	})
	if !t.Failed() && len(seen) != 2 {
		t.Fatalf("got %d distinct databases, want 2", len(seen))
	}
}

// TestCluster starts a separate cluster directly and checks its URLs and
// that Stop removes everything and may be called twice.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	c, err := pgtest.StartCluster(ctx)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	dbURL, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", dbURL, err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	// Left open on purpose: Stop's fast shutdown must disconnect it.
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, dbURL); err == nil {
		t.Fatalf("connect after stop succeeded")
	}
}
