// Package interceptor holds the Connect interceptors every Carbide RPC goes
// through: request validation (protovalidate), error translation at the RPC
// boundary, logging and Prometheus metrics.
package interceptor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// Validate rejects requests that break their protovalidate rules with
// InvalidArgument, naming every offending field, before any handler runs.
func Validate(v protovalidate.Validator) connect.Interceptor {
	return &validating{v: v}
}

type validating struct{ v protovalidate.Validator }

func (i *validating) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *validating) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *validating) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &validatingConn{StreamingHandlerConn: conn, i: i})
	}
}

type validatingConn struct {
	connect.StreamingHandlerConn
	i *validating
}

func (c *validatingConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return c.i.check(msg)
}

func (i *validating) check(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	err := i.v.Validate(m)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("validate request: %w", err))
	}
	if verr.Violations = masked(m, verr.Violations); len(verr.Violations) == 0 {
		return nil
	}
	parts := make([]string, 0, len(verr.Violations))
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
		if field == "" {
			parts = append(parts, v.Proto.GetMessage())
			continue
		}
		parts = append(parts, field+": "+v.Proto.GetMessage())
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("invalid request: "+strings.Join(parts, "; ")))
	if detail, derr := connect.NewErrorDetail(verr.ToProto()); derr == nil {
		cerr.AddDetail(detail)
	}
	return cerr
}

// masked drops the violations of an update request (AIP-134) that lie in
// fields of the resource its update_mask does not name. Those fields are
// ignored, so a client may send just the id and the fields it changes.
func masked(m proto.Message, vs []*protovalidate.Violation) []*protovalidate.Violation {
	msg := m.ProtoReflect()
	fd := msg.Descriptor().Fields().ByName("update_mask")
	if fd == nil || fd.Message() == nil || fd.Message().FullName() != "google.protobuf.FieldMask" {
		return vs
	}
	fm, _ := msg.Get(fd).Message().Interface().(*fieldmaskpb.FieldMask)
	named := map[string]bool{"id": true}
	for _, p := range fm.GetPaths() {
		named[strings.SplitN(p, ".", 2)[0]] = true
	}
	kept := make([]*protovalidate.Violation, 0, len(vs))
	for _, v := range vs {
		els := v.Proto.GetField().GetElements()
		if len(els) >= 2 && els[0].GetFieldName() != fd.TextName() && !named[els[1].GetFieldName()] {
			continue
		}
		kept = append(kept, v)
	}
	return kept
}

// Errors turns errors that handlers did not classify into Connect codes, so
// raw database text never reaches a client: missing rows become NotFound,
// constraint violations FailedPrecondition, a missing secrets keyring
// FailedPrecondition saying what to set, cancellations Canceled or
// DeadlineExceeded, a database that cannot be reached (or is starting or
// shutting down) Unavailable, which clients retry, and anything else
// Internal (logged in full here).
func Errors(logger *slog.Logger) connect.Interceptor {
	return &translating{logger: logger}
}

type translating struct{ logger *slog.Logger }

func (i *translating) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			err = Translate(ctx, i.logger, req.Spec().Procedure, err)
		}
		return resp, err
	}
}

func (i *translating) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *translating) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		if err != nil {
			err = Translate(ctx, i.logger, conn.Spec().Procedure, err)
		}
		return err
	}
}

// Translate is what Errors does to one error: it returns err if it is a
// Connect error already, else the Connect error a client gets for it,
// logging an internal one in full. A handler that reports errors inside
// its response (DHCPService.LeaseBatch) passes them through it too.
func Translate(ctx context.Context, logger *slog.Logger, procedure string, err error) *connect.Error {
	var cerr *connect.Error
	switch {
	case errors.As(err, &cerr):
		return cerr
	case ent.IsNotFound(err):
		return connect.NewError(connect.CodeNotFound, errors.New("not found"))
	case ent.IsConstraintError(err):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the change conflicts with existing data; read the resource again and retry"))
	case store.IsConflict(err):
		logger.InfoContext(ctx, "transaction conflict", "procedure", procedure, "error", err)
		return connect.NewError(connect.CodeAborted, errors.New("the change conflicted with a concurrent one and was not made; retry"))
	case errors.Is(err, secrets.ErrNoKeyring):
		return connect.NewError(connect.CodeFailedPrecondition, secrets.ErrNoKeyring)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case store.IsUnavailable(err):
		logger.WarnContext(ctx, "database unavailable", "procedure", procedure, "error", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("the database is unavailable; retry shortly"))
	}
	logger.ErrorContext(ctx, "internal error", "procedure", procedure, "error", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; the API server log has the details"))
}

// Metrics counts RPCs by procedure and code and observes their latency.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the RPC metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carbide_rpc_duration_seconds",
			Help:    "RPC handling time, by procedure.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Interceptor observes every RPC; logger gets one line per failed RPC and,
// at debug level, one per successful one.
func (m *Metrics) Interceptor(logger *slog.Logger) connect.Interceptor {
	return &observing{m: m, logger: logger}
}

type observing struct {
	m      *Metrics
	logger *slog.Logger
}

func (o *observing) observe(ctx context.Context, procedure, peer string, start time.Time, err error) {
	elapsed := time.Since(start)
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	o.m.requests.WithLabelValues(procedure, code).Inc()
	o.m.latency.WithLabelValues(procedure).Observe(elapsed.Seconds())
	switch {
	case err == nil:
		o.logger.DebugContext(ctx, "rpc", "procedure", procedure, "peer", peer, "duration", elapsed)
	case connect.CodeOf(err) == connect.CodeInternal || connect.CodeOf(err) == connect.CodeUnknown:
		o.logger.ErrorContext(ctx, "rpc failed", "procedure", procedure, "peer", peer, "code", code, "duration", elapsed, "error", err)
	default:
		o.logger.InfoContext(ctx, "rpc rejected", "procedure", procedure, "peer", peer, "code", code, "duration", elapsed, "error", err)
	}
}

func (o *observing) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		o.observe(ctx, req.Spec().Procedure, req.Peer().Addr, start, err)
		return resp, err
	}
}

func (o *observing) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observing) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		o.observe(ctx, conn.Spec().Procedure, conn.Peer().Addr, start, err)
		return err
	}
}
