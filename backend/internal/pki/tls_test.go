package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// handshakeResult is what the server side of one TLS handshake saw.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// serveOnce accepts one connection on a fresh 127.0.0.1 listener, performs
// the server side of the TLS handshake with cfg, and reports the result. It
// returns the listener's address.
func serveOnce(t *testing.T, cfg *tls.Config) (string, <-chan handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan handshakeResult, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ch <- handshakeResult{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv := tls.Server(conn, cfg)
		err = srv.HandshakeContext(ctx)
		ch <- handshakeResult{state: srv.ConnectionState(), err: err}
	}()
	return ln.Addr().String(), ch
}

func TestTLSHandshake(t *testing.T) {
	t.Parallel()
	const td = "carbide.local"
	dir := t.TempDir()
	if _, err := pki.EnsureDev(dir, td, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	clientCAs, err := pki.LoadPool(path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(path("server.crt"), path("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	pair := func(certPEM, keyPEM []byte) []tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	filePair := func(base string) []tls.Certificate {
		return pair(readFile(t, dir, base+".crt"), readFile(t, dir, base+".key"))
	}

	dhcpID := pki.ServiceID(td, principal.RoleDHCP)
	other := newCA(t, 24*time.Hour)
	otherPEM, otherKey, err := other.IssueClient(dhcpID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(path("ca.crt"), path("ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expiredPEM, expiredKey, err := ca.IssueClientWindow(dhcpID, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	futurePEM, futureKey, err := ca.IssueClientWindow(dhcpID, now.Add(24*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		certs []tls.Certificate
		// goSelects leaves the choice of certificate to crypto/tls, which
		// sends none whose issuer the server did not ask for. Otherwise the
		// client always sends certs[0], as a hostile client would.
		goSelects bool
		// wantID is the SPIFFE ID the server sees; "" for no certificate.
		wantID string
		// wantErr checks the server's handshake error; nil means success.
		wantErr func(error) bool
	}{
		"dhcp service cert":  {certs: filePair("dhcp"), wantID: dhcpID},
		"admin user cert":    {certs: filePair("admin"), wantID: pki.UserID(td, principal.RoleAdmin, "bootstrap")},
		"no cert is allowed": {},
		"cert from another CA": {
			certs: pair(otherPEM, otherKey),
			wantErr: func(err error) bool {
				var e x509.UnknownAuthorityError
				return errors.As(err, &e)
			},
		},
		"cert from another CA, Go client sends none": {
			certs:     pair(otherPEM, otherKey),
			goSelects: true,
		},
		"expired cert": {
			certs:   pair(expiredPEM, expiredKey),
			wantErr: invalidCert(x509.Expired),
		},
		"not yet valid cert": {
			certs:   pair(futurePEM, futureKey),
			wantErr: invalidCert(x509.Expired),
		},
		"server cert as client cert": {
			certs:   filePair("server"),
			wantErr: invalidCert(x509.IncompatibleUsage),
		},
	}
	for name, tt := range tests {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(fmt.Sprintf("%s/%s", name, tls.VersionName(version)), func(t *testing.T) {
				t.Parallel()
				addr, result := serveOnce(t, &tls.Config{
					Certificates: []tls.Certificate{serverCert},
					ClientAuth:   tls.VerifyClientCertIfGiven,
					ClientCAs:    clientCAs,
					MinVersion:   version,
					MaxVersion:   version,
				})
				roots := x509.NewCertPool()
				roots.AddCert(ca.Cert)
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
					t.Fatal(err)
				}
				clientCfg := &tls.Config{
					RootCAs:    roots,
					ServerName: "127.0.0.1",
					MinVersion: version,
					MaxVersion: version,
				}
				if tt.goSelects {
					clientCfg.Certificates = tt.certs
				} else {
					clientCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
						if len(tt.certs) == 0 {
							return &tls.Certificate{}, nil
						}
						return &tt.certs[0], nil
					}
				}
				client := tls.Client(conn, clientCfg)
				// With TLS 1.3 the client finishes before the server has
				// checked its certificate, so the server's view decides.
				clientErr := client.Handshake()
				res := <-result

				if tt.wantErr != nil {
					if res.err == nil {
						t.Fatal("server accepted the handshake, want rejection")
					}
					if !tt.wantErr(res.err) {
						t.Errorf("server error %v is not the expected kind", res.err)
					}
					return
				}
				if clientErr != nil {
					t.Fatalf("client handshake: %v", clientErr)
				}
				if res.err != nil {
					t.Fatalf("server handshake: %v", res.err)
				}
				if tt.wantID == "" {
					if len(res.state.PeerCertificates) != 0 {
						t.Errorf("server saw %d client certificates, want none", len(res.state.PeerCertificates))
					}
					return
				}
				if len(res.state.VerifiedChains) == 0 {
					t.Fatal("server did not verify the client certificate")
				}
				p, err := pki.PrincipalFromCert(td, res.state.PeerCertificates[0])
				if err != nil {
					t.Fatalf("PrincipalFromCert: %v", err)
				}
				if p.Name != tt.wantID || p.Method != principal.MethodCertificate {
					t.Errorf("server saw %q via %q, want %q via certificate", p.Name, p.Method, tt.wantID)
				}
			})
		}
	}
}

// invalidCert returns a check that err is an x509.CertificateInvalidError
// for reason.
func invalidCert(reason x509.InvalidReason) func(error) bool {
	return func(err error) bool {
		var e x509.CertificateInvalidError
		return errors.As(err, &e) && e.Reason == reason
	}
}
