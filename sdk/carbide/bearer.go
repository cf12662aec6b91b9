package carbide

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// bearerOption builds the interceptor of WithBearerToken or
// WithTokenSource; New calls it so that a bad option fails New.
type bearerOption func() (*bearerInterceptor, error)

// WithBearerToken sends token, a JWT, as "authorization: Bearer <token>"
// on every call. Surrounding white space, such as the newline at the end
// of a token file, is removed. For a token that expires, use
// WithTokenSource.
func WithBearerToken(token string) Option {
	return func(o *options) {
		o.bearer = append(o.bearer, func() (*bearerInterceptor, error) {
			tok := strings.TrimSpace(token)
			if err := checkToken(tok); err != nil {
				return nil, fmt.Errorf("WithBearerToken: %w", err)
			}
			return &bearerInterceptor{static: "Bearer " + tok}, nil
		})
	}
}

// WithTokenSource sends the token that source returns, a JWT, as
// "authorization: Bearer <token>". The Client calls source once per unary
// call and once per stream, with the call's context, so a refreshed token
// is picked up; source should cache the token and be safe for concurrent
// use. If source fails, the call fails with connect.CodeUnauthenticated
// (connect.CodeCanceled or connect.CodeDeadlineExceeded if the call's
// context is done) wrapping source's error, without sending anything. A
// token source's error must not contain the token.
func WithTokenSource(source func(ctx context.Context) (string, error)) Option {
	return func(o *options) {
		o.bearer = append(o.bearer, func() (*bearerInterceptor, error) {
			if source == nil {
				return nil, errors.New("WithTokenSource: the token source is nil")
			}
			return &bearerInterceptor{source: source}, nil
		})
	}
}

// checkToken reports why tok cannot be sent in an authorization header.
// Its errors never contain the token.
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("the bearer token is empty")
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < ' ' || c == 0x7f {
			return errors.New("the bearer token contains a control character, which an HTTP header cannot carry")
		}
	}
	return nil
}

// bearerInterceptor sets the authorization header on unary and
// client-side streaming calls. Exactly one of static, the whole header
// value, and source is set.
type bearerInterceptor struct {
	static string
	source func(context.Context) (string, error)
}

var _ connect.Interceptor = (*bearerInterceptor)(nil)

// authorization returns the authorization header value for one call, or a
// *connect.Error that does not contain a token.
func (b *bearerInterceptor) authorization(ctx context.Context) (string, error) {
	if b.source == nil {
		return b.static, nil
	}
	tok, err := b.source(ctx)
	if err != nil {
		// Any token returned alongside the error is dropped.
		err = fmt.Errorf("get a bearer token: %w", err)
		switch ctxErr := ctx.Err(); {
		case errors.Is(ctxErr, context.DeadlineExceeded):
			return "", connect.NewError(connect.CodeDeadlineExceeded, err)
		case ctxErr != nil:
			return "", connect.NewError(connect.CodeCanceled, err)
		}
		return "", connect.NewError(connect.CodeUnauthenticated, err)
	}
	tok = strings.TrimSpace(tok)
	if err := checkToken(tok); err != nil {
		return "", connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("get a bearer token from the token source: %w", err))
	}
	return "Bearer " + tok, nil
}

// WrapUnary implements connect.Interceptor.
func (b *bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		v, err := b.authorization(ctx)
		if err != nil {
			return nil, err
		}
		req.Header().Set("Authorization", v)
		return next(ctx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor. The header is set
// when the stream is opened, before its first message.
func (b *bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		v, err := b.authorization(ctx)
		if err != nil {
			return newFailedStream(spec, err)
		}
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", v)
		return conn
	}
}

// WrapStreamingHandler implements connect.Interceptor; it is a no-op, as
// the interceptor is only used by clients.
func (b *bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// failedStream is a stream that failed before it was opened: every
// operation returns err, and nothing is sent.
type failedStream struct {
	spec                               connect.Spec
	err                                error
	reqHeader, respHeader, respTrailer http.Header
}

func newFailedStream(spec connect.Spec, err error) *failedStream {
	return &failedStream{spec: spec, err: err, reqHeader: http.Header{}, respHeader: http.Header{}, respTrailer: http.Header{}}
}

func (s *failedStream) Spec() connect.Spec           { return s.spec }
func (s *failedStream) Peer() connect.Peer           { return connect.Peer{} }
func (s *failedStream) Send(any) error               { return s.err }
func (s *failedStream) RequestHeader() http.Header   { return s.reqHeader }
func (s *failedStream) CloseRequest() error          { return s.err }
func (s *failedStream) Receive(any) error            { return s.err }
func (s *failedStream) ResponseHeader() http.Header  { return s.respHeader }
func (s *failedStream) ResponseTrailer() http.Header { return s.respTrailer }
func (s *failedStream) CloseResponse() error         { return s.err }
