package cli

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// Exit codes. Scripts can tell these apart; docs/cli.md lists them.
const (
	ExitOK          = 0 // success
	ExitError       = 1 // any other failure
	ExitUsage       = 2 // bad command line: unknown command or flag, wrong arguments, unreadable --from-file
	ExitNotFound    = 3 // the resource (or a name given for an id) does not exist
	ExitConflict    = 4 // already exists, or the resource's state does not allow it (failed precondition, aborted, no capacity)
	ExitPermission  = 5 // unauthenticated or permission denied
	ExitInvalid     = 6 // the API rejected an argument (invalid argument, out of range)
	ExitUnavailable = 7 // the API could not be reached or did not answer in time
	ExitWaitTimeout = 8 // --wait gave up after --timeout
	ExitWaitFailed  = 9 // --wait saw the resource fail (an instance FAILED)
)

// exitCodesHelp is the table the root command's help shows.
const exitCodesHelp = `Exit codes:
  0  success
  1  any other failure
  2  usage error (unknown command or flag, wrong arguments)
  3  not found (also a name that matches nothing)
  4  conflict: already exists, or the resource's state does not allow it
  5  unauthenticated or permission denied
  6  invalid argument (the API's validation message says which field)
  7  the API is unavailable or did not answer in time
  8  --wait timed out
  9  --wait saw the resource fail
`

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError carries an exit code of its own (the wait outcomes, not
// found from name resolution).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeNotFound:
			return ExitNotFound
		case connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodeAborted, connect.CodeResourceExhausted:
			return ExitConflict
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			return ExitPermission
		case connect.CodeInvalidArgument, connect.CodeOutOfRange:
			return ExitInvalid
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			return ExitUnavailable
		}
		return ExitError
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ExitUnavailable
	}
	return ExitError
}
