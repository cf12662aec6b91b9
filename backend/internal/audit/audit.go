// Package audit records every call of an RPC that can change something —
// who made it, what it named, when and with which result — in the
// transaction of the change it makes, serves the records
// (carbide.audit.v1.AuditService), and prunes old ones.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Interceptor writes an audit record of every call of an RPC that can
// change something, including calls that failed or were denied. The record
// of a call that changes the store through store.InTx is written inside
// that transaction (a store.TxHook): the change and its record commit
// together, and a record that cannot be written fails the call and rolls
// the change back. The ids the response adds, or the error of a call that
// fails after its transaction committed, complete the record afterwards.
// Every other call of such an RPC (denied, invalid, failed before any
// transaction committed, or changing nothing in a transaction) is recorded
// after it returns; a record that cannot be written then is logged and the
// call's result stands.
//
// Calls of RPCs free of side effects, health checks and streams (Watch,
// gRPC reflection), and calls refused for overload (Shed), are not
// recorded: m counts them by procedure and code.
func Interceptor(st *store.Store, logger *slog.Logger, m *Metrics) connect.Interceptor {
	return &recorder{store: st, logger: logger, metrics: m}
}

// Metrics counts the calls the audit log leaves out.
type Metrics struct {
	notAudited *prometheus.CounterVec
}

// NewMetrics registers the audit metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		notAudited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_audit_calls_not_recorded_total",
			Help: "Calls the audit log holds no record of because they change nothing (read-only RPCs, health checks, streams, calls refused for overload), by procedure and Connect code.",
		}, []string{"procedure", "code"}),
	}
	reg.MustRegister(m.notAudited)
	return m
}

// healthCheck is the procedure of gRPC health checks: anonymous probes,
// often several a second, that change nothing.
const healthCheck = "/grpc.health.v1.Health/Check"

type recorder struct {
	store   *store.Store
	logger  *slog.Logger
	metrics *Metrics
}

// callKey is the context key of the *call a handler marks unchanged.
type callKey struct{}

// call is the audit state of one call: what a handler said of it, and the
// record a transaction of it committed, if any.
type call struct {
	r         *recorder
	procedure string
	peer      string
	ids       []string // from the request, for a record written in a transaction

	unchanged atomic.Bool
	shed      atomic.Bool
	resources atomic.Pointer[[]string]

	mu       sync.Mutex
	recordID int64    // the record a committed transaction holds; 0 for none
	written  []string // the ids it names
	changed  bool     // whether they include resources the transaction changed
}

// Unchanged tells the interceptor that the current call, although of an
// RPC that can change something, changed nothing this time, or nothing the
// audit log records (a DHCP lease handed out again, or renewed, which a
// metric counts instead) — so that it writes no record. A call
// that fails is recorded all the same.
func Unchanged(ctx context.Context) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.unchanged.Store(true)
	}
}

// Shed tells the interceptor that the current call was refused before it
// read or changed anything, because the server is overloaded (the DHCP
// lease calls' admission control): unless a transaction of the call wrote
// a record, it writes none, so that shedding load costs the database no
// write, and counts the call in carbide_audit_calls_not_recorded_total.
func Shed(ctx context.Context) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.shed.Store(true)
	}
}

// Resources tells the interceptor which resources the current call
// changed, in place of the ids it would find in the call's messages: a
// DHCP LeaseBatch names the machines it enrolled.
func Resources(ctx context.Context, ids []string) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		ids = append([]string{}, ids...)
		c.resources.Store(&ids)
	}
}

// recorded says whether calls of the procedure are recorded.
func recorded(spec connect.Spec) bool {
	return spec.IdempotencyLevel != connect.IdempotencyNoSideEffects && spec.Procedure != healthCheck
}

func (r *recorder) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		spec := req.Spec()
		if !recorded(spec) {
			resp, err := next(ctx, req)
			r.metrics.notAudited.WithLabelValues(spec.Procedure, codeOf(err)).Inc()
			return resp, err
		}
		c := &call{r: r, procedure: spec.Procedure, peer: req.Peer().Addr, ids: resourceIDs(req.Any())}
		resp, err := next(store.WithTxHook(context.WithValue(ctx, callKey{}, c), c), req)
		c.finish(ctx, req, resp, err)
		return resp, err
	}
}

func (r *recorder) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler counts streams, which it does not record: Carbide's
// only stream, Watch, changes nothing, and neither do gRPC reflection and
// health watches.
func (r *recorder) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		r.metrics.notAudited.WithLabelValues(conn.Spec().Procedure, codeOf(err)).Inc()
		return err
	}
}

// Write writes the call's record, as a success naming the resources its
// handler named (Resources), else the ids of its request and the
// resources the transaction changed, in each transaction of the call
// until one commits.
func (c *call) Write(ctx context.Context, tx *ent.Tx, changed []string) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recordID != 0 {
		return nil, nil // an earlier transaction of the call holds it
	}
	ids := append([]string{}, c.ids...)
	if named := c.resources.Load(); named != nil {
		// The handler named what it changes: finish keeps exactly those.
		ids, changed = append([]string{}, *named...), *named
	}
	for _, id := range changed {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	rec, err := c.r.create(ctx, tx.AuditRecord.Create(), c.procedure, c.peer, ids, nil).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("write audit record: %w", err)
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.recordID == 0 {
			c.recordID, c.written, c.changed = rec.ID, ids, len(changed) > 0
		}
	}, nil
}

// finish brings the call's record up to date once the call has returned:
// it writes the record of a call whose transactions wrote none, and
// completes the one a transaction wrote when the call failed afterwards,
// or when the resources the call names differ from those the record
// holds. A record that cannot be written is logged.
//
// A record names the ids of the request and the resources the call
// changed: those a handler named (Resources), else those its transaction
// recorded in the change log, else the ids of its response.
func (c *call) finish(ctx context.Context, req connect.AnyRequest, resp connect.AnyResponse, callErr error) {
	c.mu.Lock()
	id, written, changed := c.recordID, c.written, c.changed
	c.mu.Unlock()
	var ids []string
	switch named := c.resources.Load(); {
	case named != nil:
		ids = *named
	case id != 0 && changed:
		ids = written
	case resp != nil:
		ids = resourceIDs(req.Any(), resp.Any())
	default:
		ids = c.ids
	}
	// The call's own context may be cancelled already; the record must
	// still be written.
	wctx := context.WithoutCancel(ctx)
	client := c.r.store.Client
	var err error
	switch {
	case id == 0 && callErr == nil && c.unchanged.Load():
		return
	case id == 0 && c.shed.Load():
		c.r.metrics.notAudited.WithLabelValues(c.procedure, codeOf(callErr)).Inc()
		return
	case id == 0:
		err = c.r.create(ctx, client.AuditRecord.Create(), c.procedure, c.peer, ids, callErr).Exec(wctx)
	case callErr == nil && c.unchanged.Load():
		// A transaction that read, or wrote what was there already.
		err = client.AuditRecord.DeleteOneID(id).Exec(wctx)
	case callErr != nil:
		// It failed after a change committed, which stands.
		for _, rid := range ids {
			if !slices.Contains(written, rid) {
				written = append(slices.Clip(written), rid)
			}
		}
		code, msg := result(callErr)
		err = client.AuditRecord.UpdateOneID(id).SetResourceIds(written).SetCode(code).SetError(msg).Exec(wctx)
	case !sameIDs(ids, written):
		err = client.AuditRecord.UpdateOneID(id).SetResourceIds(ids).Exec(wctx)
	}
	if err != nil {
		c.r.logger.ErrorContext(ctx, "audit record not written", "procedure", c.procedure, "error", err)
	}
}

// sameIDs says whether a and b hold the same ids, in any order.
func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

// create fills in a record of a call.
func (r *recorder) create(ctx context.Context, create *ent.AuditRecordCreate, procedure, peer string, ids []string, callErr error) *ent.AuditRecordCreate {
	code, msg := result(callErr)
	create.SetTime(store.Now()).
		SetProcedure(procedure).
		SetPeer(peer).
		SetResourceIds(ids).
		SetPrincipal(principal.Anonymous).
		SetCode(code).
		SetError(msg)
	if p := principal.FromContext(ctx); p != nil {
		roles := make([]string, len(p.Roles))
		for i, role := range p.Roles {
			roles[i] = string(role)
		}
		create.SetPrincipal(p.Name).SetRoles(roles).SetAuthMethod(string(p.Method))
	}
	return create
}

// result is the code and message a record keeps of a call's error.
func result(err error) (code, msg string) {
	if err == nil {
		return "ok", ""
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		msg = cerr.Message()
	}
	return connect.CodeOf(err).String(), msg
}

func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
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
