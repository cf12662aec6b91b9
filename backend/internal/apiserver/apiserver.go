// Package apiserver runs the Carbide API: every service on one port for
// Connect, gRPC and gRPC-Web, with gRPC reflection and health, Prometheus
// metrics on /metrics (and, when asked, Go's runtime profiles on
// /debug/pprof/), and graceful shutdown.
package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/carbide-dev/carbide/backend/internal/agent"
	"github.com/carbide-dev/carbide/backend/internal/audit"
	"github.com/carbide-dev/carbide/backend/internal/authn"
	"github.com/carbide-dev/carbide/backend/internal/authz"
	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/boot"
	"github.com/carbide-dev/carbide/backend/internal/dhcp"
	"github.com/carbide-dev/carbide/backend/internal/instances"
	"github.com/carbide-dev/carbide/backend/internal/interceptor"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/provision"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/segments"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/internal/watch"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/bmc/v1/bmcv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// Config configures the API server.
type Config struct {
	// Listen is the host:port to serve on.
	Listen string
	// DatabaseURL is a postgres:// URL; empty selects the embedded store.
	DatabaseURL string
	// DatabaseMaxConns caps open PostgreSQL connections; 0 means the
	// store's default.
	DatabaseMaxConns int
	// DataDir holds the embedded store, and the development PKI with Dev.
	DataDir string
	// Dev serves TLS with the development PKI under DataDir/pki (a CA,
	// the server's certificate and one per role) and accepts the tokens
	// of its development issuer, for a lab. It excludes TLSCert.
	Dev bool
	// InsecurePlaintext serves without TLS, for local development only.
	// Callers can then authenticate with JWTs of JWT's issuer only; the
	// server sets up no development issuer and no agent-token key.
	InsecurePlaintext bool
	// TLSCert and TLSKey are the server's certificate and key (PEM); one
	// of them, Dev or InsecurePlaintext is required.
	TLSCert, TLSKey string
	// ClientCA is the CA bundle (PEM) that client certificates must chain
	// to. Empty with Dev means the development CA; empty with TLSCert set
	// means client certificates are not accepted.
	ClientCA string
	// TrustDomain is the SPIFFE trust domain of client certificates.
	TrustDomain string
	// JWT configures bearer tokens for users; nil accepts none.
	JWT *authn.JWTConfig
	// AgentTokenKey is the ECDSA P-256 key (PEM) that signs the agent
	// tokens of booting machines; every replica needs the same one. Empty
	// with Dev means <DataDir>/pki/agent-token.key, created if missing;
	// empty otherwise means no agent tokens are issued.
	AgentTokenKey string
	// SecretsKeyFile is the keyring file (see package secrets) whose first
	// key seals stored secrets such as BMC passwords and whose every key
	// opens them; every replica needs the same one. Empty with Dev means
	// <DataDir>/pki/secrets.keys, created if missing.
	SecretsKeyFile string
	// SecretsKeys is the keyring itself, in the keyring file's format, for
	// deployments that inject secrets as environment variables
	// (secrets.EnvKeys); it excludes SecretsKeyFile.
	SecretsKeys string
	// Secrets is the keyring that services seal and open stored secrets
	// with. Run loads it from SecretsKeys or SecretsKeyFile, or with Dev
	// from the development keyring; a caller may set it instead of both.
	// nil after that means none was given: storing or reading a BMC
	// password then fails with FailedPrecondition (secrets.ErrNoKeyring).
	Secrets *secrets.Keyring
	// AgentTokenTTL is how long after a machine's boot starts its agent
	// tokens stay valid, however often renewed; 0 means
	// pki.DefaultAgentTokenTTL.
	AgentTokenTTL time.Duration
	// ChangeRetention is how long the change log keeps entries for Watch
	// clients that resume; 0 means 7 days.
	ChangeRetention time.Duration
	// AuditRetention is how long the audit log keeps records; 0 means
	// 90 days.
	AuditRetention time.Duration
	// PruneBatch is the most rows one statement of pruning deletes; 0
	// means 10000.
	PruneBatch int
	// Enrol bounds how fast DHCP enrols new MACs per segment and relay.
	Enrol dhcp.EnrolLimit
	// MaxLeaseCalls is how many DHCP Lease and LeaseBatch calls decide at
	// once; the others wait their turn, or are refused at once when they
	// could not finish before their deadline. 0 means
	// dhcp.DefaultMaxLeaseCalls.
	MaxLeaseCalls int
	// BMCLease is how long a carbide-bmc daemon's lease on a machine
	// lasts unless renewed; 0 means bmc.DefaultLeaseTime.
	BMCLease time.Duration
	// WipeMode is how a machine's disks are wiped when its instance is
	// released, for instances that ask for no mode: "quick" or "full";
	// empty means quick.
	WipeMode string
	// Timeouts are how long each step of a machine's provisioning or
	// cleaning may take before the machine fails; a zero field means
	// lifecycle.DefaultTimeouts'. InstanceService and the lifecycle
	// controller both read it.
	Timeouts lifecycle.Timeouts
	// DiscoveredRetention is how long a machine DHCP enrolled may stay
	// discovered, with no inventory, after its last lease expired, before
	// it is removed; 0 keeps such machines.
	DiscoveredRetention time.Duration
	// LeaseExpiryInterval is how often this replica looks for leases that
	// expired since and records their machines as changed, so that Watch
	// clients drop the address; 0 means DefaultLeaseExpiryInterval.
	LeaseExpiryInterval time.Duration
	// PoolMetricsInterval is how often this replica reads the segments'
	// pools for their metrics; 0 means DefaultPoolMetricsInterval.
	PoolMetricsInterval time.Duration
	// ShutdownTimeout bounds graceful shutdown; 0 means 15 seconds.
	ShutdownTimeout time.Duration
	// MaxRequestBytes bounds each request message after decompression,
	// and each request body as sent; 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// ReadTimeout and WriteTimeout bound reading a request and writing
	// its response (streams excepted); IdleTimeout closes a connection
	// without requests. 0 means the Default* value.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// DebugPprof also serves Go's runtime profiles under /debug/pprof/ on
	// Listen, next to /metrics and like it without credentials: for
	// finding where the time goes in a lab or a benchmark, never in
	// production.
	DebugPprof bool
	// Ready, if set, receives the bound address once the server accepts
	// connections (useful with port 0).
	Ready func(addr net.Addr)
}

// Validate reports every problem with the config at once.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %q is not host:port (e.g. 127.0.0.1:1079): %w", c.Listen, err))
	}
	if c.DatabaseMaxConns < 0 {
		errs = append(errs, errors.New("database-max-conns: must be 0 (the default, 8) or more"))
	}
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			errs = append(errs, errors.New("database-url: must be a postgres:// URL such as postgres://carbide:secret@db:5432/carbide"))
		}
	} else if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: required when no database URL is given"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key: give both or neither"))
	}
	errs = append(errs, c.validateMode()...)
	errs = append(errs, c.validateSecrets()...)
	if c.JWT != nil {
		if err := c.JWT.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("jwt: %w", err))
		}
	}
	if c.LeaseExpiryInterval != 0 && (c.LeaseExpiryInterval < 100*time.Millisecond || c.LeaseExpiryInterval > time.Hour) {
		errs = append(errs, errors.New("lease-expiry-interval: give 100ms to 1h (or 0 for the default, 5s)"))
	}
	if c.PruneBatch < 0 {
		errs = append(errs, errors.New("prune-batch: must be 0 (the default, 10000) or more"))
	}
	if c.Enrol.Rate < 0 || c.Enrol.Burst < 0 || c.Enrol.Rate > 0 && c.Enrol.Burst < 1 {
		errs = append(errs, errors.New("enrol-rate and enrol-burst: rate 0 means no limit; a positive rate needs a burst of 1 or more"))
	}
	if c.BMCLease != 0 && (c.BMCLease < time.Second || c.BMCLease > time.Hour) {
		errs = append(errs, errors.New("bmc-lease: give 1s to 1h (or 0 for the default, 30s)"))
	}
	switch c.WipeMode {
	case "", string(instance.WipeModeQuick), string(instance.WipeModeFull):
	default:
		errs = append(errs, fmt.Errorf("wipe-mode: %q is not quick or full", c.WipeMode))
	}
	t := c.Timeouts
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"timeout-power-on", t.PowerOn}, {"timeout-boot-agent", t.BootAgent}, {"timeout-write-image", t.WriteImage},
		{"timeout-boot-os", t.BootOS}, {"timeout-wipe-quick", t.WipeQuick}, {"timeout-wipe-full", t.WipeFull},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative (0 means the default)", d.flag))
		}
	}
	if c.MaxLeaseCalls < 0 {
		errs = append(errs, fmt.Errorf("max-lease-calls: must be 0 (the default, %d) or more", dhcp.DefaultMaxLeaseCalls))
	}
	if c.ChangeRetention < 0 || c.AuditRetention < 0 || c.ShutdownTimeout < 0 || c.AgentTokenTTL < 0 || c.DiscoveredRetention < 0 ||
		c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.MaxRequestBytes < 0 || c.MaxRequestBytes > 1<<30 {
		errs = append(errs, errors.New("max-request-bytes: give 0 (the default, 4 MiB) up to 1073741824 (1 GiB)"))
	}
	return errors.Join(errs...)
}

// validateMode checks that exactly one way of serving is chosen: a TLS
// certificate, the development PKI (Dev) or no TLS (InsecurePlaintext).
func (c *Config) validateMode() []error {
	var errs []error
	switch {
	case c.Dev && c.InsecurePlaintext:
		errs = append(errs, errors.New("dev and insecure-plaintext: choose one; --dev serves TLS with the development PKI"))
	case c.Dev && (c.TLSCert != "" || c.TLSKey != ""):
		errs = append(errs, errors.New("dev: cannot be combined with tls-cert or tls-key; --dev uses the development PKI's server certificate"))
	case c.InsecurePlaintext && (c.TLSCert != "" || c.TLSKey != "" || c.ClientCA != ""):
		errs = append(errs, errors.New("insecure-plaintext: cannot be combined with tls-cert, tls-key or client-ca"))
	case !c.Dev && !c.InsecurePlaintext && c.TLSCert == "" && c.TLSKey == "":
		errs = append(errs, errors.New("no TLS certificate: give --tls-cert and --tls-key, "+
			"or --dev for the development PKI and token issuer in <data-dir>/pki (a lab), "+
			"or --insecure-plaintext to serve without TLS (local development only)"))
	}
	if c.Dev && c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: required for the development PKI of --dev"))
	}
	return errs
}

// validateSecrets checks that the keyring comes from one place at most, and
// reads SecretsKeys, which costs nothing, so that its mistakes are
// reported with the others; the file is read at start.
func (c *Config) validateSecrets() []error {
	var errs []error
	switch {
	case c.SecretsKeyFile != "" && c.SecretsKeys != "":
		errs = append(errs, errors.New("secrets-key-file and "+secrets.EnvKeys+": give one; each holds the whole keyring that seals stored secrets"))
	case c.Secrets != nil && (c.SecretsKeyFile != "" || c.SecretsKeys != ""):
		errs = append(errs, errors.New("secrets: a loaded keyring cannot be combined with secrets-key-file or "+secrets.EnvKeys))
	}
	if c.SecretsKeys != "" {
		if _, err := secrets.ParseKeyring(secrets.EnvKeys, []byte(c.SecretsKeys)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ServiceNames are the fully-qualified names of the Carbide services.
var ServiceNames = []string{
	machinev1connect.MachineServiceName,
	networkv1connect.SegmentServiceName,
	networkv1connect.AddressServiceName,
	watchv1connect.WatchServiceName,
	dhcpv1connect.DHCPServiceName,
	agentv1connect.AgentServiceName,
	auditv1connect.AuditServiceName,
	bootv1connect.BootServiceName,
	bmcv1connect.BMCServiceName,
	instancev1connect.ImageServiceName,
	instancev1connect.InstanceServiceName,
}

// Run serves until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if cfg.ChangeRetention == 0 {
		cfg.ChangeRetention = 7 * 24 * time.Hour
	}
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = 90 * 24 * time.Hour
	}
	if cfg.PruneBatch == 0 {
		cfg.PruneBatch = 10000
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 15 * time.Second
	}
	if cfg.LeaseExpiryInterval == 0 {
		cfg.LeaseExpiryInterval = DefaultLeaseExpiryInterval
	}
	if cfg.PoolMetricsInterval <= 0 {
		cfg.PoolMetricsInterval = DefaultPoolMetricsInterval
	}
	cfg.Timeouts = instances.WithDefaults(cfg.Timeouts)
	keys, err := loadSecrets(cfg, logger)
	if err != nil {
		return err
	}
	cfg.Secrets = keys
	st, err := store.Open(ctx, store.Config{DatabaseURL: cfg.DatabaseURL, DataDir: cfg.DataDir, MaxConns: cfg.DatabaseMaxConns}, logger)
	if err != nil {
		return err
	}
	defer st.Close()

	g, gctx := errgroup.WithContext(ctx)
	auth, tlsConfig, err := security(gctx, cfg, logger)
	if err != nil {
		return err
	}
	stopping := make(chan struct{})
	reg := prometheus.NewRegistry()
	lim := newLimits(cfg)
	handler, health, ctrl, err := newHandler(st, auth.Agents, cfg, cfg.Secrets, logger, stopping, reg, lim)
	if err != nil {
		return err
	}
	if cfg.DebugPprof {
		handler = withProfiles(handler, lim)
		logger.Warn("profiling enabled (--debug-pprof): /debug/pprof/ on the API port serves the server's runtime profiles to anyone who can reach it, without credentials; keep it off in production")
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	scheme := "https"
	if tlsConfig == nil {
		protocols.SetUnencryptedHTTP2(true)
		scheme = "http"
		logger.Warn("serving without TLS (--insecure-plaintext): for local development only; client certificates cannot be used")
	} else {
		lis = tls.NewListener(lis, tlsConfig)
	}
	srv := &http.Server{
		Handler:           auth.Middleware(handler),
		Protocols:         protocols,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		// Read and write deadlines are set per request (see limits):
		// streams must outlive them.
		IdleTimeout: lim.idleTimeout,
		ConnState:   lim.ConnState,
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	g.Go(func() error {
		logger.Info("carbide-api listening", "address", lis.Addr().String(), "scheme", scheme, "protocols", "connect, grpc, grpc-web")
		if cfg.Ready != nil {
			cfg.Ready(lis.Addr())
		}
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		st.Listen(gctx, logger)
		return nil
	})
	g.Go(func() error {
		newPruner(st, cfg, reg, logger).run(gctx)
		return nil
	})
	g.Go(func() error {
		ctrl.Run(gctx, controllerInterval)
		return nil
	})
	g.Go(func() error {
		newExpirySweeper(st, cfg.LeaseExpiryInterval, reg, logger.With("component", "lease-expiry")).run(gctx)
		return nil
	})
	// The pools' metrics are read in the background, with their own
	// segment cache, so that a scrape never waits for the database.
	pools := ipam.NewPoolMetrics(ipam.NewService(st), logger.With("component", "pool-metrics"))
	reg.MustRegister(pools)
	g.Go(func() error {
		pools.Run(gctx, cfg.PoolMetricsInterval)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		for _, name := range ServiceNames {
			health.SetStatus(name, grpchealth.StatusNotServing)
		}
		health.SetStatus("", grpchealth.StatusNotServing)
		close(stopping)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down: %w", err)
		}
		return nil
	})
	err = g.Wait()
	logger.Info("stopped")
	return err
}

// DefaultPoolMetricsInterval is how often each replica reads the
// segments' pools for carbide_ipam_pool_addresses and
// carbide_ipam_pool_leased unless Config.PoolMetricsInterval says
// otherwise.
const DefaultPoolMetricsInterval = 30 * time.Second

// compressMinBytes is the smallest response the server compresses, when
// the client accepts compression.
const compressMinBytes = 4096

// newHandler builds the HTTP handler that serves every RPC. keys is the
// keyring for services that store secrets (BMC passwords); nil when none
// is configured.
// controllerInterval is how often the lifecycle controller looks for
// machines to power on and steps past their deadline.
const controllerInterval = time.Second

func newHandler(st *store.Store, tokens *pki.AgentTokens, cfg Config, keys *secrets.Keyring, logger *slog.Logger, stopping <-chan struct{}, reg *prometheus.Registry, lim *limits) (http.Handler, *grpchealth.StaticChecker, *provision.Controller, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("build request validator: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := interceptor.NewMetrics(reg)
	reg.MustRegister(lim.hits)
	opts := connect.WithHandlerOptions(append(lim.handlerOptions(),
		connect.WithInterceptors(
			metrics.Interceptor(logger),
			audit.Interceptor(st, logger, audit.NewMetrics(reg)),
			authz.Interceptor(authn.Failure),
			interceptor.Errors(logger),
			interceptor.Validate(validator),
		),
		// Compressing the small messages most calls carry costs more CPU
		// than it saves on the wire.
		connect.WithCompressMinBytes(compressMinBytes),
		// A bug in one handler fails that call, never the server.
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
			logger.ErrorContext(ctx, "handler panicked", "procedure", spec.Procedure, "panic", p, "stack", string(debug.Stack()))
			return connect.NewError(connect.CodeInternal, errors.New("internal error; the API server log has the details"))
		}),
	)...)

	timeouts := instances.WithDefaults(cfg.Timeouts)
	instanceService := instances.NewService(st, timeouts, instance.WipeMode(cfg.WipeMode))
	mux := http.NewServeMux()
	mux.Handle(machinev1connect.NewMachineServiceHandler(machines.NewService(st, timeouts), opts))
	mux.Handle(networkv1connect.NewSegmentServiceHandler(segments.NewService(st), opts))
	addresses := ipam.NewService(st)
	mux.Handle(networkv1connect.NewAddressServiceHandler(addresses, opts))
	dhcpService, err := dhcp.NewService(st, addresses, logger, cfg.Enrol, cfg.MaxLeaseCalls, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	mux.Handle(dhcpv1connect.NewDHCPServiceHandler(dhcpService, opts))
	mux.Handle(watchv1connect.NewWatchServiceHandler(watch.NewService(st, stopping), opts))
	bmcService := bmc.NewService(st, keys, cfg.BMCLease, logger)
	if err := reseal(bmcService, keys, logger, reg); err != nil {
		return nil, nil, nil, err
	}
	ctrl := provision.New(st, bmcService, instanceService, timeouts, logger.With("component", "lifecycle"))
	mux.Handle(agentv1connect.NewAgentServiceHandler(agent.NewService(st, tokens, bmcService, ctrl, logger, reg), opts))
	mux.Handle(auditv1connect.NewAuditServiceHandler(audit.NewService(st), opts))
	mux.Handle(bootv1connect.NewBootServiceHandler(boot.NewService(st, tokens, ctrl, reg), opts))
	mux.Handle(bmcv1connect.NewBMCServiceHandler(bmcService, opts))
	mux.Handle(instancev1connect.NewImageServiceHandler(instances.NewImageService(st), opts))
	mux.Handle(instancev1connect.NewInstanceServiceHandler(instanceService, opts))

	health := grpchealth.NewStaticChecker(ServiceNames...)
	mux.Handle(grpchealth.NewHandler(health, opts))
	reflector := grpcreflect.NewStaticReflector(append([]string{
		grpchealth.HealthV1ServiceName,
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
	}, ServiceNames...)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, opts))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, opts))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return lim.Middleware(mux), health, ctrl, nil
}
