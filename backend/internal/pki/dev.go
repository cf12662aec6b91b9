package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// Lifetimes of the development PKI.
const (
	devCAValidity   = 10 * 365 * 24 * time.Hour
	devLeafValidity = 365 * 24 * time.Hour
	// devRenewBefore is how long before expiry EnsureDev re-issues a leaf.
	devRenewBefore = 30 * 24 * time.Hour
	devCAName      = "Carbide development CA"
	// devUserName is the <name> of the user certificates EnsureDev issues.
	devUserName = "bootstrap"
)

// File names EnsureDev writes under its directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// File modes of the development PKI.
const (
	dirMode  fs.FileMode = 0o700
	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o644
)

// defaultDevHosts are the hosts the development server certificate covers
// when EnsureDev is given none.
func defaultDevHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// devClient is one client certificate of the development PKI.
type devClient struct {
	// base is the file name without ".crt" or ".key".
	base string
	// id is the SPIFFE ID the certificate carries.
	id string
}

// devClients lists the client certificates EnsureDev maintains: one user per
// user role, one per service role.
func devClients(td string) []devClient {
	var cs []devClient
	for _, r := range principal.UserRoles {
		cs = append(cs, devClient{base: string(r), id: UserID(td, r, devUserName)})
	}
	for _, r := range principal.ServiceRoles {
		cs = append(cs, devClient{base: string(r), id: ServiceID(td, r)})
	}
	return cs
}

// EnsureDev makes sure dir holds a development PKI for trust domain
// trustDomain ("" means DefaultTrustDomain), as the API server does under
// <dataDir>/pki on its first start with --dev:
//
//   - ca.crt, ca.key: a self-signed CA, created if both are missing and
//     reused if both are present (one without the other is an error, so a
//     lone key is never overwritten);
//   - server.crt, server.key: a server certificate for hosts (localhost,
//     127.0.0.1 and ::1 if empty), re-issued if missing, unreadable, not
//     signed by the CA, not covering every host, or expiring within 30 days;
//   - admin, operator, viewer .crt/.key: user certificates
//     spiffe://TD/user/<role>/bootstrap;
//   - dhcp, pxe, dns, bmc .crt/.key: service certificates
//     spiffe://TD/service/<role>; client certificates are re-issued under
//     the same conditions as the server certificate.
//
// dir is created (or tightened) to mode 0700, keys are written with mode
// 0600 and certificates 0644, each file atomically. EnsureDev returns the
// names (not paths) of the files it wrote, in order, so the caller can log
// them (on error, those written before it); a second call with the same
// arguments writes nothing. It is not safe to run concurrently on the same
// dir from two processes.
func EnsureDev(dir, trustDomain string, hosts []string) (created []string, err error) {
	td := trustDomain
	if td == "" {
		td = DefaultTrustDomain
	}
	if err := checkTrustDomain(td); err != nil {
		return nil, fmt.Errorf("ensure dev PKI: %w", err)
	}
	if len(hosts) == 0 {
		hosts = defaultDevHosts()
	}
	if err := ensureDir(dir); err != nil {
		return nil, fmt.Errorf("ensure dev PKI: %w", err)
	}
	w := &devWriter{dir: dir}
	ca, err := w.ensureCA()
	if err != nil {
		return w.created, fmt.Errorf("ensure dev PKI in %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	now := time.Now()

	serverOK := func(c *x509.Certificate) bool {
		for _, h := range hosts {
			if c.VerifyHostname(h) != nil {
				return false
			}
		}
		return true
	}
	if err := w.ensureLeaf(pool, now, ServerCertFile, ServerKeyFile, x509.ExtKeyUsageServerAuth, serverOK,
		func() ([]byte, []byte, error) { return ca.IssueServer(hosts, devLeafValidity) }); err != nil {
		return w.created, fmt.Errorf("ensure dev PKI in %s: %w", dir, err)
	}
	for _, c := range devClients(td) {
		clientOK := func(cert *x509.Certificate) bool {
			return len(cert.URIs) == 1 && cert.URIs[0].String() == c.id
		}
		if err := w.ensureLeaf(pool, now, c.base+".crt", c.base+".key", x509.ExtKeyUsageClientAuth, clientOK,
			func() ([]byte, []byte, error) { return ca.IssueClient(c.id, devLeafValidity) }); err != nil {
			return w.created, fmt.Errorf("ensure dev PKI in %s: %w", dir, err)
		}
	}
	return w.created, nil
}

// devWriter writes the files of a development PKI and remembers which.
type devWriter struct {
	dir     string
	created []string
}

// ensureCA loads the CA from dir, or creates it if neither file exists.
func (w *devWriter) ensureCA() (*CA, error) {
	certPath, keyPath := filepath.Join(w.dir, CACertFile), filepath.Join(w.dir, CAKeyFile)
	certExists, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certExists && keyExists:
		ca, err := LoadCA(certPath, keyPath)
		if err != nil {
			return nil, fmt.Errorf("%w (to start over with a new CA, remove %s and %s and reissue every client certificate)",
				err, CACertFile, CAKeyFile)
		}
		if err := tighten(keyPath, keyMode); err != nil {
			return nil, err
		}
		if time.Until(ca.Cert.NotAfter) < devRenewBefore {
			return nil, fmt.Errorf("CA certificate %s expires at %s; remove %s and %s to create a new CA, then redistribute the client certificates",
				CACertFile, ca.Cert.NotAfter.Format(time.RFC3339), CACertFile, CAKeyFile)
		}
		return ca, nil
	case certExists != keyExists:
		present, missing := CACertFile, CAKeyFile
		if keyExists {
			present, missing = CAKeyFile, CACertFile
		}
		return nil, fmt.Errorf("%s exists but %s does not; restore %s, or remove %s to create a new CA", present, missing, missing, present)
	}
	ca, err := NewCA(devCAName, devCAValidity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := ca.keyPEM()
	if err != nil {
		return nil, err
	}
	// Key first: a crash between the two writes leaves a key without a
	// certificate, which the next start reports instead of overwriting.
	if err := w.write(CAKeyFile, keyPEM, keyMode); err != nil {
		return nil, err
	}
	if err := w.write(CACertFile, ca.certPEM(), certMode); err != nil {
		return nil, err
	}
	return ca, nil
}

// ensureLeaf keeps the certificate certName and key keyName if they are a
// matching pair that chains to pool, is valid for eku, still valid
// devRenewBefore after now, and satisfies ok; otherwise it writes new ones
// made by issue.
func (w *devWriter) ensureLeaf(pool *x509.CertPool, now time.Time, certName, keyName string, eku x509.ExtKeyUsage,
	ok func(*x509.Certificate) bool, issue func() (certPEM, keyPEM []byte, err error),
) error {
	certPath, keyPath := filepath.Join(w.dir, certName), filepath.Join(w.dir, keyName)
	if leafUsable(pool, now, certPath, keyPath, eku, ok) {
		return tighten(keyPath, keyMode)
	}
	certPEM, keyPEM, err := issue()
	if err != nil {
		return fmt.Errorf("issue %s: %w", certName, err)
	}
	if err := w.write(keyName, keyPEM, keyMode); err != nil {
		return err
	}
	return w.write(certName, certPEM, certMode)
}

// leafUsable reports whether the pair at certPath and keyPath can be kept.
// Any problem reading it means it is re-issued.
func leafUsable(pool *x509.CertPool, now time.Time, certPath, keyPath string, eku x509.ExtKeyUsage,
	ok func(*x509.Certificate) bool,
) bool {
	cert, err := readCertFile(certPath)
	if err != nil {
		return false
	}
	key, err := readKeyFile(keyPath)
	if err != nil || checkKeyMatches(cert, key) != nil {
		return false
	}
	opts := x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}
	if _, err := cert.Verify(opts); err != nil {
		return false
	}
	return cert.NotAfter.After(now.Add(devRenewBefore)) && ok(cert)
}

// write atomically replaces the file name in w.dir with data and mode, and
// records it as created.
func (w *devWriter) write(name string, data []byte, mode fs.FileMode) error {
	if err := writeFileAtomic(filepath.Join(w.dir, name), data, mode); err != nil {
		return err
	}
	w.created = append(w.created, name)
	return nil
}

// writeFileAtomic writes data to a temporary file next to path with mode,
// syncs it and renames it over path, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// ensureDir creates dir with mode 0700, or tightens an existing one to it.
func ensureDir(dir string) error {
	if dir == "" {
		return errors.New("directory is empty")
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return tighten(dir, dirMode)
}

// tighten sets the permissions of path to mode if they differ.
func tighten(path string, mode fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", filepath.Base(path), err)
	}
	if fi.Mode().Perm() == mode {
		return nil
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("set mode of %s: %w", filepath.Base(path), err)
	}
	return nil
}

// exists reports whether path exists.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", filepath.Base(path), err)
	}
}
