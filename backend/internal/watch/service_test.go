package watch_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/internal/watch"
	"github.com/carbide-dev/carbide/backend/pgtest"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestShutdownWhileWriterOpen checks that a watch waiting for a change-log
// writer that is still running ends with UNAVAILABLE when the server shuts
// down, instead of waiting for the writer.
func TestShutdownWhileWriterOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), DatabaseURL: pgtest.Database(t)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	held, err := st.Client.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	if err := st.RecordChange(ctx, held, store.KindSegment, store.Created, "held", &networkv1.Segment{Id: "held"}); err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle(watchv1connect.NewWatchServiceHandler(watch.NewService(st, done)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ended := make(chan error, 1)
	go func() {
		// The call returns when the stream sends its first message or ends.
		stream, err := watchv1connect.NewWatchServiceClient(srv.Client(), srv.URL).
			Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{}))
		if err != nil {
			ended <- err
			return
		}
		defer stream.Close()
		for stream.Receive() {
			t.Errorf("watch sent %v while a writer was running", stream.Msg())
		}
		ended <- stream.Err()
	}()
	// The watch is waiting for the writer once it has looked for writers.
	for waiting := 0; waiting == 0; {
		if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND datname = current_database() AND query LIKE '%FROM pg_locks%virtualtransaction%'`).Scan(&waiting); err != nil {
			t.Fatalf("the watch never looked for running writers: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(done)
	if err := <-ended; connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("watch ended with %v (code %s), want unavailable", err, connect.CodeOf(err))
	}
}
