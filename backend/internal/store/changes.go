package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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
	// KindBMC is a machine's BMC; its id is the machine's.
	KindBMC          = change.KindBmc
	KindBMCOperation = change.KindBmcOperation
	// KindInstance is a tenant's instance, with its machine's task.
	KindInstance = change.KindInstance

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
// the transaction that makes the change. The entry's number (its revision)
// comes from a sequence, so numbers need not follow commit order: readers
// deliver an entry only once no transaction that may still commit a lower
// number is running (see Horizon). A transaction that records a resource
// it read locks that resource first (machines.RecordChange), so that two
// changes of one resource are numbered in the order they commit.
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
	payloads := make([][]byte, len(changed))
	for i, c := range changed {
		var err error
		if payloads[i], err = proto.Marshal(c.Resource); err != nil {
			return fmt.Errorf("encode change: %w", err)
		}
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
	if err := s.insertChanges(ctx, tx, kind, typ, now, changed, payloads); err != nil {
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

// insertChanges writes the entries, payloads[i] that of changed[i]. On
// PostgreSQL one statement takes the writer's mark and inserts them: the
// mark is a shared lock, which no writer waits for, and shows readers
// (Horizon) that this transaction may commit entries; the insert reads a
// row of the query that takes it, so it is taken before the insert draws
// the entries' numbers. The same statement queues the notification other
// API processes get at commit (its payload is the kind).
func (s *Store) insertChanges(ctx context.Context, tx *ent.Tx, kind change.Kind, typ change.Type, now time.Time, changed []Changed, payloads [][]byte) error {
	if s.Dialect != dialect.Postgres {
		creates := make([]*ent.ChangeCreate, len(changed))
		for i, c := range changed {
			creates[i] = tx.Change.Create().SetKind(kind).SetType(typ).SetResourceID(c.ID).SetPayload(payloads[i]).SetTime(now)
		}
		return tx.Change.CreateBulk(creates...).Exec(ctx)
	}
	var rows strings.Builder
	args := []any{lockChangeWriters, notifyChannel, string(kind), string(typ), now}
	for i, c := range changed {
		if i > 0 {
			rows.WriteString(", ")
		}
		fmt.Fprintf(&rows, "(CAST($%d AS TEXT), CAST($%d AS BYTEA))", len(args)+1, len(args)+2)
		args = append(args, c.ID, payloads[i])
	}
	_, err := tx.ExecContext(ctx, `WITH writer AS (SELECT pg_advisory_xact_lock_shared($1), pg_notify($2, $3))
		INSERT INTO changes (kind, type, resource_id, payload, time)
		SELECT $3, $4, v.id, v.payload, CAST($5 AS TIMESTAMPTZ) FROM writer, (VALUES `+rows.String()+`) AS v(id, payload)`, args...)
	return err
}

// notify wakes the waiters for a committed change of the given kind ("" for
// a change of unknown kind, which wakes every waiter).
func (s *Store) notify(kind string) {
	s.notifier.Notify()
	if kind == "" || kind == string(KindSegment) {
		s.segmentNotifier.Notify()
	}
}

// ChangesAfter returns up to limit change-log entries numbered above after
// and at most Horizon, of the given kinds (all kinds when empty), oldest
// first: entries that no later read can precede with a lower number.
func (s *Store) ChangesAfter(ctx context.Context, after int64, kinds []change.Kind, limit int) ([]*ent.Change, error) {
	horizon, err := s.Horizon(ctx)
	if err != nil {
		return nil, err
	}
	if horizon <= after {
		return nil, nil
	}
	q := s.Client.Change.Query().Where(change.IDGT(after), change.IDLTE(horizon))
	if len(kinds) > 0 {
		q = q.Where(change.KindIn(kinds...))
	}
	return q.Order(ent.Asc(change.FieldID)).Limit(limit).All(ctx)
}

// Horizon is the highest change-log number below which the log is final:
// every entry numbered at or below it has committed (and is visible to any
// read that starts now) or never will. On PostgreSQL entries take their
// numbers from a sequence when they are inserted, before their
// transaction commits, so a higher number can commit before a lower one.
// Horizon reads the last number drawn, then the writers that were running
// (they hold the shared lock RecordChanges takes, before drawing a
// number), and waits until those writers have ended. Writers that start
// later draw higher numbers. The wait lasts as long as the longest of
// those writer transactions; transactions that record no change are not
// waited for. On the embedded store, transactions are serial and the
// horizon is the newest entry.
func (s *Store) Horizon(ctx context.Context) (int64, error) {
	if s.Dialect != dialect.Postgres {
		var v []struct {
			Max *int64 `json:"max"`
		}
		if err := s.Client.Change.Query().Aggregate(ent.Max(change.FieldID)).Scan(ctx, &v); err != nil {
			return 0, fmt.Errorf("read change log horizon: %w", err)
		}
		if len(v) == 1 && v[0].Max != nil {
			return *v[0].Max, nil
		}
		return 0, nil
	}
	var last int64
	if err := s.db.QueryRowContext(ctx, lastNumberQuery).Scan(&last); err != nil {
		return 0, fmt.Errorf("read change log horizon: %w", err)
	}
	writers, err := s.changeWriters(ctx, nil)
	if err != nil {
		return 0, err
	}
	for wait := time.Millisecond; len(writers) > 0; wait = min(2*wait, 100*time.Millisecond) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
		if writers, err = s.changeWriters(ctx, writers); err != nil {
			return 0, err
		}
	}
	return last, nil
}

// lastNumberQuery reads the last number the change log's sequence gave
// out to any transaction, committed or not (sequences are not
// transactional). The sequence must keep CACHE 1: with a larger cache a
// session could hand out, later, a number it took before this read.
const lastNumberQuery = `SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('changes', 'id')), 0)`

// writersQuery lists the transactions holding the shared lock
// RecordChanges takes in this database (a bigint advisory key is split
// into classid, the high half, and objid), among those in $3 unless $3 is
// NULL.
const writersQuery = `SELECT virtualtransaction FROM pg_locks
	WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 1 AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ($3::text[] IS NULL OR virtualtransaction = ANY($3::text[]))`

// changeWriters returns the transactions that may commit change-log
// entries, among the given ones (all when nil).
func (s *Store) changeWriters(ctx context.Context, among []string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, writersQuery,
		int64(uint64(lockChangeWriters)>>32), int64(uint64(lockChangeWriters)&0xffffffff), among)
	if err != nil {
		return nil, fmt.Errorf("read change log writers: %w", err)
	}
	defer rows.Close()
	var writers []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			return nil, fmt.Errorf("read change log writers: %w", err)
		}
		writers = append(writers, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read change log writers: %w", err)
	}
	return writers, nil
}

// Revision is the change log's Horizon: the newest number a reader can be
// given, 0 when no entry was ever made. Oldest is the number of the oldest
// entry still kept, or newest+1 when none is.
func (s *Store) Revision(ctx context.Context) (newest, oldest int64, err error) {
	newest, err = s.Horizon(ctx)
	if err != nil {
		return 0, 0, err
	}
	var v []struct {
		Min *int64 `json:"min"`
	}
	if err := s.Client.Change.Query().Aggregate(ent.Min(change.FieldID)).Scan(ctx, &v); err != nil {
		return 0, 0, fmt.Errorf("read change log revision: %w", err)
	}
	oldest = newest + 1
	if len(v) == 1 && v[0].Min != nil {
		oldest = min(*v[0].Min, oldest)
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
