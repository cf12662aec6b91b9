package daemon

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry holding the Go runtime and
// process collectors, for a daemon to add its own metrics to.
func NewRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := Register(reg,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	); err != nil {
		return nil, err
	}
	return reg, nil
}

// Register registers every collector with reg, and reports all that fail
// in one error.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

// MetricsHandler serves the metrics of reg at GET /metrics, and answers
// "ok" at GET /healthz. With profiles it also serves the runtime profiles
// of net/http/pprof under /debug/pprof/ (see [HandleProfiles]).
func MetricsHandler(reg *prometheus.Registry, profiles bool) http.Handler {
	return metricsHandler(reg, profiles, nil)
}

// metricsHandler is MetricsHandler whose /healthz answers 503 with the
// error of health while it returns one.
func metricsHandler(reg *prometheus.Registry, profiles bool, health func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if health != nil {
			if err := health(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	if profiles {
		HandleProfiles(mux)
	}
	return mux
}

// HandleProfiles serves on mux the runtime profiles of net/http/pprof
// under /debug/pprof/: the index, the named profiles (heap, goroutine,
// mutex, block, ...), a CPU profile (profile?seconds=N), an execution
// trace (trace?seconds=N) and the symbol lookup of go tool pprof. Not the
// command line (cmdline): flags can carry secrets.
func HandleProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/cmdline", http.NotFound)
}

// MetricsServer is a daemon's Prometheus endpoint: [MetricsHandler] on a
// TCP socket. A nil *MetricsServer is one that is off: its methods do
// nothing.
type MetricsServer struct {
	listener net.Listener
	server   *http.Server
}

// ListenMetrics opens the socket addr (host:port) of the metrics of reg,
// served with timeouts t, and with profiles the runtime profiles too (see
// [MetricsHandler]); it returns nil, and no error, when addr is empty.
// errorLog gets the HTTP server's errors; nil means the log package's
// standard logger.
func ListenMetrics(addr string, t HTTPTimeouts, reg *prometheus.Registry, profiles bool, errorLog *log.Logger) (*MetricsServer, error) {
	return ListenMetricsHealth(addr, t, reg, profiles, errorLog, nil)
}

// ListenMetricsHealth is ListenMetrics for a daemon that is not ready at
// once: /healthz answers 503 with health's error while it returns one.
func ListenMetricsHealth(addr string, t HTTPTimeouts, reg *prometheus.Registry, profiles bool, errorLog *log.Logger, health func() error) (*MetricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	counter := NewTimeoutCounter("carbide_metrics_http_timeouts_total",
		"Connections of the /metrics endpoint closed for idling (idle), and scrapes that outran --metrics-write-timeout (write).")
	if err := Register(reg, counter); err != nil {
		return nil, err
	}
	hits := NewTimeoutHits(counter, t.Idle)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics: %w", err)
	}
	handler := metricsHandler(reg, profiles, health)
	return &MetricsServer{
		listener: l,
		server: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				start := time.Now()
				handler.ServeHTTP(w, r)
				if time.Since(start) > t.Write {
					hits.Write()
				}
			}),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      t.Write,
			IdleTimeout:       t.Idle,
			ConnState:         hits.ConnState,
			ErrorLog:          errorLog,
		},
	}, nil
}

// DefaultMetricsTimeouts are the default timeouts of a daemon's metrics
// server (--metrics-write-timeout, --metrics-idle-timeout).
func DefaultMetricsTimeouts() HTTPTimeouts {
	return HTTPTimeouts{Write: 30 * time.Second, Idle: 2 * time.Minute}
}

// Addr is the address s listens on; nil when s is off.
func (s *MetricsServer) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.listener.Addr()
}

// Serve serves until Shutdown or Close, and then returns nil.
func (s *MetricsServer) Serve() error {
	if s == nil {
		return nil
	}
	if err := s.server.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

// Shutdown stops s, letting the scrapes in progress finish until ctx is
// done.
func (s *MetricsServer) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	return s.server.Shutdown(ctx)
}

// Close closes the socket of s, for a daemon that fails to start after
// ListenMetrics; Shutdown is how a serving one stops.
func (s *MetricsServer) Close() error {
	if s == nil {
		return nil
	}
	return s.listener.Close()
}

// CheckListen accepts a listen address: host:port with a port in 0-65535.
func CheckListen(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", s)
	}
	return nil
}
