package store

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/ent"
)

// Stmt is one SQL statement, written for PostgreSQL with its parameters
// numbered from $1 (see SQL), and its arguments.
type Stmt struct {
	SQL  string
	Args []any
}

// Chain runs stmts in order in tx, and returns the rows of the last (if
// it returns any): for each, it scans the row into dest and calls each.
// On PostgreSQL they go to the server as one statement, each but the last
// a data-modifying WITH query, in one round trip: PostgreSQL runs them
// all, to completion, with one snapshot (so none sees the rows another
// writes) and checks foreign keys at the end, so a statement may insert
// rows that reference those an earlier one inserts. The first error fails
// them all. On SQLite they run one after the other.
func (s *Store) Chain(ctx context.Context, tx *ent.Tx, stmts []Stmt, dest []any, each func() error) error {
	if len(stmts) == 0 {
		return nil
	}
	last := stmts[len(stmts)-1]
	if s.Dialect != dialect.Postgres {
		for _, st := range stmts[:len(stmts)-1] {
			if _, err := tx.ExecContext(ctx, s.SQL(st.SQL), st.Args...); err != nil {
				return err
			}
		}
		return s.txQuery(ctx, tx, s.SQL(last.SQL), last.Args, dest, each)
	}
	var q strings.Builder
	var args []any
	for i, st := range stmts {
		sql := renumber(st.SQL, len(args))
		args = append(args, st.Args...)
		switch {
		case i == len(stmts)-1:
			if i > 0 {
				q.WriteString(" ")
			}
			q.WriteString(sql)
		case i == 0:
			fmt.Fprintf(&q, "WITH w%d AS (%s)", i, sql)
		default:
			fmt.Fprintf(&q, ", w%d AS (%s)", i, sql)
		}
	}
	return s.txQuery(ctx, tx, q.String(), args, dest, each)
}

// txQuery runs query in tx and hands each row to each.
func (s *Store) txQuery(ctx context.Context, tx *ent.Tx, query string, args, dest []any, each func() error) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if dest == nil {
		for rows.Next() {
		}
		return rows.Err()
	}
	return eachRow(rows, dest, each)
}

var param = regexp.MustCompile(`\$(\d+)`)

// renumber adds by to the number of each parameter ($n) of sql, which
// holds no other dollar signs.
func renumber(sql string, by int) string {
	if by == 0 {
		return sql
	}
	return param.ReplaceAllStringFunc(sql, func(p string) string {
		n, _ := strconv.Atoi(p[1:])
		return "$" + strconv.Itoa(n+by)
	})
}
