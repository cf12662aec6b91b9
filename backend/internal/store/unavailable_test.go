package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"starting up":          {fmt.Errorf("read leases: %w", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}), true},
		"admin shutdown":       {&pgconn.PgError{Code: "57P01"}, true},
		"crash of a backend":   {&pgconn.PgError{Code: "57P02"}, true},
		"connection exception": {&pgconn.PgError{Code: "08006"}, true},
		"could not connect":    {fmt.Errorf("begin: %w", &pgconn.ConnectError{}), true},
		"reset":                {fmt.Errorf("receive: %w", reset), true},
		"cut off":              {fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		"deadlock":             {&pgconn.PgError{Code: "40P01"}, false},
		"unique violation":     {&pgconn.PgError{Code: "23505"}, false},
		"wrong password":       {&pgconn.PgError{Code: "28P01"}, false},
		"other":                {errors.New("boom"), false},
		"canceled":             {context.Canceled, false},
		"nil":                  {nil, false},
	} {
		if got := store.IsUnavailable(tc.err); got != tc.want {
			t.Errorf("%s: IsUnavailable(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}

// TestIsUnavailableWhenPostgreSQLStops: what a store's queries return
// while its server is gone is unavailable, as IsUnavailable says.
func TestIsUnavailableWhenPostgreSQLStops(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgtest.StartCluster(ctx)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})
	url, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), DatabaseURL: url}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Client.Segment.Query().Count(ctx); err != nil {
		t.Fatalf("a query while PostgreSQL runs: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	// The pool's open connections were closed by the shutdown: the first
	// queries find them broken, later ones cannot connect.
	for i := range 3 {
		_, err := st.Client.Segment.Query().Count(ctx)
		if err == nil {
			t.Fatalf("query %d succeeded with PostgreSQL stopped", i+1)
		}
		t.Logf("query %d: %v", i+1, err)
		if !store.IsUnavailable(err) {
			t.Errorf("query %d with PostgreSQL stopped: IsUnavailable(%v) = false", i+1, err)
		}
	}
}
