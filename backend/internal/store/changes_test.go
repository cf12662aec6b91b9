package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

func openPostgres(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir(), DatabaseURL: pgtest.Database(t)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// record begins a transaction that records a change of resource id and
// returns it open, with the number its entry drew.
func record(ctx context.Context, t *testing.T, st *store.Store, id string) (*ent.Tx, int64) {
	t.Helper()
	tx, err := st.Client.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RecordChange(ctx, tx, store.KindSegment, store.Updated, id, &networkv1.Segment{Id: id}); err != nil {
		t.Fatal(err)
	}
	n, err := tx.Change.Query().Where(change.ResourceID(id)).OnlyID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tx, n
}

// TestChangeLogWritersNotSerialised checks that a transaction holding a
// change-log entry open does not block another writer, and that readers
// do not pass the open entry: the later writer's entry, committed first
// with a higher number, is delivered only once the open one has ended.
func TestChangeLogWritersNotSerialised(t *testing.T) {
	t.Parallel()
	st := openPostgres(t)
	ctx := context.Background()

	held, heldN := record(ctx, t, st, "held")
	// Another writer commits while held is open. With a lock serialising
	// writers it would wait for held until the deadline.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var laterN int64
	err := st.InTx(wctx, func(tx *ent.Tx) error {
		if err := st.RecordChange(wctx, tx, store.KindSegment, store.Updated, "later", &networkv1.Segment{Id: "later"}); err != nil {
			return err
		}
		var err error
		laterN, err = tx.Change.Query().Where(change.ResourceID("later")).OnlyID(wctx)
		return err
	})
	if err != nil {
		t.Fatalf("a writer committing while another holds a change-log entry open: %v", err)
	}
	if laterN <= heldN {
		t.Fatalf("later entry numbered %d, not above the open entry's %d", laterN, heldN)
	}
	var waiting int
	if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if waiting != 0 {
		t.Errorf("%d lock requests wait while a change-log entry is open; want none", waiting)
	}

	// A reader waits for the open writer rather than deliver entry laterN
	// and later see heldN below it.
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	if rows, err := st.ChangesAfter(rctx, 0, nil, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reading the change log while entry %d is open: %d rows, error %v; want to wait for it", heldN, len(rows), err)
	}
	if err := held.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err := st.ChangesAfter(ctx, 0, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range rows {
		got = append(got, r.ID)
	}
	if want := []int64{heldN, laterN}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("change log after both committed: %v, want %v", got, want)
	}
	newest, _, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newest != laterN {
		t.Errorf("revision %d, want %d", newest, laterN)
	}
}

// TestChangeLogConcurrentWriters runs writers that commit, roll back and
// hold entries open at once, and a reader that follows the log as Watch
// does: it must see every committed entry exactly once, in increasing
// numbers, and none rolled back.
func TestChangeLogConcurrentWriters(t *testing.T) {
	t.Parallel()
	st := openPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const writers, txs = 8, 25
	var (
		mu         sync.Mutex
		committed  = map[string]bool{}
		commits    atomic.Int64
		outOfOrder atomic.Bool
		wg         sync.WaitGroup
		errs       = make(chan error, writers+1)
	)
	// One entry is held open while others commit: its number is below
	// theirs, and it commits after them.
	held, heldN := record(ctx, t, st, "held")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for commits.Load() < 20 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		n, err := st.Client.Change.Query().Where(change.IDGT(heldN)).Count(ctx)
		if err != nil {
			errs <- err
			return
		}
		outOfOrder.Store(n > 0)
		if err := held.Commit(); err != nil {
			errs <- err
			return
		}
		mu.Lock()
		committed["held"] = true
		mu.Unlock()
	}()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range txs {
				id := fmt.Sprintf("w%d-%d", w, i)
				rollback := i%5 == 4
				err := st.InTx(ctx, func(tx *ent.Tx) error {
					changed := []store.Changed{{ID: id, Resource: &networkv1.Segment{Id: id}}}
					if i%3 == 0 {
						changed = append(changed, store.Changed{ID: id + "b", Resource: &networkv1.Segment{Id: id + "b"}})
					}
					if err := st.RecordChanges(ctx, tx, store.KindSegment, store.Updated, changed); err != nil {
						return err
					}
					if i%7 == 3 {
						time.Sleep(3 * time.Millisecond) // held open while others commit
					}
					if rollback {
						return errors.New("roll back")
					}
					return nil
				})
				if rollback {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				mu.Lock()
				committed[id] = true
				if i%3 == 0 {
					committed[id+"b"] = true
				}
				mu.Unlock()
				commits.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	// Follow the log as Watch does, in small batches.
	seen := map[string]int64{}
	var cursor int64
	read := func() (int, error) {
		rows, err := st.ChangesAfter(ctx, cursor, nil, 7)
		for _, r := range rows {
			if r.ID <= cursor {
				return 0, fmt.Errorf("entry %d (%s) delivered after entry %d", r.ID, r.ResourceID, cursor)
			}
			if n, ok := seen[r.ResourceID]; ok {
				return 0, fmt.Errorf("entry of %s delivered twice: as %d and %d", r.ResourceID, n, r.ID)
			}
			seen[r.ResourceID] = r.ID
			cursor = r.ID
		}
		return len(rows), err
	}
	for following := true; following; {
		wake := st.Changes().Wait()
		select {
		case <-done:
			following = false
		default:
		}
		n, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && following {
			select {
			case <-wake:
			case <-done:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	for {
		n, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !outOfOrder.Load() {
		t.Fatal("the held entry committed before any higher number: the test did not exercise out-of-order commits")
	}
	for id := range committed {
		if _, ok := seen[id]; !ok {
			t.Errorf("committed entry of %s never delivered", id)
		}
	}
	for id, n := range seen {
		if !committed[id] {
			t.Errorf("entry %d of %s delivered but not committed", n, id)
		}
	}
	if len(seen) != len(committed) {
		t.Errorf("delivered %d entries, committed %d", len(seen), len(committed))
	}
}

// BenchmarkRecordChangeDurable commits transactions that each record one
// change, from 8 goroutines at once, on a PostgreSQL server with durable
// settings (fsync, synchronous_commit on): writers that do not wait for
// each other share the commit flushes.
func BenchmarkRecordChangeDurable(b *testing.B) {
	ctx := context.Background()
	c, err := pgtest.StartCluster(ctx, "fsync=on", "synchronous_commit=on")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	url, err := c.CreateDatabase(ctx)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{DataDir: b.TempDir(), DatabaseURL: url}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint(n.Add(1))
			if err := st.InTx(ctx, func(tx *ent.Tx) error {
				return st.RecordChange(ctx, tx, store.KindSegment, store.Updated, id, &networkv1.Segment{Id: id})
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
