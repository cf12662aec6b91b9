package carbide

import (
	"errors"
	"strconv"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// violationsDetail is the type of the error detail that carries the
// protovalidate violations of a rejected request.
const violationsDetail = "buf.validate.Violations"

// Error is an error the API returned, in a form a program can act on: its
// Connect code, the server's message and, for a request that broke the
// API's validation rules, one Violation per offending field.
//
//	_, err := c.Segments.CreateSegment(ctx, req)
//	if e, ok := carbide.AsError(err); ok {
//		for _, v := range e.Violations {
//			fmt.Printf("%s: %s\n", v.Field, v.Message)
//		}
//	}
type Error struct {
	// Code is the Connect (gRPC) status code, e.g. connect.CodeNotFound.
	Code connect.Code
	// Message is the server's message, without the code.
	Message string
	// Violations are the validation rules the request broke, in the
	// order the server reported them; empty for other errors.
	Violations []Violation

	err *connect.Error
}

// Violation is one validation rule a request broke.
type Violation struct {
	// Field is the path of the offending field in the request, e.g.
	// "segment.address_ranges[0].start" or `labels["x"]`; empty for a
	// rule on a whole message.
	Field string
	// Rule identifies the rule, e.g. "string.uuid" or "int32.gte", or a
	// custom (CEL) rule's id.
	Rule string
	// Message says what is wrong, e.g. "value must be a valid UUID".
	Message string
	// ForKey is true when the violation is about a map key rather than
	// its value.
	ForKey bool
}

// AsError returns err as an *Error if it is, or wraps, an error the API
// (or connect-go, for a transport failure) returned. Errors that are not
// Connect errors, such as a bad option to New, give false.
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil, false
	}
	return fromConnect(cerr), true
}

// fromConnect builds an Error from a Connect error, decoding its
// violations detail if it has one.
func fromConnect(cerr *connect.Error) *Error {
	e := &Error{Code: cerr.Code(), Message: cerr.Message(), err: cerr}
	for _, d := range cerr.Details() {
		if d.Type() != violationsDetail {
			continue
		}
		var vs validate.Violations
		if err := proto.Unmarshal(d.Bytes(), &vs); err != nil {
			continue
		}
		for _, v := range vs.GetViolations() {
			rule := v.GetRuleId()
			if rule == "" {
				rule = fieldPath(v.GetRule())
			}
			e.Violations = append(e.Violations, Violation{
				Field:   fieldPath(v.GetField()),
				Rule:    rule,
				Message: v.GetMessage(),
				ForKey:  v.GetForKey(),
			})
		}
	}
	return e
}

// Error returns "code: message", and for a validation error
// "code: message (field: what; field: what)", e.g.
// "invalid_argument: invalid request (segment.name: value is required)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.String())
	if len(e.Violations) == 0 {
		if e.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Message)
		}
		return b.String()
	}
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	// The server's message usually lists the violations already; keep
	// only its headline so that they are not said twice.
	headline := e.Message
	if i := strings.Index(headline, parts[0]); i >= 0 {
		headline = strings.TrimRight(headline[:i], ": ")
	}
	if headline != "" {
		b.WriteString(": ")
		b.WriteString(headline)
	}
	b.WriteString(" (")
	b.WriteString(strings.Join(parts, "; "))
	b.WriteString(")")
	return b.String()
}

// Unwrap returns the underlying *connect.Error, so errors.As and
// connect.CodeOf see through an Error.
func (e *Error) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

// String returns "field: message", or the message alone for a rule on a
// whole message.
func (v Violation) String() string {
	if v.Field == "" {
		return v.Message
	}
	return v.Field + ": " + v.Message
}

// fieldPath formats a protovalidate field path the way protovalidate does:
// field names joined by dots, with [index] or [key] subscripts.
func fieldPath(path *validate.FieldPath) string {
	var b strings.Builder
	for i, el := range path.GetElements() {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(el.GetFieldName())
		switch el.WhichSubscript() {
		case validate.FieldPathElement_Index_case:
			b.WriteString("[" + strconv.FormatUint(el.GetIndex(), 10) + "]")
		case validate.FieldPathElement_BoolKey_case:
			b.WriteString("[" + strconv.FormatBool(el.GetBoolKey()) + "]")
		case validate.FieldPathElement_IntKey_case:
			b.WriteString("[" + strconv.FormatInt(el.GetIntKey(), 10) + "]")
		case validate.FieldPathElement_UintKey_case:
			b.WriteString("[" + strconv.FormatUint(el.GetUintKey(), 10) + "]")
		case validate.FieldPathElement_StringKey_case:
			b.WriteString("[" + strconv.Quote(el.GetStringKey()) + "]")
		}
	}
	return b.String()
}

// IsNotFound reports whether err says the resource does not exist.
func IsNotFound(err error) bool { return connect.CodeOf(err) == connect.CodeNotFound }

// IsAlreadyExists reports whether err says a resource with that name or
// id exists already.
func IsAlreadyExists(err error) bool { return connect.CodeOf(err) == connect.CodeAlreadyExists }

// IsInvalidArgument reports whether err says the request is invalid; its
// Violations (see AsError) name the fields.
func IsInvalidArgument(err error) bool { return connect.CodeOf(err) == connect.CodeInvalidArgument }

// IsFailedPrecondition reports whether err says the resource is not in a
// state that allows the call, e.g. deleting a segment still in use.
func IsFailedPrecondition(err error) bool {
	return connect.CodeOf(err) == connect.CodeFailedPrecondition
}

// IsPermissionDenied reports whether err says the caller's role may not
// make the call.
func IsPermissionDenied(err error) bool { return connect.CodeOf(err) == connect.CodePermissionDenied }

// IsUnauthenticated reports whether err says the caller presented no
// valid credentials.
func IsUnauthenticated(err error) bool { return connect.CodeOf(err) == connect.CodeUnauthenticated }

// IsRetryable reports whether the call may succeed if made again
// unchanged: the server was unavailable, or the change conflicted with a
// concurrent one (aborted), or a limit was hit for now.
func IsRetryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeResourceExhausted:
		return true
	}
	return false
}
