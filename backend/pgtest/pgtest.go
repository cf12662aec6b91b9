package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// EnvDatabaseURL names the environment variable that points [Database] at an
// existing PostgreSQL server instead of a throwaway cluster. The URL's user
// must be allowed to CREATE DATABASE, for example
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
const EnvDatabaseURL = "CARBIDE_TEST_DATABASE_URL"

// opTimeout bounds creating or dropping one database, and starting the
// shared cluster.
const opTimeout = 2 * time.Minute

// shared is the throwaway cluster shared by the whole test binary.
var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error // sticky startup error: later callers fail fast
}

// Database returns the URL of a fresh, empty database on a real PostgreSQL
// server for this test; it is dropped (best effort) at t.Cleanup.
//
// If CARBIDE_TEST_DATABASE_URL is set, the database is created on that
// server (the URL's user must be able to CREATE DATABASE) and the returned
// URL is that URL with the database name replaced. Otherwise it lives on one
// throwaway [Cluster] shared by the whole test binary, started lazily on
// first use and stopped by [Main].
//
// If neither route works Database calls t.Fatalf with a message that says
// how to fix it; it never skips. It is safe for concurrent use by parallel
// tests.
func Database(t testing.TB) string {
	t.Helper()
	if adminURL := os.Getenv(EnvDatabaseURL); adminURL != "" {
		if u, err := url.Parse(adminURL); err == nil {
			if pw, ok := u.User.Password(); ok {
				testsecret.Register(t, pw)
			}
		}
		dbURL, err := databaseOn(t, adminURL)
		if err != nil {
			t.Fatalf("pgtest: cannot create a database on the server in %s: %v\n"+
				"To fix: make %s a reachable postgres://user@host:port/db URL whose user may CREATE DATABASE, "+
				"or unset it to use a throwaway local cluster (needs the PostgreSQL server binaries, e.g. `apt-get install postgresql`).",
				EnvDatabaseURL, err, EnvDatabaseURL)
		}
		return dbURL
	}

	c, err := sharedCluster()
	if err != nil {
		t.Fatalf("pgtest: cannot start a throwaway PostgreSQL server: %v\n"+
			"To fix: install the PostgreSQL server binaries (e.g. `apt-get install postgresql`; initdb and postgres are looked up via `pg_config --bindir`, PATH and /usr/lib/postgresql/*/bin), "+
			"or set %s=postgres://user@host:port/postgres?sslmode=disable to a server whose user may CREATE DATABASE.",
			err, EnvDatabaseURL)
	}
	dbURL, err := databaseOn(t, c.URL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: cannot create a database on the throwaway PostgreSQL server: %v", err)
	}
	return withPassword(t, dbURL)
}

// withPassword puts a fresh password in a URL of the throwaway server
// (see testsecret.Password).
func withPassword(t testing.TB, dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", dbURL, err)
	}
	u.User = url.UserPassword(u.User.Username(), testsecret.Password(t))
	return u.String()
}

// Main runs the tests of a package and stops the shared cluster started by
// [Database] afterwards, returning the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Without it the shared cluster is killed when the test binary exits but its
// temporary directory is left behind.
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	c := shared.cluster
	shared.cluster = nil
	shared.mu.Unlock()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop shared PostgreSQL server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// sharedCluster returns the shared cluster, starting it on first use.
func sharedCluster() (*Cluster, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		shared.cluster, shared.err = StartCluster(ctx)
	}
	return shared.cluster, shared.err
}

// databaseOn creates a database through adminURL, registers its removal
// with t.Cleanup and returns its URL.
func databaseOn(t testing.TB, adminURL string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", errors.New("database url must start with postgres:// or postgresql://")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	name, err := createDatabase(ctx, adminURL)
	if err != nil {
		return "", err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := dropDatabase(ctx, adminURL, name); err != nil {
			t.Logf("pgtest: %v", err)
		}
	})
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}
