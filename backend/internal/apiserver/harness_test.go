package apiserver

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/provision"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/bmc/v1/bmcv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// stores are the two stores every API test runs against.
var stores = []string{"postgres", "embedded"}

// env is an API server on a real store, served over TLS with the
// development PKI, with clients for every service that authenticate with
// the admin certificate.
type env struct {
	Store *store.Store
	URL   string
	// Tokens issues agent tokens the server accepts.
	Tokens *pki.AgentTokens
	// Secrets is the server's keyring (the development one): what it
	// seals, a test can open.
	Secrets *secrets.Keyring
	// PKI is the directory holding the development CA and the role
	// certificates (admin.crt, dhcp.crt, ...).
	PKI string
	// HTTP is a client that trusts the server and presents no certificate.
	HTTP *http.Client
	// Controller is the server's lifecycle controller; tests tick it
	// themselves (nothing runs it in the background).
	Controller *provision.Controller
	protocol   string

	clients
}

// clients holds a client for every service, all with one identity.
type clients struct {
	Machines  machinev1connect.MachineServiceClient
	Segments  networkv1connect.SegmentServiceClient
	Address   networkv1connect.AddressServiceClient
	Watch     watchv1connect.WatchServiceClient
	Agent     agentv1connect.AgentServiceClient
	Audit     auditv1connect.AuditServiceClient
	DHCP      dhcpv1connect.DHCPServiceClient
	Boot      bootv1connect.BootServiceClient
	BMC       bmcv1connect.BMCServiceClient
	Images    instancev1connect.ImageServiceClient
	Instances instancev1connect.InstanceServiceClient
}

// registerKeyring registers the keys of the keyring file at path, if there
// is one, as secrets of the run, so that the test output is checked for
// them.
func registerKeyring(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			testsecret.Register(t, f[1])
		}
	}
}

// newEnv starts an API server on a fresh store of the given kind
// ("postgres" or "embedded"); its clients speak protocol ("connect",
// "grpc" or "grpcweb").
func newEnv(t testing.TB, kind, protocol string) *env {
	t.Helper()
	return newEnvWith(t, kind, protocol, envOptions{})
}

// envOptions adjust a test server.
type envOptions struct {
	// configure changes the server's configuration before it starts.
	configure func(*Config)
	// logs receives the server's logs (debug level and up).
	logs io.Writer
	// databaseURL is the PostgreSQL database to use instead of a fresh
	// one on the shared test cluster.
	databaseURL string
}

// newEnvWith is newEnv with options.
func newEnvWith(t testing.TB, kind, protocol string, opts envOptions) *env {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Dev: true}
	if opts.configure != nil {
		opts.configure(&cfg)
	}
	scfg := store.Config{DataDir: cfg.DataDir}
	if kind == "postgres" {
		scfg.DatabaseURL = opts.databaseURL
		if scfg.DatabaseURL == "" {
			scfg.DatabaseURL = pgtest.Database(t)
		}
	}
	logs := opts.logs
	if _, bench := t.(*testing.B); logs == nil && bench {
		logs = io.Discard // what is measured is the server, not its log
	} else if logs == nil {
		logs = testOutput(t)
	}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(context.Background(), scfg, logger)
	if err != nil {
		t.Fatalf("open %s store: %v", kind, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go st.Listen(ctx, logger)
	auth, tlsConfig, err := security(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	testsecret.RegisterFiles(t, filepath.Join(cfg.DataDir, "pki", "*.key"))
	keys, err := loadSecrets(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	registerKeyring(t, filepath.Join(cfg.DataDir, "pki", secrets.DevKeyringFile))
	stopping := make(chan struct{})
	handler, _, ctrl, err := newHandler(st, auth.Agents, cfg, keys, logger, stopping, prometheus.NewRegistry(), newLimits(cfg))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(auth.Middleware(handler))
	srv.EnableHTTP2 = true
	srv.TLS = tlsConfig
	srv.StartTLS()
	t.Cleanup(func() {
		close(stopping)
		srv.Close()
		cancel()
		st.Close()
	})
	switch protocol {
	case "grpc", "grpcweb", "connect":
	default:
		t.Fatalf("unknown protocol %q", protocol)
	}
	e := &env{Store: st, URL: srv.URL, Tokens: auth.Agents, Secrets: keys, PKI: filepath.Join(cfg.DataDir, "pki"), Controller: ctrl, protocol: protocol}
	e.HTTP = e.httpClient(t, "")
	e.clients = e.as(t, "admin")
	return e
}

// httpClient returns an HTTP/2 client that trusts the development CA and
// presents the named certificate of the PKI directory ("" for none).
func (e *env) httpClient(t testing.TB, cert string) *http.Client {
	t.Helper()
	roots, err := pki.LoadPool(filepath.Join(e.PKI, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(e.PKI, cert+".crt"), filepath.Join(e.PKI, cert+".key"))
		if err != nil {
			t.Fatal(err)
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, Protocols: protocols}}
}

// httpClientFiles is httpClient with a certificate from any files.
func (e *env) httpClientFiles(t testing.TB, certFile, keyFile string) *http.Client {
	t.Helper()
	hc := e.httpClient(t, "")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
	return hc
}

// as returns clients that present the named certificate of the PKI
// directory ("" for none).
func (e *env) as(t testing.TB, cert string, opts ...connect.ClientOption) clients {
	t.Helper()
	return e.clientsOver(e.httpClient(t, cert), opts...)
}

// clientsOver returns clients that send requests through hc.
func (e *env) clientsOver(hc *http.Client, opts ...connect.ClientOption) clients {
	switch e.protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpcweb":
		opts = append(opts, connect.WithGRPCWeb())
	}
	return clients{
		Machines:  machinev1connect.NewMachineServiceClient(hc, e.URL, opts...),
		Segments:  networkv1connect.NewSegmentServiceClient(hc, e.URL, opts...),
		Address:   networkv1connect.NewAddressServiceClient(hc, e.URL, opts...),
		Watch:     watchv1connect.NewWatchServiceClient(hc, e.URL, opts...),
		Agent:     agentv1connect.NewAgentServiceClient(hc, e.URL, opts...),
		Audit:     auditv1connect.NewAuditServiceClient(hc, e.URL, opts...),
		DHCP:      dhcpv1connect.NewDHCPServiceClient(hc, e.URL, opts...),
		Boot:      bootv1connect.NewBootServiceClient(hc, e.URL, opts...),
		BMC:       bmcv1connect.NewBMCServiceClient(hc, e.URL, opts...),
		Images:    instancev1connect.NewImageServiceClient(hc, e.URL, opts...),
		Instances: instancev1connect.NewInstanceServiceClient(hc, e.URL, opts...),
	}
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

// adminID is the principal of the admin certificate test clients use.
var adminID = pki.UserID(pki.DefaultTrustDomain, principal.RoleAdmin, "bootstrap")

// testOutput is the test's output, for the logs of the servers it starts,
// which `make go-test` checks for secrets (sdk/testsecret). Writes
// after the test has ended, from a goroutine still winding down, are
// dropped.
func testOutput(t testing.TB) io.Writer {
	w := &lockedOutput{out: t.Output()}
	t.Cleanup(func() { // runs after the server's cleanup
		w.mu.Lock()
		defer w.mu.Unlock()
		w.out = nil
	})
	return w
}

type lockedOutput struct {
	mu  sync.Mutex
	out io.Writer
}

func (w *lockedOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out == nil {
		return len(p), nil
	}
	return w.out.Write(p)
}
