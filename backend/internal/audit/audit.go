// Package audit records every call of an RPC that can change something —
// who made it, what it named, when and with which result — and serves the
// records (carbide.audit.v1.AuditService).
package audit

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Interceptor writes an audit record after every call of an RPC not marked
// free of side effects, including calls that failed or were denied. A
// record that cannot be written is logged; the call's result stands.
func Interceptor(st *store.Store, logger *slog.Logger) connect.Interceptor {
	return &recorder{store: st, logger: logger}
}

type recorder struct {
	store  *store.Store
	logger *slog.Logger
}

// callKey is the context key of the *call a handler marks unchanged.
type callKey struct{}

type call struct {
	unchanged atomic.Bool
	resources atomic.Pointer[[]string]
}

// Unchanged tells the interceptor that the current call, although of an
// RPC that can change something, changed nothing this time — a DHCP lease
// handed out again as it is stored — so that it writes no record. A call
// that fails is recorded all the same.
func Unchanged(ctx context.Context) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.unchanged.Store(true)
	}
}

// Resources tells the interceptor which resources the current call
// changed, in place of the ids it would find in the call's messages: a
// DHCP LeaseBatch names the machines whose leases it wrote.
func Resources(ctx context.Context, ids []string) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		ids = append([]string{}, ids...)
		c.resources.Store(&ids)
	}
}

func (r *recorder) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		c := &call{}
		resp, err := next(context.WithValue(ctx, callKey{}, c), req)
		if req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects && (err != nil || !c.unchanged.Load()) {
			var out any
			if resp != nil {
				out = resp.Any()
			}
			var ids []string
			if named := c.resources.Load(); named != nil {
				ids = *named
			} else {
				ids = resourceIDs(req.Any(), out)
			}
			r.record(ctx, req.Spec().Procedure, req.Peer().Addr, ids, err)
		}
		return resp, err
	}
}

func (r *recorder) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler passes streams through: Carbide's only stream,
// Watch, changes nothing.
func (r *recorder) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (r *recorder) record(ctx context.Context, procedure, peer string, ids []string, callErr error) {
	create := r.store.Client.AuditRecord.Create().
		SetTime(store.Now()).
		SetProcedure(procedure).
		SetPeer(peer).
		SetResourceIds(ids).
		SetPrincipal(principal.Anonymous).
		SetCode("ok")
	if p := principal.FromContext(ctx); p != nil {
		roles := make([]string, len(p.Roles))
		for i, role := range p.Roles {
			roles[i] = string(role)
		}
		create.SetPrincipal(p.Name).SetRoles(roles).SetAuthMethod(string(p.Method))
	}
	if callErr != nil {
		create.SetCode(connect.CodeOf(callErr).String())
		var cerr *connect.Error
		if errors.As(callErr, &cerr) {
			create.SetError(cerr.Message())
		}
	}
	// The call's own context may be cancelled already; the record must
	// still be written.
	if err := create.Exec(context.WithoutCancel(ctx)); err != nil {
		r.logger.ErrorContext(ctx, "audit record not written", "procedure", procedure, "error", err)
	}
}

// resourceIDs collects the ids a call named or created: every string field
// called "id" or ending in "_id", at the top level of the request and
// response and one message deep (as in UpdateSegmentRequest.segment.id).
func resourceIDs(msgs ...any) []string {
	var ids []string
	var walk func(m protoreflect.Message, depth int)
	walk = func(m protoreflect.Message, depth int) {
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			switch {
			case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap() && isIDName(string(fd.Name())):
				if v := m.Get(fd).String(); v != "" && !slices.Contains(ids, v) {
					ids = append(ids, v)
				}
			case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && depth == 0 && m.Has(fd):
				walk(m.Get(fd).Message(), depth+1)
			}
		}
	}
	for _, msg := range msgs {
		if pm, ok := msg.(proto.Message); ok && pm != nil {
			walk(pm.ProtoReflect(), 0)
		}
	}
	if ids == nil {
		ids = []string{}
	}
	return ids
}

func isIDName(name string) bool {
	return name == "id" || len(name) > 3 && name[len(name)-3:] == "_id"
}
