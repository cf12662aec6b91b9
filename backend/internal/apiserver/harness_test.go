package apiserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// stores are the two stores every API test runs against.
var stores = []string{"postgres", "embedded"}

// env is an API server on a real store, served over HTTP/2 without TLS,
// with clients for every service.
type env struct {
	Store    *store.Store
	URL      string
	Machines machinev1connect.MachineServiceClient
	Segments networkv1connect.SegmentServiceClient
	Address  networkv1connect.AddressServiceClient
	Watch    watchv1connect.WatchServiceClient
	HTTP     *http.Client
}

// newEnv starts an API server on a fresh store of the given kind
// ("postgres" or "embedded"); its clients speak protocol ("connect",
// "grpc" or "grpcweb").
func newEnv(t testing.TB, kind, protocol string) *env {
	t.Helper()
	cfg := store.Config{DataDir: t.TempDir()}
	if kind == "postgres" {
		cfg.DatabaseURL = pgtest.Database(t)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), cfg, logger)
	if err != nil {
		t.Fatalf("open %s store: %v", kind, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go st.Listen(ctx, logger)
	stopping := make(chan struct{})
	handler, _, err := newHandler(st, logger, stopping)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		close(stopping)
		srv.Close()
		cancel()
		st.Close()
	})

	client := &http.Client{Transport: &http.Transport{Protocols: h2c()}}
	var opts []connect.ClientOption
	switch protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpcweb":
		opts = append(opts, connect.WithGRPCWeb())
	case "connect":
	default:
		t.Fatalf("unknown protocol %q", protocol)
	}
	return &env{
		Store:    st,
		URL:      srv.URL,
		HTTP:     client,
		Machines: machinev1connect.NewMachineServiceClient(client, srv.URL, opts...),
		Segments: networkv1connect.NewSegmentServiceClient(client, srv.URL, opts...),
		Address:  networkv1connect.NewAddressServiceClient(client, srv.URL, opts...),
		Watch:    watchv1connect.NewWatchServiceClient(client, srv.URL, opts...),
	}
}

func h2c() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

// forEachStore runs fn once per store, with gRPC clients on PostgreSQL and
// Connect clients on the embedded store, so both stores and both wire
// protocols are covered.
func forEachStore(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, kind := range stores {
		protocol := map[string]string{"postgres": "grpc", "embedded": "connect"}[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, newEnv(t, kind, protocol))
		})
	}
}

// codeOf is connect.CodeOf that reports "ok" for nil.
func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}
