package carbide

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// certFiles are the files given to WithClientCertificate; New loads them.
type certFiles struct {
	cert, key, ca string
}

// WithTLS sets the TLS configuration of the default HTTP client, which
// speaks HTTP/2 over it (ALPN h2). The Client uses a copy, so cfg may be
// reused. WithClientCertificate, given as well, overrides cfg's client
// certificate and, when it names a CA bundle, its RootCAs.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		o.tls = cfg
		o.tlsSet = true
	}
}

// WithClientCertificate authenticates the Client with mutual TLS: New
// loads the PEM certificate (chain) certFile and its key keyFile, and the
// client presents them in every TLS handshake. The server's certificate
// must chain to a CA in the PEM bundle caFile, or to the system roots if
// caFile is "". Carbide certificates carry the caller's SPIFFE ID, which
// names its role.
//
// The files are read once, by New; build a new Client to pick up a
// renewed certificate.
func WithClientCertificate(certFile, keyFile, caFile string) Option {
	return func(o *options) { o.cert = &certFiles{cert: certFile, key: keyFile, ca: caFile} }
}

// tlsConfig returns the default HTTP client's TLS configuration, or nil to
// use Go's defaults.
func (o *options) tlsConfig() (*tls.Config, error) {
	if o.tlsSet && o.tls == nil {
		return nil, errors.New("WithTLS: the TLS config is nil")
	}
	if !o.tlsSet && o.cert == nil {
		return nil, nil
	}
	var cfg *tls.Config
	if o.tls != nil {
		// The transport edits NextProtos in place; keep the caller's
		// config as it was.
		cfg = o.tls.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.cert == nil {
		return cfg, nil
	}
	cert, roots, err := o.cert.load(time.Now())
	if err != nil {
		return nil, err
	}
	// Present the certificate whatever the server asks for: when it does
	// not match the server's list of acceptable CAs, Go would otherwise
	// send none, and the server would only say credentials are missing.
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return cert, nil
	}
	if roots != nil {
		cfg.RootCAs = roots
	}
	return cfg, nil
}

// load reads the client certificate and key, checks that the certificate
// is valid at now, and reads the CA bundle (nil roots for "").
func (f *certFiles) load(now time.Time) (*tls.Certificate, *x509.CertPool, error) {
	if f.cert == "" || f.key == "" {
		return nil, nil, errors.New("WithClientCertificate: give both a certificate file and a key file")
	}
	certPEM, err := os.ReadFile(f.cert)
	if err != nil {
		return nil, nil, fmt.Errorf("read the client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.key)
	if err != nil {
		return nil, nil, fmt.Errorf("read the client key: %w", err)
	}
	// The errors of X509KeyPair describe the PEM blocks, never their
	// contents, so no key material reaches the message.
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("load the client certificate %s with key %s: %w", f.cert, f.key, err)
	}
	if leaf := cert.Leaf; leaf != nil {
		if now.After(leaf.NotAfter) {
			return nil, nil, fmt.Errorf("client certificate %s expired at %s: renew it",
				f.cert, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(leaf.NotBefore) {
			return nil, nil, fmt.Errorf("client certificate %s is not valid before %s: check this host's clock",
				f.cert, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if f.ca == "" {
		return &cert, nil, nil
	}
	caPEM, err := os.ReadFile(f.ca)
	if err != nil {
		return nil, nil, fmt.Errorf("read the CA bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("CA bundle %s holds no PEM certificate", f.ca)
	}
	return &cert, roots, nil
}
