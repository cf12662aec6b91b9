package interceptor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestTranslate(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		err  error
		code connect.Code
		log  string // what the server logs, "" for nothing
	}{
		"connect error": {connect.NewError(connect.CodeInvalidArgument, errors.New("bad")), connect.CodeInvalidArgument, ""},
		"conflict":      {fmt.Errorf("write: %w", &pgconn.PgError{Code: "40001"}), connect.CodeAborted, "transaction conflict"},
		"database starting up": {fmt.Errorf("read interfaces and leases: %w", &pgconn.PgError{Code: "57P03"}),
			connect.CodeUnavailable, "level=WARN msg=\"database unavailable\""},
		"database gone":    {fmt.Errorf("begin: %w", &pgconn.ConnectError{}), connect.CodeUnavailable, "level=WARN msg=\"database unavailable\""},
		"session ended":    {&pgconn.PgError{Code: "57P01"}, connect.CodeUnavailable, "level=WARN msg=\"database unavailable\""},
		"deadline":         {fmt.Errorf("read: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, ""},
		"syntax error":     {&pgconn.PgError{Code: "42601"}, connect.CodeInternal, "level=ERROR msg=\"internal error\""},
		"anything else":    {errors.New("boom"), connect.CodeInternal, "level=ERROR msg=\"internal error\""},
		"unique violation": {&pgconn.PgError{Code: "23505"}, connect.CodeInternal, "level=ERROR msg=\"internal error\""},
	} {
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		got := Translate(context.Background(), logger, "/carbide.test.v1.Test/Call", tc.err)
		if got.Code() != tc.code {
			t.Errorf("%s: Translate(%v) has code %v, want %v", name, tc.err, got.Code(), tc.code)
		}
		switch {
		case tc.log == "" && logs.Len() > 0:
			t.Errorf("%s: logged %q, want nothing", name, logs.String())
		case tc.log != "" && !strings.Contains(logs.String(), tc.log):
			t.Errorf("%s: logged %q, want %q", name, logs.String(), tc.log)
		}
		if got.Code() == connect.CodeUnavailable && strings.Contains(got.Message(), "SQLSTATE") {
			t.Errorf("%s: the client gets the database's text: %q", name, got.Message())
		}
	}
}
