package carbide

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config says where the API is and how to authenticate. Paths are file
// paths (PEM). The CLI and the Terraform provider both build their Client
// from one, so the same settings work in both.
type Config struct {
	// Endpoint is the API's base URL, https://host:1079 (http:// for an
	// API started with --insecure-plaintext).
	Endpoint string `json:"endpoint,omitempty"`
	// CACert is the CA bundle that signs the server certificate; the
	// system roots are used when it is empty.
	CACert string `json:"ca-cert,omitempty"`
	// ClientCert and ClientKey are the client certificate and its key,
	// for mutual TLS.
	ClientCert string `json:"client-cert,omitempty"`
	ClientKey  string `json:"client-key,omitempty"`
	// Token is a bearer JWT. It is never logged or put in an error.
	Token string `json:"token,omitempty"`
	// TokenCommand is run with `sh -c`; its trimmed standard output is the
	// bearer token. It runs again when the token is about to expire (the
	// JWT's exp claim), or before every call when the token has no exp.
	TokenCommand string `json:"token-command,omitempty"`
	// Protocol is the wire protocol: connect (the default), grpc or
	// grpc-web.
	Protocol string `json:"protocol,omitempty"`
}

// ConfigFile is the CLI's config file (YAML): named contexts, one of them
// current.
//
//	current-context: lab
//	contexts:
//	  lab:
//	    endpoint: https://carbide.lab.example:1079
//	    ca-cert: pki/ca.crt          # relative to the file's directory
//	    client-cert: pki/admin.crt
//	    client-key: pki/admin.key
//	  prod:
//	    endpoint: https://carbide.example:1079
//	    token-command: idp-cli token --audience carbide
type ConfigFile struct {
	CurrentContext string            `json:"current-context,omitempty"`
	Contexts       map[string]Config `json:"contexts,omitempty"`
}

// The environment variables ConfigFromEnv, LoadConfig and DefaultConfigPath
// read.
const (
	EnvConfig       = "CARBIDE_CONFIG"
	EnvContext      = "CARBIDE_CONTEXT"
	EnvEndpoint     = "CARBIDE_ENDPOINT"
	EnvCACert       = "CARBIDE_CA_CERT"
	EnvClientCert   = "CARBIDE_CLIENT_CERT"
	EnvClientKey    = "CARBIDE_CLIENT_KEY"
	EnvToken        = "CARBIDE_TOKEN"
	EnvTokenCommand = "CARBIDE_TOKEN_COMMAND"
	EnvProtocol     = "CARBIDE_PROTOCOL"
)

// protocolNames maps Config.Protocol values to protocols; "" is Connect.
var protocolNames = map[string]Protocol{"": Connect, "connect": Connect, "grpc": GRPC, "grpc-web": GRPCWeb}

// DefaultConfigPath returns $CARBIDE_CONFIG if set, else
// $XDG_CONFIG_HOME/carbide/config.yaml, else ~/.config/carbide/config.yaml.
// It returns "" only when none of these can be determined.
func DefaultConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "carbide", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "carbide", "config.yaml")
}

// ReadConfigFile reads the config file at path. A missing file is an empty
// ConfigFile, not an error, so a first run works without one. Relative
// file paths inside (ca-cert, client-cert, client-key) are resolved
// against the file's directory, and a leading ~/ against the home
// directory. Unknown keys are an error, so a misspelt setting is noticed.
func ReadConfigFile(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &ConfigFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	var f ConfigFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		// The YAML errors name lines and keys, not values, so a token in
		// the file does not reach the message.
		return nil, fmt.Errorf("parse config file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for name, c := range f.Contexts {
		c.CACert = resolvePath(dir, c.CACert)
		c.ClientCert = resolvePath(dir, c.ClientCert)
		c.ClientKey = resolvePath(dir, c.ClientKey)
		f.Contexts[name] = c
	}
	return &f, nil
}

// resolvePath makes p absolute: ~/ is the home directory, and any other
// relative path is relative to dir.
func resolvePath(dir, p string) string {
	switch {
	case p == "":
		return ""
	case strings.HasPrefix(p, "~/"):
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[2:])
		}
		return p
	case filepath.IsAbs(p):
		return p
	}
	return filepath.Join(dir, p)
}

// Write writes f as YAML to path, creating its directory (mode 0700) if
// needed. The file gets mode 0600, as it may hold a token.
func (f *ConfigFile) Write(path string) error {
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode config file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	// Write a temporary file and rename it over path, so a failed write
	// never leaves a half-written config behind.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write config file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write config file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	return nil
}

// ConfigFromEnv returns the settings of the CARBIDE_ENDPOINT,
// CARBIDE_CA_CERT, CARBIDE_CLIENT_CERT, CARBIDE_CLIENT_KEY, CARBIDE_TOKEN,
// CARBIDE_TOKEN_COMMAND and CARBIDE_PROTOCOL environment variables; unset
// ones are empty. Relative paths stay relative to the working directory.
func ConfigFromEnv() Config {
	return Config{
		Endpoint:     os.Getenv(EnvEndpoint),
		CACert:       os.Getenv(EnvCACert),
		ClientCert:   os.Getenv(EnvClientCert),
		ClientKey:    os.Getenv(EnvClientKey),
		Token:        os.Getenv(EnvToken),
		TokenCommand: os.Getenv(EnvTokenCommand),
		Protocol:     os.Getenv(EnvProtocol),
	}
}

// Merge returns c with every field that is set in over replaced by over's.
//
// Credentials go in pairs: setting a token or a token command in over
// drops both of c's, and setting a client certificate or key drops both
// of c's. So a token given on the command line replaces the token command
// of the config file instead of clashing with it, and a certificate is
// never paired with another certificate's key.
func (c Config) Merge(over Config) Config {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	if over.Token != "" || over.TokenCommand != "" {
		c.Token, c.TokenCommand = "", ""
	}
	if over.ClientCert != "" || over.ClientKey != "" {
		c.ClientCert, c.ClientKey = "", ""
	}
	set(&c.Endpoint, over.Endpoint)
	set(&c.CACert, over.CACert)
	set(&c.ClientCert, over.ClientCert)
	set(&c.ClientKey, over.ClientKey)
	set(&c.Token, over.Token)
	set(&c.TokenCommand, over.TokenCommand)
	set(&c.Protocol, over.Protocol)
	return c
}

// LoadConfig returns the named context of the config file at path, with
// the environment (ConfigFromEnv) on top. Context "" means
// $CARBIDE_CONTEXT, then the file's current-context, then the only context
// if there is just one; a file with no contexts at all (or no file) is
// fine and gives the environment alone. A context that does not exist is
// an error that names it and lists the ones that do.
func LoadConfig(path, context string) (Config, error) {
	f, err := ReadConfigFile(path)
	if err != nil {
		return Config{}, err
	}
	name, source := context, "context"
	if name == "" {
		name, source = os.Getenv(EnvContext), EnvContext
	}
	if name == "" {
		name, source = f.CurrentContext, "current-context of "+path
	}
	var base Config
	switch {
	case name != "":
		c, ok := f.Contexts[name]
		if !ok {
			return Config{}, fmt.Errorf("context %q (from %s) is not in config file %s; %s", name, source, path, f.describeContexts())
		}
		base = c
	case len(f.Contexts) == 1:
		for _, c := range f.Contexts {
			base = c
		}
	case len(f.Contexts) > 1:
		return Config{}, fmt.Errorf("config file %s has several contexts and none is selected: choose one with --context or %s, or set current-context; %s", path, EnvContext, f.describeContexts())
	}
	return base.Merge(ConfigFromEnv()), nil
}

// describeContexts lists the file's context names for an error message.
func (f *ConfigFile) describeContexts() string {
	if len(f.Contexts) == 0 {
		return "it has no contexts"
	}
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return "its contexts are " + strings.Join(names, ", ")
}

// Validate reports every problem of c in one error: a missing or bad
// endpoint, a client certificate without its key (or the reverse), both a
// token and a token command, TLS files with an http:// endpoint, files
// that cannot be read, an unknown protocol. The error never contains the
// token.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		errs = append(errs, fmt.Errorf("no endpoint: set endpoint in the config file, %s or --endpoint, e.g. https://carbide.example:1079", EnvEndpoint))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("endpoint %q: want an https:// URL with a host, e.g. https://carbide.example:1079", c.Endpoint))
	case u.Scheme == "http" && (c.CACert != "" || c.ClientCert != "" || c.ClientKey != ""):
		errs = append(errs, fmt.Errorf("endpoint %q is plain http, but a CA or client certificate is set: use https://", c.Endpoint))
	}
	switch {
	case c.ClientCert != "" && c.ClientKey == "":
		errs = append(errs, errors.New("client-cert is set without client-key: give both"))
	case c.ClientKey != "" && c.ClientCert == "":
		errs = append(errs, errors.New("client-key is set without client-cert: give both"))
	}
	for _, f := range []struct{ setting, path string }{
		{"ca-cert", c.CACert}, {"client-cert", c.ClientCert}, {"client-key", c.ClientKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.setting, err))
		}
	}
	if c.Token != "" && c.TokenCommand != "" {
		errs = append(errs, errors.New("both token and token-command are set: use one"))
	}
	if c.Token != "" {
		if err := checkToken(strings.TrimSpace(c.Token)); err != nil {
			errs = append(errs, fmt.Errorf("token: %w", err))
		}
	}
	if strings.TrimSpace(c.TokenCommand) == "" && c.TokenCommand != "" {
		errs = append(errs, errors.New("token-command is blank"))
	}
	if _, ok := protocolNames[c.Protocol]; !ok {
		errs = append(errs, fmt.Errorf("protocol %q: want connect, grpc or grpc-web", c.Protocol))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid carbide config: %w", err)
	}
	return nil
}

// Options returns the client Options c stands for, after validating it.
func (c Config) Options() ([]Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []Option{WithProtocol(protocolNames[c.Protocol])}
	switch {
	case c.ClientCert != "":
		opts = append(opts, WithClientCertificate(c.ClientCert, c.ClientKey, c.CACert))
	case c.CACert != "":
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("read ca-cert: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca-cert %s holds no PEM certificate", c.CACert)
		}
		opts = append(opts, WithTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}))
	}
	switch {
	case c.Token != "":
		opts = append(opts, WithBearerToken(c.Token))
	case c.TokenCommand != "":
		opts = append(opts, WithTokenSource(newCommandToken(c.TokenCommand).token))
	}
	return opts, nil
}

// NewClient returns a Client for c; extra options are applied after c's.
func (c Config) NewClient(extra ...Option) (*Client, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	return New(c.Endpoint, append(opts, extra...)...)
}
