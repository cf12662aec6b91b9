package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// clockSkew is how far into the past every certificate's NotBefore is set,
// so a peer whose clock runs a little behind still accepts it.
const clockSkew = 5 * time.Minute

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY" // PKCS #8
	pemECKey       = "EC PRIVATE KEY"
)

// CA is a certificate authority that issues Carbide's server and client
// certificates. Every key it generates is ECDSA P-256 and every certificate
// it signs uses SHA-256 (for a P-256 or RSA CA key). A CA is safe for
// concurrent use.
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// Key is the CA's private key, matching Cert.
	Key crypto.Signer
}

// NewCA returns a new self-signed CA named commonName, with a fresh P-256
// key, valid from now for validity. It may sign leaf certificates only (path
// length 0).
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("create CA: common name is empty")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("create CA: validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: parse certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA from a PEM certificate file and a PEM private key file
// (PKCS #8 "PRIVATE KEY" or SEC 1 "EC PRIVATE KEY"). The certificate must be
// a CA allowed to sign certificates, and the key must match it.
func LoadCA(certPEMFile, keyPEMFile string) (*CA, error) {
	cert, err := readCertFile(certPEMFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("load CA: certificate in %s is not a CA certificate", certPEMFile)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA: certificate in %s may not sign certificates (no keyCertSign usage)", certPEMFile)
	}
	key, err := readKeyFile(keyPEMFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if err := checkKeyMatches(cert, key); err != nil {
		return nil, fmt.Errorf("load CA: key in %s: %w", keyPEMFile, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueServer issues a TLS server certificate with a fresh P-256 key, valid
// for ExtKeyUsageServerAuth and for every entry of hosts, each an IP address
// or a DNS name (a leading "*." wildcard is allowed). It is valid from now
// for validity, but never past the CA's own expiry.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue server certificate: validity %v is not positive", validity)
	}
	now := time.Now()
	certPEM, keyPEM, err = ca.issueServer(hosts, now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate: %w", err)
	}
	return certPEM, keyPEM, nil
}

// IssueClient issues a TLS client certificate with a fresh P-256 key, valid
// for ExtKeyUsageClientAuth, whose only SAN is the URI spiffeID. It is valid
// from now for validity, but never past the CA's own expiry. spiffeID must be
// a syntactically valid SPIFFE ID; whether it names a Carbide role is checked
// by PrincipalFromCert when the certificate is used.
func (ca *CA) IssueClient(spiffeID string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue client certificate: validity %v is not positive", validity)
	}
	now := time.Now()
	certPEM, keyPEM, err = ca.issueClient(spiffeID, now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	return certPEM, keyPEM, nil
}

// issueServer issues a server certificate for hosts valid from notBefore to
// notAfter (clamped to the CA's expiry).
func (ca *CA) issueServer(hosts []string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("no hosts given; want at least one IP address or DNS name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	return ca.sign(tmpl, notBefore, notAfter)
}

// issueClient issues a client certificate for spiffeID valid from notBefore
// to notAfter (clamped to the CA's expiry). Tests use it to make expired
// certificates.
func (ca *CA) issueClient(spiffeID string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if _, _, err := splitID(spiffeID); err != nil {
		return nil, nil, fmt.Errorf("SPIFFE ID %q: %w", spiffeID, err)
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		return nil, nil, fmt.Errorf("parse SPIFFE ID %q: %w", spiffeID, err)
	}
	if u.String() != spiffeID {
		return nil, nil, fmt.Errorf("SPIFFE ID %q does not round-trip as a URI (got %q)", spiffeID, u.String())
	}
	// The subject is left empty: the SPIFFE ID is the identity, and Go then
	// marks the SAN extension critical as RFC 5280 requires.
	tmpl := &x509.Certificate{
		URIs:        []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.sign(tmpl, notBefore, notAfter)
}

// sign completes the leaf template tmpl with a fresh P-256 key, a random
// serial number and the validity window, signs it, and returns the
// certificate and key in PEM.
func (ca *CA) sign(tmpl *x509.Certificate, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("CA has no certificate or key")
	}
	if !time.Now().Before(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("CA certificate %q expired at %s; create a new CA",
			ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notBefore.Before(notAfter) {
		return nil, nil, fmt.Errorf("validity window %s to %s is empty",
			notBefore.Format(time.RFC3339), notAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	if _, ok := ca.Key.(*ecdsa.PrivateKey); ok {
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return encodeCert(der), pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: keyDER}), nil
}

// certPEM returns the CA certificate in PEM.
func (ca *CA) certPEM() []byte { return encodeCert(ca.Cert.Raw) }

// keyPEM returns the CA key in PKCS #8 PEM.
func (ca *CA) keyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// LoadPool reads a bundle of one or more PEM CA certificates, such as the
// ca.crt written by EnsureDev, for use as tls.Config.ClientCAs. Every block
// must be a CA certificate: a leaf in a trust bundle is almost always a
// mistake.
func LoadPool(pemFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, fmt.Errorf("load CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("load CA bundle %s: unexpected PEM block %q; want only %q", pemFile, block.Type, pemCertificate)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load CA bundle %s: parse certificate %d: %w", pemFile, n+1, err)
		}
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, fmt.Errorf("load CA bundle %s: certificate %d (%q) is not a CA certificate",
				pemFile, n+1, cert.Subject.CommonName)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("load CA bundle %s: no PEM certificates found", pemFile)
	}
	return pool, nil
}

// readCertFile returns the first certificate in the PEM file path.
func readCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("read certificate %s: no PEM %q block found", path, pemCertificate)
		}
		if block.Type != pemCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %s: %w", path, err)
		}
		return cert, nil
	}
}

// readKeyFile returns the private key in the PEM file path. The error never
// includes key material.
func readKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, rest := pem.Decode(data)
	// openssl ecparam -genkey writes an "EC PARAMETERS" block first.
	for block != nil && block.Type == "EC PARAMETERS" {
		block, rest = pem.Decode(rest)
	}
	if block == nil {
		return nil, fmt.Errorf("read key %s: no PEM block found", path)
	}
	var key any
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("read key %s: PEM block %q; want %q or %q", path, block.Type, pemPrivateKey, pemECKey)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read key %s: %T cannot sign", path, key)
	}
	return signer, nil
}

// checkKeyMatches reports whether key is the private key of cert.
func checkKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return errors.New("does not match the certificate's public key")
	}
	return nil
}

// checkDNSName reports whether name can go in a DNS SAN: letters, digits,
// hyphens and underscores in dot-separated labels, optionally "*." first.
func checkDNSName(name string) error {
	if strings.Contains(name, ":") {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name (give a bare host, without port, scheme or brackets)", name)
	}
	labels := strings.TrimPrefix(name, "*.")
	if labels == "" || len(name) > 253 {
		return fmt.Errorf("host %q is not a valid DNS name", name)
	}
	for l := range strings.SplitSeq(labels, ".") {
		if l == "" || len(l) > 63 || strings.IndexFunc(l, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			return fmt.Errorf("host %q is not a valid DNS name", name)
		}
	}
	return nil
}

// newSerial returns a random positive 128-bit certificate serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// encodeCert returns the DER certificate der in PEM.
func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}
