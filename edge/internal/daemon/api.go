package daemon

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/carbide-dev/carbide/sdk/carbide"
)

// APIConfig is how a daemon reaches the Carbide API: the API's URL, the
// daemon's client certificate and the deadline of each call. A daemon
// embeds it in its Config. Its methods take the daemon's role (dhcp, pxe),
// which names the certificate files in PKIDir.
type APIConfig struct {
	// APIURL is the base URL of the Carbide API, e.g.
	// https://carbide.example:1079.
	APIURL string
	// PKIDir is a directory holding <role>.crt, <role>.key and ca.crt, as
	// the API's development PKI writes them (<api-data-dir>/pki).
	// CertFile, KeyFile and CAFile override the files in it.
	PKIDir string
	// CertFile and KeyFile are the daemon's client certificate (of its
	// role) and its key; CAFile is the CA bundle that the API's
	// certificate must chain to ("" for the system roots).
	CertFile, KeyFile, CAFile string
	// APITimeout bounds every API call.
	APITimeout time.Duration
}

// DefaultAPIConfig returns the defaults: the API on this host, 2 s per
// call, and no credentials.
func DefaultAPIConfig() APIConfig {
	return APIConfig{
		APIURL:     "https://127.0.0.1:1079",
		APITimeout: 2 * time.Second,
	}
}

// AddFlags defines --api-url, --pki-dir, --cert, --key, --ca and
// --api-timeout on fs, defaulting to c's values. onFailure ends the
// description of --api-timeout: what the daemon's peer sees when a call
// fails.
func (c *APIConfig) AddFlags(fs *flag.FlagSet, role, onFailure string) {
	fs.StringVar(&c.APIURL, "api-url", c.APIURL, "base URL of the Carbide API")
	fs.StringVar(&c.PKIDir, "pki-dir", c.PKIDir, fmt.Sprintf("directory holding %[1]s.crt, %[1]s.key and ca.crt (the API's <data-dir>/pki); --cert, --key and --ca override its files", role))
	fs.StringVar(&c.CertFile, "cert", c.CertFile, "client certificate (PEM) of the "+role+" role")
	fs.StringVar(&c.KeyFile, "key", c.KeyFile, "private key (PEM) of --cert")
	fs.StringVar(&c.CAFile, "ca", c.CAFile, "CA bundle (PEM) the API's certificate must chain to; empty: the system roots")
	fs.DurationVar(&c.APITimeout, "api-timeout", c.APITimeout, "deadline of each API call; "+onFailure)
}

// Credentials returns the client certificate, key and CA files: the
// explicit ones, else those of role in PKIDir.
func (c *APIConfig) Credentials(role string) (cert, key, ca string) {
	cert, key, ca = c.CertFile, c.KeyFile, c.CAFile
	if c.PKIDir != "" {
		if cert == "" {
			cert = filepath.Join(c.PKIDir, role+".crt")
		}
		if key == "" {
			key = filepath.Join(c.PKIDir, role+".key")
		}
		if ca == "" {
			ca = filepath.Join(c.PKIDir, "ca.crt")
		}
	}
	return cert, key, ca
}

// Validate reports every problem of the settings, each naming its flag and
// saying what to change; a daemon's Config.Validate adds them to its own.
// A password in the URL is never repeated.
func (c *APIConfig) Validate(role string) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	u, err := url.Parse(c.APIURL)
	switch {
	case c.APIURL == "":
		add("api-url: empty; give the Carbide API's URL, e.g. https://carbide.example:1079")
	case err != nil:
		// url.Error quotes the whole URL, which may hold a password.
		add("api-url: not a URL; give one like https://carbide.example:1079")
		u = nil
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		add("api-url: %q is not an http:// or https:// URL with a host", u.Redacted())
	}
	cert, key, ca := c.Credentials(role)
	if u != nil && u.Scheme == "https" && (cert == "" || key == "") {
		add("no client certificate: give --pki-dir (the API's <data-dir>/pki, holding %[1]s.crt and %[1]s.key) or --cert and --key", role)
	}
	if u != nil && u.Scheme == "http" && (cert != "" || key != "" || ca != "") {
		add("api-url: %q is plain http; client certificates need an https:// URL", u.Redacted())
	}
	for _, f := range []struct{ flag, path string }{{"cert", cert}, {"key", key}, {"ca", ca}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add("%s: %w", f.flag, err)
		}
	}
	if c.APITimeout <= 0 {
		add("api-timeout: %s; give a positive duration, e.g. 2s", c.APITimeout)
	}
	return errs
}

// Client returns a client of the API that authenticates with role's
// client certificate, when there is one (see [APIConfig.Credentials]),
// built with opts as well.
func (c *APIConfig) Client(role string, opts ...carbide.Option) (*carbide.Client, error) {
	if cert, key, ca := c.Credentials(role); cert != "" {
		opts = append(slices.Clip(opts), carbide.WithClientCertificate(cert, key, ca))
	}
	return carbide.New(c.APIURL, opts...)
}

// RedactURL hides a password in u, for logs.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable)"
	}
	return p.Redacted()
}
