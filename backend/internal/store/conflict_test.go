package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsConflict(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("write leases: %w", &pgconn.PgError{Code: "40P01"}), true},
		{&pgconn.PgError{Code: "40001"}, true},
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation: a race the caller tells apart
		{errors.New("deadlock detected"), false},
		{nil, false},
	} {
		if got := IsConflict(tc.err); got != tc.want {
			t.Errorf("IsConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
