package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FailureFunc returns why authentication of the call in ctx failed, or nil
// if the caller presented no credentials (or good ones).
type FailureFunc func(ctx context.Context) error

// Interceptor allows a call only if Policy lets the caller's roles make it.
// A call without a caller (and not public) is Unauthenticated, with the
// reason the credentials were refused when there were some; a caller
// without a suitable role is PermissionDenied.
func Interceptor(failure FailureFunc) connect.Interceptor {
	return New(failure)
}

// New returns the authorizer behind Interceptor, for direct use.
func New(failure FailureFunc) *Authorizer {
	return &Authorizer{failure: failure}
}

// Authorizer applies Policy to calls; it is a connect.Interceptor.
type Authorizer struct {
	failure FailureFunc
}

func (a *Authorizer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.Check(ctx, req.Spec().Procedure, req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a *Authorizer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *Authorizer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		// Streams are checked before the first message; none of the
		// streaming RPCs is bound to a machine.
		if err := a.Check(ctx, conn.Spec().Procedure, nil); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// Check decides one call: nil if the caller in ctx may call procedure with
// req, else the Unauthenticated or PermissionDenied error to return.
func (a *Authorizer) Check(ctx context.Context, procedure string, req any) error {
	rule, known := Policy[procedure]
	if known && rule.Public {
		return nil
	}
	who := principal.FromContext(ctx)
	if who == nil {
		if err := a.failure(ctx); err != nil {
			return connect.NewError(connect.CodeUnauthenticated, err)
		}
		return connect.NewError(connect.CodeUnauthenticated,
			errors.New("this call needs credentials: a client certificate from Carbide's CA, or an 'authorization: Bearer <JWT>' header"))
	}
	if !known {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is not open to any role", procedure))
	}
	allowed := false
	for _, r := range who.Roles {
		if slices.Contains(rule.Roles, r) {
			allowed = true
			break
		}
	}
	if !allowed {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s may not call %s (roles %v; allowed: %v)", who.Name, procedure, who.Roles, rule.Roles))
	}
	if who.Has(principal.RoleAgent) {
		return bound(who, req)
	}
	return nil
}

// bound checks that an agent's request names the machine the agent's
// credential is bound to.
func bound(who *principal.Principal, req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodePermissionDenied, errors.New("an agent may only make calls that name its machine"))
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName("machine_id")
	if fd == nil || fd.Kind() != protoreflect.StringKind {
		return connect.NewError(connect.CodePermissionDenied, errors.New("an agent may only make calls that name its machine"))
	}
	if got := m.ProtoReflect().Get(fd).String(); got != who.MachineID {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("the agent of machine %s may not speak for machine %q", who.MachineID, got))
	}
	return nil
}
