// Command carbide-api serves the Carbide API: Connect, gRPC and gRPC-Web on
// one port, on PostgreSQL or, with no database URL, an embedded store.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/apiserver"
	"github.com/carbide-dev/carbide/backend/internal/authn"
	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/dhcp"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "carbide-api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "dev-token":
			return devToken(args[1:], os.Stdout, stderr)
		case "dev-cert":
			return devCert(args[1:], os.Stdout, stderr)
		case "secrets-key":
			return secretsKey(args[1:], os.Stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("carbide-api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg apiserver.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:1079", "host:port to serve Connect, gRPC and gRPC-Web on")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://user:password@host:5432/db); empty uses the embedded store in --data-dir")
	fs.IntVar(&cfg.DatabaseMaxConns, "database-max-conns", 0, "most PostgreSQL connections open at once; 0 means 8. More only helps when the database has cores to spare")
	fs.StringVar(&cfg.DataDir, "data-dir", "./carbide-data", "directory of the embedded store (used when no database URL is given) and of the development PKI in <data-dir>/pki")
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode, for a lab: TLS from a development CA in <data-dir>/pki (with a certificate per role), its token issuer (dev-token) and agent-token key")
	fs.BoolVar(&cfg.InsecurePlaintext, "insecure-plaintext", false, "serve without TLS (local development only): no client certificates, bearer tokens of --jwt-issuer only, no agent tokens without --agent-token-key")
	fs.BoolFunc("plaintext", "removed: use --insecure-plaintext (which no longer sets up a token issuer) or --dev", func(string) error {
		return errors.New("--plaintext was renamed --insecure-plaintext, which no longer turns on the development token issuer and agent-token key; " +
			"pass --dev for the development PKI and token issuer (with TLS), or --insecure-plaintext with --jwt-issuer and --agent-token-key")
	})
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "server certificate (PEM); required unless --dev or --insecure-plaintext")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "CA bundle (PEM) that client certificates must chain to; with --dev, defaults to the development CA")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "carbide.local", "SPIFFE trust domain of client certificates")
	var jwt authn.JWTConfig
	fs.StringVar(&jwt.Issuer, "jwt-issuer", "", "accept bearer JWTs from this issuer (iss); needs --jwt-audience and --jwks-url or --jwks-file")
	fs.StringVar(&jwt.Audience, "jwt-audience", "", "audience (aud) a bearer JWT must carry")
	fs.StringVar(&jwt.JWKSURL, "jwks-url", "", "URL of the issuer's JSON Web Key Set, refreshed periodically")
	fs.StringVar(&jwt.JWKSFile, "jwks-file", "", "file holding the issuer's JSON Web Key Set, re-read when it changes")
	fs.StringVar(&jwt.RolesClaim, "jwt-roles-claim", "roles", "claim holding the user's roles; a dotted path for nested claims, e.g. realm_access.roles")
	fs.StringVar(&jwt.RolePrefix, "jwt-role-prefix", "", "prefix stripped from role names in the roles claim, e.g. carbide-")
	jwtAlgs := fs.String("jwt-algorithms", "", "comma-separated signature algorithms to accept (default: RS*, PS*, ES*, EdDSA; never none or HS*)")
	fs.StringVar(&cfg.AgentTokenKey, "agent-token-key", "", "ECDSA P-256 key (PEM) that signs the agent tokens of booting machines, the same on every replica; defaults to one in <data-dir>/pki with --dev; otherwise empty issues no agent tokens")
	fs.StringVar(&cfg.SecretsKeyFile, "secrets-key-file", "", "keyring that encrypts stored secrets such as BMC passwords, the same on every replica: "+
		"one '<id> <base64 of 32 bytes>' line per key, the first seals, all open; mode 0600 (carbide-api secrets-key prints a line). "+
		"Or give the keyring itself in "+secrets.EnvKeys+". Defaults to <data-dir>/pki/secrets.keys with --dev; otherwise empty stores no secrets")
	fs.DurationVar(&cfg.AgentTokenTTL, "agent-token-ttl", pki.DefaultAgentTokenTTL, "how long after a machine's boot starts its agent tokens stay valid (renewals never extend past it)")
	fs.DurationVar(&cfg.ChangeRetention, "change-retention", 7*24*time.Hour, "how long the change log keeps entries for Watch clients that resume; older ones are pruned hourly")
	fs.DurationVar(&cfg.AuditRetention, "audit-retention", 90*24*time.Hour, "how long the audit log keeps records; older ones are pruned hourly")
	fs.IntVar(&cfg.PruneBatch, "prune-batch", 10000, "most change-log entries or audit records one pruning statement deletes")
	fs.Float64Var(&cfg.Enrol.Rate, "enrol-rate", 5, "new machines per second DHCP may enrol from one relay of a segment (or the daemon's own link) once --enrol-burst is spent; more are refused (ResourceExhausted) and counted in carbide_enrolments_refused_total. 0: no limit")
	fs.IntVar(&cfg.Enrol.Burst, "enrol-burst", 200, "new machines DHCP may enrol at once from one relay of a segment, e.g. racks powered on together")
	fs.DurationVar(&cfg.BMCLease, "bmc-lease", bmc.DefaultLeaseTime, "how long a carbide-bmc daemon's lease on a machine lasts unless it renews it: after a daemon dies, its machines wait this long for another (1s to 1h)")
	fs.IntVar(&cfg.MaxLeaseCalls, "max-lease-calls", dhcp.DefaultMaxLeaseCalls, "DHCP Lease and LeaseBatch calls that decide at once; more wait in turn, and one that could not finish before its deadline is refused at once (resource_exhausted, counted in carbide_dhcp_lease_calls_refused_total). Keep it at or below --database-max-conns")
	fs.StringVar(&cfg.WipeMode, "wipe-mode", "quick", "how a machine's disks are wiped when its instance is released, unless the instance asks otherwise: quick (signatures and the first and last MiB of each disk) or full (every block)")
	d := lifecycle.DefaultTimeouts
	fs.DurationVar(&cfg.Timeouts.PowerOn, "timeout-power-on", d.PowerOn, "how long a machine may take to power on and boot from the network before it fails")
	fs.DurationVar(&cfg.Timeouts.BootAgent, "timeout-boot-agent", d.BootAgent, "how long a machine's discovery agent may take to report after it powered on")
	fs.DurationVar(&cfg.Timeouts.WriteImage, "timeout-write-image", d.WriteImage, "how long the agent may take to write an instance's image")
	fs.DurationVar(&cfg.Timeouts.BootOS, "timeout-boot-os", d.BootOS, "how long an installed system may take to boot and phone home")
	fs.DurationVar(&cfg.Timeouts.WipeQuick, "timeout-wipe-quick", d.WipeQuick, "how long a quick wipe of a released machine's disks may take")
	fs.DurationVar(&cfg.Timeouts.WipeFull, "timeout-wipe-full", d.WipeFull, "how long a full wipe of a released machine's disks may take")
	fs.DurationVar(&cfg.LeaseExpiryInterval, "lease-expiry-interval", apiserver.DefaultLeaseExpiryInterval, "how often each replica records the machines whose leases expired as changed, so that Watch clients (carbide-dns) drop the address; 100ms to 1h")
	fs.DurationVar(&cfg.DiscoveredRetention, "discovered-retention", 72*time.Hour, "remove a machine DHCP enrolled that stayed discovered, with no inventory, this long after its last lease expired; 0 keeps them")
	fs.Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", apiserver.DefaultMaxRequestBytes, "largest request message, after decompression, and request body; a larger one gets resource_exhausted")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", apiserver.DefaultReadTimeout, "how long a request may take to arrive (streams excepted)")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", apiserver.DefaultWriteTimeout, "how long a call may take to answer (streams such as Watch excepted)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", apiserver.DefaultIdleTimeout, "how long a connection may stay open without a call")
	fs.BoolVar(&cfg.DebugPprof, "debug-pprof", false, "also serve Go's runtime profiles (net/http/pprof) at /debug/pprof/ on --listen, like /metrics without credentials: for a lab or a benchmark, never in production")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: carbide-api [flags]\n       carbide-api dev-token [--role admin] (prints a development bearer token)\n       carbide-api dev-cert --agent <machine-id> | --service <role> | --user <role> --name <name> (issues a client certificate from the development CA)\n       carbide-api secrets-key [--id <id>] (prints a new key line for the --secrets-key-file keyring)\n\nEvery flag can also be set as an environment variable: --database-url as CARBIDE_DATABASE_URL, and so on.\n%s, which has no flag, holds the keyring itself instead of --secrets-key-file.\n\nFlags:\n", secrets.EnvKeys)
		fs.PrintDefaults()
	}
	if err := envDefaults(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	// The keyring itself is an environment variable only: on the command
	// line every local user could read it. It goes no further than here.
	if v, ok := os.LookupEnv(secrets.EnvKeys); ok {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%s is set but empty: give the keyring (lines of '<id> <base64 of 32 bytes>') or unset it", secrets.EnvKeys)
		}
		cfg.SecretsKeys = v
		_ = os.Unsetenv(secrets.EnvKeys)
	}
	if jwt.Issuer != "" || jwt.Audience != "" || jwt.JWKSURL != "" || jwt.JWKSFile != "" {
		if *jwtAlgs != "" {
			jwt.Algorithms = strings.Split(*jwtAlgs, ",")
		}
		cfg.JWT = &jwt
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	return apiserver.Run(ctx, cfg, logger)
}

// envDefaults sets each flag from CARBIDE_<NAME> when that is set; the
// command line still wins.
func envDefaults(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := "CARBIDE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format: %q is not text or json", format)
}

// devToken prints a bearer token of the development issuer, which the API
// accepts when it runs with --dev and no --jwt-issuer.
func devToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("carbide-api dev-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./carbide-data", "data directory of the API whose development issuer signs the token")
	role := fs.String("role", "admin", "role the token carries: admin, operator or viewer")
	subject := fs.String("subject", "developer", "subject (sub) of the token")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := envDefaults(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch principal.Role(*role) {
	case principal.RoleAdmin, principal.RoleOperator, principal.RoleViewer:
	default:
		return fmt.Errorf("role: %q is not admin, operator or viewer", *role)
	}
	tok, err := pki.DevToken(filepath.Join(*dataDir, "pki"), *subject, []string{*role}, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// devCert issues a client certificate from the development CA, e.g. for the
// discovery agent of one machine.
func devCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("carbide-api dev-cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./carbide-data", "data directory of the API whose development CA signs the certificate")
	agent := fs.String("agent", "", "issue the discovery agent certificate of this machine id")
	service := fs.String("service", "", "issue a service certificate for this role: dhcp, pxe, dns or bmc")
	user := fs.String("user", "", "issue a user certificate for this role: admin, operator or viewer (with --name)")
	name := fs.String("name", "", "user name for --user")
	ttl := fs.Duration("ttl", 30*24*time.Hour, "how long the certificate is valid")
	out := fs.String("out", "", "directory to write <name>.crt and <name>.key to (default <data-dir>/pki)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var id, base string
	switch {
	case *agent != "" && *service == "" && *user == "":
		id, base = pki.AgentID("", strings.ToLower(*agent)), "agent-"+strings.ToLower(*agent)
	case *service != "" && *agent == "" && *user == "":
		id, base = pki.ServiceID("", principal.Role(*service)), *service
	case *user != "" && *agent == "" && *service == "" && *name != "":
		id, base = pki.UserID("", principal.Role(*user), *name), *user+"-"+*name
	default:
		return errors.New("give exactly one of --agent <machine-id>, --service <role> or --user <role> --name <name>")
	}
	dir := filepath.Join(*dataDir, "pki")
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		return fmt.Errorf("%w (start carbide-api --dev once with this data directory to create the development CA)", err)
	}
	certPEM, keyPEM, err := ca.IssueClient(id, *ttl)
	if err != nil {
		return err
	}
	// The identity is checked the way the API will check it.
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse issued certificate: %w", err)
	}
	if _, err := pki.PrincipalFromCert("", cert); err != nil {
		return err
	}
	if *out == "" {
		*out = dir
	}
	certFile, keyFile := filepath.Join(*out, base+".crt"), filepath.Join(*out, base+".key")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n%s\n%s\n", id, certFile, keyFile)
	return err
}

// secretsKey prints a line holding a new random key for a secrets keyring
// (--secrets-key-file or CARBIDE_SECRETS_KEYS).
func secretsKey(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("carbide-api secrets-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", time.Now().UTC().Format(time.DateOnly), "id of the new key, stored beside every secret it seals: letters, digits, '.', '_' or '-', at most 32")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: carbide-api secrets-key [--id <id>]\n\n"+
			"Prints '<id> <base64 of 32 random bytes>', a line for the keyring of --secrets-key-file or %s.\n"+
			"The first line of a keyring seals new secrets; to rotate, put the new line first and keep the old ones below it.\n\nFlags:\n", secrets.EnvKeys)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	line, err := secrets.GenerateKeyLine(*id)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}
