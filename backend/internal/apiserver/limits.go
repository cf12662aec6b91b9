package apiserver

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the request limits (Config.MaxRequestBytes and the timeouts).
const (
	DefaultMaxRequestBytes = 4 << 20
	DefaultReadTimeout     = time.Minute
	DefaultWriteTimeout    = time.Minute
	DefaultIdleTimeout     = 2 * time.Minute
)

// envelopePrefix is the size of the prefix of each message in the gRPC,
// gRPC-Web and Connect streaming protocols: a flags byte and a length.
const envelopePrefix = 5

// Limits that a request can hit: the limit label of
// carbide_api_limit_hits_total.
const (
	limitRequestBytes = "request_bytes"
	limitReadTimeout  = "read_timeout"
	limitWriteTimeout = "write_timeout"
	limitIdleTimeout  = "idle_timeout"
)

// limits holds every request to the request limits of the Config: the size
// of its body and of each message once decompressed, the time to read the
// request and to write the response, and how long a connection may idle.
// Streams (Watch, health Watch, reflection) have no read or write deadline:
// they last as long as the client listens.
type limits struct {
	maxBytes                  int64
	readTimeout, writeTimeout time.Duration
	idleTimeout               time.Duration
	hits                      *prometheus.CounterVec
	// idleSince holds when each idle connection went idle.
	idleSince sync.Map // net.Conn -> time.Time
}

// newLimits returns the limits of cfg; zero values mean the defaults.
// newHandler registers their metric.
func newLimits(cfg Config) *limits {
	cfg.limitDefaults()
	l := &limits{
		maxBytes:     cfg.MaxRequestBytes,
		readTimeout:  cfg.ReadTimeout,
		writeTimeout: cfg.WriteTimeout,
		idleTimeout:  cfg.IdleTimeout,
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_api_limit_hits_total",
			Help: "Requests and connections cut off by a limit: request_bytes (--max-request-bytes), read_timeout, write_timeout, idle_timeout.",
		}, []string{"limit"}),
	}
	for _, name := range []string{limitRequestBytes, limitReadTimeout, limitWriteTimeout, limitIdleTimeout} {
		l.hits.WithLabelValues(name)
	}
	return l
}

// limitDefaults fills in the zero limits of c.
func (c *Config) limitDefaults() {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
}

// tooLarge is the error of a request over the size limit.
func (l *limits) tooLarge() *connect.Error {
	l.hits.WithLabelValues(limitRequestBytes).Inc()
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"request too large: the limit is %d bytes (%s) per message, after decompression, and per request body; the server's --max-request-bytes sets it",
		l.maxBytes, humanBytes(l.maxBytes)))
}

// handlerOptions are the Connect handler options that enforce the limits:
// the message size, gzip decompression that stops at it, and no deadlines
// for streams.
func (l *limits) handlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(int(l.maxBytes)),
		// Connect's own gzip reads a whole oversized message to report
		// its size; this one stops at the limit.
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &cappedGzip{limits: l} },
			func() connect.Compressor { return gzip.NewWriter(io.Discard) }),
		connect.WithInterceptors(streamDeadlines{}),
	}
}

// Middleware bounds the request body of each request and sets its read and
// write deadlines.
func (l *limits) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rs := &requestState{rc: http.NewResponseController(w)}
		// An error means the writer takes no deadlines: a test's
		// recorder, never the server's connections.
		_ = rs.rc.SetReadDeadline(start.Add(l.readTimeout))
		_ = rs.rc.SetWriteDeadline(start.Add(l.writeTimeout))
		limit := bodyLimit(r, l.maxBytes)
		// A body announced larger is refused before a byte of it is read.
		r.Body = &limitedBody{body: r.Body, left: limit, announcedTooLarge: r.ContentLength > limit, limits: l}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestStateKey{}, rs)))
		if !rs.stream && time.Since(start) > l.writeTimeout {
			l.hits.WithLabelValues(limitWriteTimeout).Inc()
		}
	})
}

// ConnState counts the connections the server closes for idling longer
// than the idle timeout; it is the http.Server's ConnState hook.
func (l *limits) ConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateIdle:
		l.idleSince.Store(c, time.Now())
	case http.StateActive:
		l.idleSince.Delete(c)
	case http.StateClosed, http.StateHijacked:
		if since, ok := l.idleSince.LoadAndDelete(c); ok && time.Since(since.(time.Time)) >= l.idleTimeout {
			l.hits.WithLabelValues(limitIdleTimeout).Inc()
		}
	}
}

// bodyLimit is the most bytes the body of r may hold: one message of max
// bytes, compressed or not, with its envelope prefix in the protocols
// that have one. A stream's messages count together.
func bodyLimit(r *http.Request, max int64) int64 {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+") {
		return max + envelopePrefix
	}
	return max
}

// requestState is what the middleware and the stream interceptor share
// about one request.
type requestState struct {
	rc *http.ResponseController
	// stream is set for a streaming RPC, which has no deadlines.
	stream bool
}

type requestStateKey struct{}

// streamDeadlines lifts the read and write deadlines of streaming RPCs,
// which last as long as the client listens.
type streamDeadlines struct{}

func (streamDeadlines) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (streamDeadlines) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (streamDeadlines) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if rs, ok := ctx.Value(requestStateKey{}).(*requestState); ok {
			rs.stream = true
			_ = rs.rc.SetReadDeadline(time.Time{})
			_ = rs.rc.SetWriteDeadline(time.Time{})
		}
		return next(ctx, conn)
	}
}

// limitedBody is a request body that fails with ResourceExhausted beyond
// its limit, and counts a read that times out.
type limitedBody struct {
	body              io.ReadCloser
	left              int64
	announcedTooLarge bool
	err               error
	timedOut          bool
	limits            *limits
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.announcedTooLarge && b.err == nil {
		b.err = b.limits.tooLarge()
	}
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.body.Read(p)
	if int64(n) > b.left {
		b.err = b.limits.tooLarge()
		return int(b.left), b.err
	}
	b.left -= int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !b.timedOut {
		b.timedOut = true
		b.limits.hits.WithLabelValues(limitReadTimeout).Inc()
		err = connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"the request body did not arrive within %s, the server's --read-timeout", b.limits.readTimeout))
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.body.Close() }

// cappedGzip is a gzip decompressor that fails with ResourceExhausted once
// it has produced more than the message limit, so that a small body that
// inflates to gigabytes costs no more than the limit.
type cappedGzip struct {
	gz     gzip.Reader
	n      int64
	limits *limits
}

func (c *cappedGzip) Read(p []byte) (int, error) {
	n, err := c.gz.Read(p)
	c.n += int64(n)
	if c.n > c.limits.maxBytes {
		return n, c.limits.tooLarge()
	}
	return n, err
}

func (c *cappedGzip) Reset(r io.Reader) error {
	c.n = 0
	return c.gz.Reset(r)
}

func (c *cappedGzip) Close() error { return c.gz.Close() }

// humanBytes writes n in the largest binary unit that divides it.
func humanBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
