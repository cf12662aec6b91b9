package carbide

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

// clientID is the SPIFFE ID of the test client certificate.
const clientID = "spiffe://carbide.test/service/dhcp"

var protocols = map[string]Protocol{"connect": Connect, "grpc": GRPC, "grpcweb": GRPCWeb}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate naming clientID, the CA and the client's files written as
// PEM under dir.
type testPKI struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate

	caFile, certFile, keyFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.caKey = newKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("parse CA: %v", err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.caCert)
	p.caFile = p.writePEM(t, "ca.crt", "CERTIFICATE", der)

	serverDER, serverKey := p.issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.server = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}

	p.certFile, p.keyFile = p.issueClient(t, "dhcp", now.Add(-time.Hour), now.Add(time.Hour))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

// issue signs tmpl with the CA for a new key.
func (p *testPKI) issue(t *testing.T, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("issue certificate: %v", err)
	}
	return der, key
}

// issueClient writes a client certificate for clientID, valid from
// notBefore to notAfter, as name.crt and name.key.
func (p *testPKI) issueClient(t *testing.T, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	id, err := url.Parse(clientID)
	if err != nil {
		t.Fatal(err)
	}
	der, key := p.issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{id},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.writePEM(t, name+".crt", "CERTIFICATE", der), p.writePEM(t, name+".key", "PRIVATE KEY", keyDER)
}

func (p *testPKI) writePEM(t *testing.T, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// seenRequest is what the server saw of one request.
type seenRequest struct {
	ProtoMajor    int
	URIs          []string // URI SANs of the client certificate
	Authorization string
}

// recorder is HTTP middleware that records each request.
type recorder struct {
	mu   sync.Mutex
	reqs []seenRequest
}

func (rec *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seenRequest{ProtoMajor: r.ProtoMajor, Authorization: r.Header.Get("Authorization")}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			for _, u := range r.TLS.PeerCertificates[0].URIs {
				s.URIs = append(s.URIs, u.String())
			}
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, s)
		rec.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (rec *recorder) seen() []seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seenRequest(nil), rec.reqs...)
}

// fakeMachines answers GetMachine with a machine of the requested id.
type fakeMachines struct {
	machinev1connect.UnimplementedMachineServiceHandler
}

func (fakeMachines) GetMachine(_ context.Context, req *connect.Request[machinev1.GetMachineRequest]) (*connect.Response[machinev1.GetMachineResponse], error) {
	return connect.NewResponse(&machinev1.GetMachineResponse{Machine: &machinev1.Machine{Id: req.Msg.GetId()}}), nil
}

var _ machinev1connect.MachineServiceHandler = fakeMachines{}

// fakeWatch answers Watch with two events, revisions 1 and 2.
type fakeWatch struct {
	watchv1connect.UnimplementedWatchServiceHandler
}

func (fakeWatch) Watch(_ context.Context, _ *connect.Request[watchv1.WatchRequest], stream *connect.ServerStream[watchv1.WatchResponse]) error {
	for rev := range int64(2) {
		if err := stream.Send(&watchv1.WatchResponse{Revision: rev + 1}); err != nil {
			return err
		}
	}
	return nil
}

var _ watchv1connect.WatchServiceHandler = fakeWatch{}

// startTLSServer serves fakeMachines and fakeWatch over HTTP/2 and TLS
// with p's server certificate, asking for client certificates from p's CA
// as clientAuth says.
func startTLSServer(t *testing.T, p *testPKI, clientAuth tls.ClientAuthType) (*httptest.Server, *recorder) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(machinev1connect.NewMachineServiceHandler(fakeMachines{}))
	mux.Handle(watchv1connect.NewWatchServiceHandler(fakeWatch{}))
	rec := &recorder{}
	srv := httptest.NewUnstartedServer(rec.wrap(mux))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   clientAuth,
		ClientCAs:    p.pool,
	}
	// Rejected handshakes are expected; keep them out of the test output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, rec
}

// call makes one unary call and one server-streaming call, which reads the
// whole stream.
func call(ctx context.Context, c *Client) error {
	resp, err := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: "m1"}))
	if err != nil {
		return fmt.Errorf("GetMachine: %w", err)
	}
	if got := resp.Msg.GetMachine().GetId(); got != "m1" {
		return fmt.Errorf("GetMachine returned machine %q, want m1", got)
	}
	return watchAll(ctx, c)
}

func watchAll(ctx context.Context, c *Client) error {
	stream, err := c.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{}))
	if err != nil {
		return fmt.Errorf("Watch: %w", err)
	}
	defer stream.Close()
	var revs []int64
	for stream.Receive() {
		revs = append(revs, stream.Msg().GetRevision())
	}
	if err := stream.Err(); err != nil {
		return fmt.Errorf("Watch: %w", err)
	}
	if fmt.Sprint(revs) != "[1 2]" {
		return fmt.Errorf("Watch yielded revisions %v, want [1 2]", revs)
	}
	return nil
}

func TestClientCertificate(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := startTLSServer(t, p, tls.RequireAndVerifyClientCert)
			c, err := New(srv.URL, WithProtocol(protocol), WithClientCertificate(p.certFile, p.keyFile, p.caFile))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := call(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			want := []seenRequest{
				{ProtoMajor: 2, URIs: []string{clientID}},
				{ProtoMajor: 2, URIs: []string{clientID}},
			}
			if diff := cmp.Diff(want, rec.seen()); diff != "" {
				t.Errorf("server saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClientCertificateRejected(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	other := newTestPKI(t)
	tests := map[string]struct {
		opts []Option
	}{
		"no client certificate": {
			opts: []Option{WithTLS(&tls.Config{RootCAs: p.pool})},
		},
		"certificate from another CA": {
			opts: []Option{WithTLS(&tls.Config{RootCAs: p.pool}), WithClientCertificate(other.certFile, other.keyFile, "")},
		},
		"server not trusted: system roots": {
			opts: []Option{WithClientCertificate(p.certFile, p.keyFile, "")},
		},
		"server not trusted: another CA": {
			opts: []Option{WithClientCertificate(p.certFile, p.keyFile, other.caFile)},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := startTLSServer(t, p, tls.RequireAndVerifyClientCert)
			c, err := New(srv.URL, tt.opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			_, err = c.Machines.GetMachine(context.Background(), connect.NewRequest(&machinev1.GetMachineRequest{Id: "m1"}))
			if err == nil {
				t.Fatal("GetMachine succeeded, want a TLS failure")
			}
			t.Logf("GetMachine: %v", err)
			if seen := rec.seen(); len(seen) != 0 {
				t.Errorf("the handler saw %v, want no request", seen)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := startTLSServer(t, p, tls.VerifyClientCertIfGiven)
			c, err := New(srv.URL, WithProtocol(protocol), WithTLS(&tls.Config{RootCAs: p.pool}), WithBearerToken("x"))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := call(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			want := []seenRequest{
				{ProtoMajor: 2, Authorization: "Bearer x"},
				{ProtoMajor: 2, Authorization: "Bearer x"},
			}
			if diff := cmp.Diff(want, rec.seen()); diff != "" {
				t.Errorf("server saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenSource(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := startTLSServer(t, p, tls.RequireAndVerifyClientCert)
			var n atomic.Int64
			source := func(context.Context) (string, error) {
				return fmt.Sprintf("token-%d", n.Add(1)), nil
			}
			// Both ways of authenticating at once, as a CLI user with a
			// client certificate and a JWT might.
			c, err := New(srv.URL, WithProtocol(protocol),
				WithClientCertificate(p.certFile, p.keyFile, p.caFile), WithTokenSource(source))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx := context.Background()
			if err := call(ctx, c); err != nil { // token-1 and token-2
				t.Fatal(err)
			}
			if _, err := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: "m2"})); err != nil {
				t.Fatalf("GetMachine: %v", err)
			}
			var got []string
			for _, s := range rec.seen() {
				got = append(got, s.Authorization)
			}
			want := []string{"Bearer token-1", "Bearer token-2", "Bearer token-3"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("authorization headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenSourceError(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	const secret = "secret-token-123"
	errRefresh := errors.New("refresh failed")
	tests := map[string]struct {
		source   func(context.Context) (string, error)
		cancel   bool
		wantCode connect.Code
		wantMsg  string
	}{
		"error": {
			// A token returned alongside the error is not used.
			source:   func(context.Context) (string, error) { return secret, errRefresh },
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "refresh failed",
		},
		"empty token": {
			source:   func(context.Context) (string, error) { return "", nil },
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "empty",
		},
		"control character": {
			source:   func(context.Context) (string, error) { return secret + "\r\nx-injected: 1", nil },
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "control character",
		},
		"call canceled": {
			source:   func(ctx context.Context) (string, error) { return secret, ctx.Err() },
			cancel:   true,
			wantCode: connect.CodeCanceled,
			wantMsg:  "canceled",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := startTLSServer(t, p, tls.VerifyClientCertIfGiven)
			c, err := New(srv.URL, WithTLS(&tls.Config{RootCAs: p.pool}), WithTokenSource(tt.source))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			if tt.cancel {
				cancel()
			}
			_, unaryErr := c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: "m1"}))
			_, streamErr := c.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{}))
			for kind, err := range map[string]error{"unary": unaryErr, "stream": streamErr} {
				if got := connect.CodeOf(err); got != tt.wantCode {
					t.Errorf("%s call: got code %v (%v), want %v", kind, got, err, tt.wantCode)
				}
				if err == nil {
					continue
				}
				if msg := err.Error(); strings.Contains(msg, "secret") || !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("%s call: error %q; want one that says %q and holds no token", kind, msg, tt.wantMsg)
				}
				if name == "error" && !errors.Is(err, errRefresh) {
					t.Errorf("%s call: error %v does not wrap the token source's error", kind, err)
				}
			}
			if seen := rec.seen(); len(seen) != 0 {
				t.Errorf("the server saw %v, want no request", seen)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	now := time.Now()
	expiredCert, expiredKey := p.issueClient(t, "expired", now.Add(-2*time.Hour), now.Add(-time.Hour))
	notPEM := filepath.Join(p.dir, "not-pem.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.dir, "missing.pem")
	otherKey := newTestPKI(t).keyFile
	const https = "https://127.0.0.1:1079"

	tests := map[string]struct {
		url  string
		opts []Option
		// want are substrings of the error; secret must not appear in it.
		want   []string
		secret string
	}{
		"certificate file missing": {
			url:  https,
			opts: []Option{WithClientCertificate(missing, p.keyFile, p.caFile)},
			want: []string{"read the client certificate", missing},
		},
		"key file missing": {
			url:  https,
			opts: []Option{WithClientCertificate(p.certFile, missing, p.caFile)},
			want: []string{"read the client key", missing},
		},
		"CA file missing": {
			url:  https,
			opts: []Option{WithClientCertificate(p.certFile, p.keyFile, missing)},
			want: []string{"read the CA bundle", missing},
		},
		"CA file without PEM": {
			url:  https,
			opts: []Option{WithClientCertificate(p.certFile, p.keyFile, notPEM)},
			want: []string{"CA bundle " + notPEM + " holds no PEM certificate"},
		},
		"key does not match": {
			url:  https,
			opts: []Option{WithClientCertificate(p.certFile, otherKey, p.caFile)},
			want: []string{"load the client certificate " + p.certFile + " with key " + otherKey, "does not match"},
		},
		"certificate expired": {
			url:  https,
			opts: []Option{WithClientCertificate(expiredCert, expiredKey, p.caFile)},
			want: []string{"client certificate " + expiredCert + " expired at", "renew it"},
		},
		"no key file": {
			url:  https,
			opts: []Option{WithClientCertificate(p.certFile, "", p.caFile)},
			want: []string{"give both a certificate file and a key file"},
		},
		"plain http with a certificate": {
			url:  "http://127.0.0.1:1079",
			opts: []Option{WithClientCertificate(p.certFile, p.keyFile, p.caFile)},
			want: []string{"TLS options need an https:// URL"},
		},
		"not an http URL": {
			url:  "localhost:1079",
			want: []string{"want an http:// or https:// URL"},
		},
		"WithHTTPClient and WithTLS": {
			url:  https,
			opts: []Option{WithHTTPClient(http.DefaultClient), WithTLS(&tls.Config{})},
			want: []string{"configure that client's TLS instead"},
		},
		"nil TLS config": {
			url:  https,
			opts: []Option{WithTLS(nil)},
			want: []string{"WithTLS: the TLS config is nil"},
		},
		"empty token": {
			url:  https,
			opts: []Option{WithBearerToken(" \n")},
			want: []string{"WithBearerToken: the bearer token is empty"},
		},
		"token with a line break": {
			url:    https,
			opts:   []Option{WithBearerToken("secret\nx-injected: 1")},
			want:   []string{"WithBearerToken: the bearer token contains a control character"},
			secret: "secret",
		},
		"nil token source": {
			url:  https,
			opts: []Option{WithTokenSource(nil)},
			want: []string{"WithTokenSource: the token source is nil"},
		},
		"two token options": {
			url:    https,
			opts:   []Option{WithBearerToken("secret"), WithTokenSource(func(context.Context) (string, error) { return "secret", nil })},
			want:   []string{"use only one of WithBearerToken and WithTokenSource"},
			secret: "secret",
		},
		"every problem at once": {
			url:  https,
			opts: []Option{WithClientCertificate(missing, p.keyFile, p.caFile), WithBearerToken("")},
			want: []string{missing, "the bearer token is empty"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := New(tt.url, tt.opts...)
			if err == nil {
				t.Fatalf("New returned %v and no error", c)
			}
			if c != nil {
				t.Errorf("New returned a client and the error %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}

// TestWithTLSCopiesConfig checks that New leaves the caller's config as it
// was: the transport would otherwise add its ALPN protocols to it.
func TestWithTLSCopiesConfig(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	srv, _ := startTLSServer(t, p, tls.VerifyClientCertIfGiven)
	cfg := &tls.Config{RootCAs: p.pool}
	c, err := New(srv.URL, WithTLS(cfg), WithClientCertificate(p.certFile, p.keyFile, ""))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := call(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if cfg.NextProtos != nil || cfg.GetClientCertificate != nil {
		t.Errorf("New modified the caller's TLS config: NextProtos %v, GetClientCertificate set %v", cfg.NextProtos, cfg.GetClientCertificate != nil)
	}
}

// BenchmarkBearer measures what the interceptor adds to a unary call.
func BenchmarkBearer(b *testing.B) {
	next := func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, nil }
	for name, bi := range map[string]*bearerInterceptor{
		"static": {static: "Bearer x"},
		"source": {source: func(context.Context) (string, error) { return "x", nil }},
	} {
		b.Run(name, func(b *testing.B) {
			call := bi.WrapUnary(next)
			req := connect.NewRequest(&machinev1.GetMachineRequest{})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := call(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
