package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/auditrecord"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
)

// Kinds and types of change-log entries.
const (
	KindMachine = change.KindMachine
	KindSegment = change.KindSegment

	Created = change.TypeCreated
	Updated = change.TypeUpdated
	Deleted = change.TypeDeleted
)

const notifyChannel = "carbide_changes"

// Notifier wakes every waiter when the change log grows.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewNotifier returns a Notifier with no waiters.
func NewNotifier() *Notifier {
	return &Notifier{ch: make(chan struct{})}
}

// Wait returns a channel that is closed at the next Notify.
func (n *Notifier) Wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// Notify wakes every current waiter.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

// Changes is the notifier that fires when a change is committed, by this
// process or, on PostgreSQL while Listen runs, by any other.
func (s *Store) Changes() *Notifier { return s.notifier }

// SegmentChanges is the notifier that fires when a change of a segment
// (its settings or reservations) is committed; caches of segments reload
// when it fires.
func (s *Store) SegmentChanges() *Notifier { return s.segmentNotifier }

// RecordChange appends a change of one resource to the change log, inside
// the transaction that makes the change. Call it last in the transaction:
// on PostgreSQL it takes a lock, held until commit, so that change numbers
// follow commit order and a watcher never skips a change that commits late.
func (s *Store) RecordChange(ctx context.Context, tx *ent.Tx, kind change.Kind, typ change.Type, id string, resource proto.Message) error {
	return s.RecordChanges(ctx, tx, kind, typ, []Changed{{ID: id, Resource: resource}})
}

// Changed is a resource as one change left it.
type Changed struct {
	ID       string
	Resource proto.Message
}

// RecordChanges appends changes of one kind and type to the change log in
// one insert, as RecordChange does for one.
func (s *Store) RecordChanges(ctx context.Context, tx *ent.Tx, kind change.Kind, typ change.Type, changed []Changed) error {
	now := Now()
	creates := make([]*ent.ChangeCreate, len(changed))
	for i, c := range changed {
		payload, err := proto.Marshal(c.Resource)
		if err != nil {
			return fmt.Errorf("encode change: %w", err)
		}
		creates[i] = tx.Change.Create().SetKind(kind).SetType(typ).SetResourceID(c.ID).SetPayload(payload).SetTime(now)
	}
	if h, ok := s.txHooks.Load(tx); ok {
		// Before the lock, which is held until commit.
		ids := make([]string, len(changed))
		for i, c := range changed {
			ids[i] = c.ID
		}
		if err := h.(*txHookState).write(ctx, tx, ids); err != nil {
			return err
		}
	}
	if s.Dialect == dialect.Postgres {
		// One round trip: the lock, and the notification other API
		// processes get at commit (its payload is the kind).
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1), pg_notify($2, $3)",
			lockChangeLog, notifyChannel, string(kind)); err != nil {
			return fmt.Errorf("take change log lock: %w", err)
		}
	}
	if err := tx.Change.CreateBulk(creates...).Exec(ctx); err != nil {
		return fmt.Errorf("record change: %w", err)
	}
	tx.OnCommit(func(next ent.Committer) ent.Committer {
		return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
			err := next.Commit(ctx, tx)
			if err == nil {
				s.notify(string(kind))
			}
			return err
		})
	})
	return nil
}

// notify wakes the waiters for a committed change of the given kind ("" for
// a change of unknown kind, which wakes every waiter).
func (s *Store) notify(kind string) {
	s.notifier.Notify()
	if kind == "" || kind == string(KindSegment) {
		s.segmentNotifier.Notify()
	}
}

// LockChangeLog takes, early, the lock RecordChange takes. A transaction
// that reads a resource in order to record it takes the lock first: every
// other transaction recording a change has then committed, and the read
// (in PostgreSQL's read-committed mode) shows its change too. Without it,
// two transactions changing one machine at once — allocations for two of
// its MACs — could each record a copy that lacks the other's change, and
// watchers would keep the stale one. The lock is held until commit.
func (s *Store) LockChangeLog(ctx context.Context, tx *ent.Tx) error {
	return s.Lock(ctx, tx, lockChangeLog)
}

// ChangesAfter returns up to limit change-log entries numbered above after,
// of the given kinds (all kinds when empty), oldest first.
func (s *Store) ChangesAfter(ctx context.Context, after int64, kinds []change.Kind, limit int) ([]*ent.Change, error) {
	q := s.Client.Change.Query().Where(change.IDGT(after))
	if len(kinds) > 0 {
		q = q.Where(change.KindIn(kinds...))
	}
	return q.Order(ent.Asc(change.FieldID)).Limit(limit).All(ctx)
}

// Revision is the number of the newest change-log entry, 0 when it is empty.
// Oldest is the number of the oldest entry still kept.
func (s *Store) Revision(ctx context.Context) (newest, oldest int64, err error) {
	var v []struct {
		Max *int64 `json:"max"`
		Min *int64 `json:"min"`
	}
	err = s.Client.Change.Query().Aggregate(ent.Max(change.FieldID), ent.Min(change.FieldID)).Scan(ctx, &v)
	if err != nil {
		return 0, 0, fmt.Errorf("read change log revision: %w", err)
	}
	if len(v) == 1 && v[0].Max != nil {
		newest, oldest = *v[0].Max, *v[0].Min
	}
	return newest, oldest, nil
}

// PruneChanges deletes change-log entries older than before, in
// transactions of at most batch entries each, and returns how many it
// deleted.
func (s *Store) PruneChanges(ctx context.Context, before time.Time, batch int) (int, error) {
	before = before.UTC()
	n, err := prune(ctx, batch, func(ctx context.Context) ([]int64, error) {
		return s.Client.Change.Query().Where(change.TimeLT(before)).
			Order(ent.Asc(change.FieldID)).Offset(batch - 1).Limit(1).IDs(ctx)
	}, func(ctx context.Context, upTo int64) (int, error) {
		q := s.Client.Change.Delete().Where(change.TimeLT(before))
		if upTo != 0 {
			q = q.Where(change.IDLTE(upTo))
		}
		return q.Exec(ctx)
	})
	if err != nil {
		return n, fmt.Errorf("prune change log: %w", err)
	}
	return n, nil
}

// PruneAuditRecords deletes audit records older than before, in
// transactions of at most batch records each, and returns how many it
// deleted.
func (s *Store) PruneAuditRecords(ctx context.Context, before time.Time, batch int) (int, error) {
	before = before.UTC()
	n, err := prune(ctx, batch, func(ctx context.Context) ([]int64, error) {
		return s.Client.AuditRecord.Query().Where(auditrecord.TimeLT(before)).
			Order(ent.Asc(auditrecord.FieldID)).Offset(batch - 1).Limit(1).IDs(ctx)
	}, func(ctx context.Context, upTo int64) (int, error) {
		q := s.Client.AuditRecord.Delete().Where(auditrecord.TimeLT(before))
		if upTo != 0 {
			q = q.Where(auditrecord.IDLTE(upTo))
		}
		return q.Exec(ctx)
	})
	if err != nil {
		return n, fmt.Errorf("prune audit log: %w", err)
	}
	return n, nil
}

// prune deletes old rows of a table in batches, oldest ids first, so that
// no statement holds a huge table's rows at once. nth returns the id of
// the batch-th old row, none when there are fewer; del deletes the old
// rows up to an id, or all of them for 0.
func prune(ctx context.Context, batch int, nth func(context.Context) ([]int64, error), del func(ctx context.Context, upTo int64) (int, error)) (int, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("batch size %d: must be positive", batch)
	}
	total := 0
	for {
		ids, err := nth(ctx)
		if err != nil {
			return total, err
		}
		var upTo int64
		if len(ids) == 1 {
			upTo = ids[0]
		}
		n, err := del(ctx, upTo)
		total += n
		if err != nil || upTo == 0 {
			return total, err
		}
	}
}

// Listen relays PostgreSQL notifications of changes committed by other API
// processes to Changes until ctx is done, reconnecting after errors. On the
// embedded store there are no other processes and it just waits for ctx.
func (s *Store) Listen(ctx context.Context, logger *slog.Logger) {
	if s.Dialect != dialect.Postgres {
		<-ctx.Done()
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		logger.Warn("change notifications interrupted; reconnecting", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return fmt.Errorf("connect: %w", scrub(err, s.url))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Changes may have committed while no one listened.
	s.notify("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		s.notify(n.Payload)
	}
}
