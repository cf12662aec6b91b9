// Command pgtest-cluster hands a real PostgreSQL database to tests that
// cannot import package pgtest, such as the end-to-end tests of another
// module or a shell script. It prints the URL of a fresh, empty database
// on one line of stdout, then runs until it gets SIGTERM or SIGINT or its
// stdin reaches EOF (so it also stops when the process that started it
// with a pipe dies), and then removes everything it created.
//
// With CARBIDE_TEST_DATABASE_URL set to a postgres:// URL whose user may
// CREATE DATABASE, the database is created on that server and dropped at
// the end. Otherwise it starts a throwaway server with initdb in a
// temporary directory (pgtest.StartCluster: as the postgres user when run
// as root), and stops it and deletes the directory at the end; the server
// is killed if pgtest-cluster itself is.
//
// From bash, where the coprocess's stdin closes when the shell exits:
//
//	coproc PG { pgtest-cluster; }
//	read -r url <&"${PG[0]}"
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/jackc/pgx/v5"
)

// opTimeout bounds starting the server or creating and dropping a database.
const opTimeout = 2 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest-cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dbURL, cleanup, err := database(ctx)
	if err != nil {
		return err
	}
	var errs []error
	if _, err := fmt.Fprintln(stdout, dbURL); err != nil {
		errs = append(errs, fmt.Errorf("print the database URL: %w", err))
	} else {
		eof := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			close(eof)
		}()
		select {
		case <-ctx.Done():
		case <-eof:
		}
	}
	if err := cleanup(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// database returns the URL of a fresh database and the function that
// removes it (and the server, if it started one).
func database(ctx context.Context) (string, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if adminURL := os.Getenv(pgtest.EnvDatabaseURL); adminURL != "" {
		dbURL, drop, err := createOn(ctx, adminURL)
		if err != nil {
			return "", nil, fmt.Errorf("create a database on the server in %s: %w", pgtest.EnvDatabaseURL, err)
		}
		return dbURL, drop, nil
	}
	c, err := pgtest.StartCluster(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("start a throwaway PostgreSQL server: %w\n"+
			"To fix: install the PostgreSQL server binaries (apt-get install postgresql), "+
			"or set %s=postgres://user@host:port/postgres?sslmode=disable to a server whose user may CREATE DATABASE",
			err, pgtest.EnvDatabaseURL)
	}
	dbURL, err := c.CreateDatabase(ctx)
	if err != nil {
		return "", nil, errors.Join(fmt.Errorf("create a database: %w", err), c.Stop())
	}
	return dbURL, c.Stop, nil
}

// createOn creates a uniquely named database through adminURL and returns
// its URL and the function that drops it.
func createOn(ctx context.Context, adminURL string) (string, func() error, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, errors.New("want a postgres://user@host:port/db URL")
	}
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", nil, err
	}
	name := "pgtest_" + hex.EncodeToString(suffix[:])
	if err := exec(ctx, adminURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, err
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		return exec(ctx, adminURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), drop, nil
}

func exec(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
