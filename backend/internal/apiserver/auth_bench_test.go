package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/authn"
	"github.com/carbide-dev/carbide/backend/internal/authz"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
)

// BenchmarkAuthCost measures what authentication and authorization add to
// each call, apart from TLS itself: the authenticator's middleware (a
// client certificate, or a bearer JWT of the development issuer, ES256),
// both once verified and cached and at first sight, followed by the
// authorization check.
func BenchmarkAuthCost(b *testing.B) {
	dir := b.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, _, err := security(context.Background(), Config{DataDir: dir, Dev: true}, logger)
	if err != nil {
		b.Fatal(err)
	}
	pkiDir := filepath.Join(dir, "pki")
	raw, err := os.ReadFile(filepath.Join(pkiDir, "dhcp.crt"))
	if err != nil {
		b.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	token, err := pki.DevToken(pkiDir, "bench", []string{"admin"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	authorizer := authz.New(authn.Failure)
	req := &networkv1.AllocateAddressRequest{}
	var denied int
	check := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if authorizer.Check(r.Context(), networkv1connect.AddressServiceAllocateAddressProcedure, req) != nil {
			denied++
		}
	})
	handler := auth.Middleware(check)

	cases := map[string]func(*http.Request){
		"certificate": func(r *http.Request) {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		},
		"jwt": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) },
	}
	for name, setup := range cases {
		for _, cached := range []bool{true, false} {
			if !cached {
				name += " first sight"
			}
			b.Run(name, func(b *testing.B) {
				r := httptest.NewRequest(http.MethodPost, networkv1connect.AddressServiceAllocateAddressProcedure, nil)
				setup(r)
				w := httptest.NewRecorder()
				denied = 0
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					h := handler
					if !cached {
						// A new authenticator has nothing cached.
						fresh := &authn.Authenticator{ClientCAs: auth.ClientCAs, Identify: auth.Identify, JWT: auth.JWT}
						h = fresh.Middleware(check)
					}
					h.ServeHTTP(w, r)
				}
				b.StopTimer()
				if denied > 0 {
					b.Fatalf("%d of %d calls were refused", denied, b.N)
				}
			})
		}
	}
}
