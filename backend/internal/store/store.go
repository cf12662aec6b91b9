// Package store opens Carbide's database — PostgreSQL in production, an
// embedded SQLite file when no database URL is given — behind one ent client,
// applies schema migrations, and keeps the change log that Watch streams.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"           // registers the "sqlite" database/sql driver
)

// Config says which database to open.
type Config struct {
	// DatabaseURL is a postgres:// URL. Empty selects the embedded store.
	DatabaseURL string
	// DataDir holds the embedded store's file when DatabaseURL is empty.
	DataDir string
	// MaxConns caps open PostgreSQL connections; 0 means 8. Each
	// connection is a server process with its own caches, and a few busy
	// ones do more than many that queue for the database's cores: with
	// 32, a DHCP benchmark on two cores answered new clients several
	// times slower.
	MaxConns int
}

// Store is an open database.
type Store struct {
	// Client is the ent client over the database.
	Client *ent.Client
	// Dialect is dialect.Postgres or dialect.SQLite.
	Dialect string

	db              *sql.DB
	url             string
	notifier        *Notifier
	segmentNotifier *Notifier
	// txHooks holds the *txHookState of each open transaction of InTx
	// whose context has a hook, by *ent.Tx.
	txHooks sync.Map
}

// Advisory lock keys (PostgreSQL). Arbitrary constants, one per purpose.
const (
	lockMigrations int64 = 0x6361726269646501 // serialises schema migrations
	// lockChangeWriters, taken shared, marks the transactions that record
	// changes (RecordChanges), for readers of the change log (Horizon).
	lockChangeWriters int64 = 0x6361726269646502
	// LockSegments serialises checks that span segments (prefix overlap,
	// relay addresses).
	LockSegments int64 = 0x6361726269646503
)

// Open connects to the database the config names and brings its schema up
// to date.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	if cfg.DatabaseURL != "" {
		return openPostgres(ctx, cfg, logger)
	}
	return openSQLite(ctx, cfg, logger)
}

func openPostgres(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("database URL must look like postgres://user:password@host:5432/dbname")
	}
	connConfig, err := pgx.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", scrub(err, cfg.DatabaseURL))
	}
	db := stdlib.OpenDB(*connConfig, stdlib.OptionAfterConnect(registerTypes))
	maxConns := cfg.MaxConns
	if maxConns <= 0 {
		maxConns = 8
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (check --database-url and that the server is up)", Redact(cfg.DatabaseURL), scrub(err, cfg.DatabaseURL))
	}
	applied, err := migrate(ctx, db, migrations.FS)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate PostgreSQL schema: %w", scrub(err, cfg.DatabaseURL))
	}
	if len(applied) > 0 {
		logger.Info("applied schema migrations", "migrations", applied)
	}
	drv := entsql.OpenDB(dialect.Postgres, db)
	client, err := newClient(ctx, drv)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{
		Client:          client,
		Dialect:         dialect.Postgres,
		db:              db,
		url:             cfg.DatabaseURL,
		notifier:        NewNotifier(),
		segmentNotifier: NewNotifier(),
	}
	logger.Info("store open", "store", "postgres", "database", Redact(cfg.DatabaseURL))
	return s, nil
}

// schemaMu serialises creating embedded stores' schemas: ent's migration
// writes to the package-level table descriptions it works from, so two
// stores opened at once in one process would race.
var schemaMu sync.Mutex

func openSQLite(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("either a database URL or a data directory is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "carbide.db")
	dsn := "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and this keeps every
	// transaction strictly serialised.
	db.SetMaxOpenConns(1)
	drv := entsql.OpenDB(dialect.SQLite, db)
	schemaMu.Lock()
	err = ent.NewClient(ent.Driver(drv)).Schema.Create(ctx)
	schemaMu.Unlock()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("create embedded store schema in %s: %w", path, err)
	}
	client, err := newClient(ctx, drv)
	if err != nil {
		db.Close()
		return nil, err
	}
	logger.Info("store open", "store", "embedded", "path", path)
	return &Store{Client: client, Dialect: dialect.SQLite, db: db, notifier: NewNotifier(), segmentNotifier: NewNotifier()}, nil
}

// newClient returns the ent client over an up-to-date schema, with the
// store's hooks, after filling in what a migration could not compute.
func newClient(ctx context.Context, drv *entsql.Driver) (*ent.Client, error) {
	client := ent.NewClient(ent.Driver(drv))
	client.Lease.Use(setAddressNum, clearExpiryNoted)
	if err := fillAddressNums(ctx, client, drv.Dialect()); err != nil {
		return nil, err
	}
	return client, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return s.Client.Close()
}

// DB is the underlying connection pool, for checks that ent cannot express.
func (s *Store) DB() *sql.DB { return s.db }

// InTx runs fn in a transaction, committing if it returns nil. When ctx
// carries a TxHook (WithTxHook), the hook writes in the transaction too.
func (s *Store) InTx(ctx context.Context, fn func(tx *ent.Tx) error) error {
	tx, err := s.Client.Tx(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var hook *txHookState
	if h, ok := ctx.Value(txHookKey{}).(TxHook); ok {
		hook = &txHookState{hook: h}
		s.txHooks.Store(tx, hook)
		defer s.txHooks.Delete(tx)
	}
	err = fn(tx)
	if err == nil && hook != nil {
		err = hook.write(ctx, tx, nil)
	}
	if err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			return errors.Join(err, fmt.Errorf("roll back: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if hook != nil && hook.committed != nil {
		hook.committed()
	}
	return nil
}

// TxHook adds a write of its own to the transactions InTx runs for a
// context: the audit log writes the record of a call in the transaction
// that makes the call's change, so that neither commits without the other.
type TxHook interface {
	// Write runs once in each transaction: just before the transaction
	// first records changes (RecordChanges), which name the resources
	// changed, or else just before it commits, with changed empty. An
	// error rolls the transaction back and InTx returns it. InTx calls
	// committed, if not nil, once the transaction has committed.
	Write(ctx context.Context, tx *ent.Tx, changed []string) (committed func(), err error)
}

type txHookKey struct{}

// WithTxHook returns ctx with h, which every InTx on the returned context
// (or one derived from it) runs.
func WithTxHook(ctx context.Context, h TxHook) context.Context {
	return context.WithValue(ctx, txHookKey{}, h)
}

// txHookState is a TxHook in one transaction.
type txHookState struct {
	hook      TxHook
	written   bool
	committed func()
}

// write runs the hook unless it has run in the transaction already.
func (h *txHookState) write(ctx context.Context, tx *ent.Tx, changed []string) error {
	if h.written {
		return nil
	}
	h.written = true
	committed, err := h.hook.Write(ctx, tx, changed)
	if err != nil {
		return err
	}
	h.committed = committed
	return nil
}

// Lock takes a transaction-scoped lock that serialises every transaction
// taking the same key, across all API processes. On the embedded store,
// transactions are serialised already.
func (s *Store) Lock(ctx context.Context, tx *ent.Tx, key int64) error {
	if s.Dialect != dialect.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
		return fmt.Errorf("take lock: %w", err)
	}
	return nil
}

// Query runs a query, written for PostgreSQL (see SQL), and for each row
// it returns scans the row into dest and calls each. On PostgreSQL it goes
// straight to pgx, which watches the context without a goroutine per query
// as database/sql does: it is for the queries on the DHCP path, which runs
// for every packet.
func (s *Store) Query(ctx context.Context, query string, args []any, dest []any, each func() error) error {
	if s.Dialect != dialect.Postgres {
		rows, err := s.db.QueryContext(ctx, s.SQL(query), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		return eachRow(rows, dest, each)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected PostgreSQL driver connection %T", dc)
		}
		rows, err := c.Conn().Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		return eachRow(rows, dest, each)
	})
}

// eachRow scans every row of rows (database/sql's or pgx's) into dest and
// calls each.
func eachRow(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}, dest []any, each func() error) error {
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		if err := each(); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SQL adapts a query written with PostgreSQL's numbered parameters ($1,
// $2, ...) to the store's dialect: SQLite spells them ?1, ?2, ...
func (s *Store) SQL(query string) string {
	if s.Dialect == dialect.Postgres {
		return query
	}
	return strings.ReplaceAll(query, "$", "?")
}

// ForUpdate makes q lock the rows it reads until the transaction ends, on
// PostgreSQL. SQLite has neither row locks nor FOR UPDATE (the clause is a
// syntax error there); the embedded store's transactions are serialised
// already.
func ForUpdate[Q interface{ ForUpdate(...entsql.LockOption) Q }](s *Store, q Q) Q {
	if s.Dialect != dialect.Postgres {
		return q
	}
	return q.ForUpdate()
}

// Now is the current time in UTC at the precision PostgreSQL keeps
// (microseconds), so that the timestamps a write returns equal the ones a
// later read returns.
func Now() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}

// IsConflict reports whether err says PostgreSQL rolled a transaction back
// because of a concurrent one: a deadlock between them (40P01) or a
// serialization failure (40001). Nothing the transaction wrote is kept,
// so running it again is safe, and is what the caller should do.
func IsConflict(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "40P01" || pg.Code == "40001")
}

// IsUnavailable reports whether err says PostgreSQL could not be reached
// or stopped serving: no connection could be made (refused, or the server
// is starting up, recovering or shutting down: SQLSTATE 57P03), the server
// ended the session (57P01 shutdown, 57P02 crash of another backend), the
// connection failed (class 08), or it broke (reset, or closed in the
// middle of a message). The condition is transient: a later call, once
// the server is back, may succeed. Whether a write in flight when the
// connection broke was committed is unknown, as with any lost connection.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03"
	}
	var connect *pgconn.ConnectError
	return errors.As(err, &connect) ||
		pgconn.SafeToRetry(err) || // failed before anything reached the server
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}
