package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/google/go-cmp/cmp"
)

func mustWrite(t *testing.T, file string, b []byte) {
	t.Helper()
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAPIConfigValidate(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	for _, f := range []string{"dhcp.crt", "dhcp.key", "ca.crt"} {
		mustWrite(t, filepath.Join(pki, f), []byte("x"))
	}
	valid := func() APIConfig {
		c := DefaultAPIConfig()
		c.PKIDir = pki
		return c
	}
	tests := map[string]struct {
		edit func(*APIConfig)
		want []string // one substring per error; none for valid settings
	}{
		"defaults with a PKI directory": {},
		"explicit files": {edit: func(c *APIConfig) {
			c.PKIDir = ""
			c.CertFile, c.KeyFile, c.CAFile = filepath.Join(pki, "dhcp.crt"), filepath.Join(pki, "dhcp.key"), filepath.Join(pki, "ca.crt")
		}},
		"https with the system roots": {edit: func(c *APIConfig) {
			c.PKIDir, c.CertFile, c.KeyFile = "", filepath.Join(pki, "dhcp.crt"), filepath.Join(pki, "dhcp.key")
		}},
		"plain http without certificates": {edit: func(c *APIConfig) {
			c.APIURL, c.PKIDir = "http://127.0.0.1:1079", ""
		}},
		"empty URL": {
			edit: func(c *APIConfig) { c.APIURL = "" },
			want: []string{"api-url: empty; give the Carbide API's URL"},
		},
		"not a URL": {
			edit: func(c *APIConfig) { c.APIURL = "https://user:s3cret@[::1" },
			want: []string{"api-url: not a URL; give one like https://carbide.example:1079"},
		},
		"not http": {
			edit: func(c *APIConfig) { c.APIURL = "ftp://carbide.example" },
			want: []string{`api-url: "ftp://carbide.example" is not an http:// or https:// URL with a host`},
		},
		"no host": {
			edit: func(c *APIConfig) { c.APIURL = "https:///v1" },
			want: []string{"is not an http:// or https:// URL with a host"},
		},
		"a password in the API URL is not repeated": {
			edit: func(c *APIConfig) { c.APIURL = "ftp://user:s3cret@carbide.example" },
			want: []string{`api-url: "ftp://user:xxxxx@carbide.example"`},
		},
		"https without a certificate": {
			edit: func(c *APIConfig) { c.PKIDir = "" },
			want: []string{"no client certificate: give --pki-dir (the API's <data-dir>/pki, holding dhcp.crt and dhcp.key) or --cert and --key"},
		},
		"a certificate without its key": {
			edit: func(c *APIConfig) { c.PKIDir, c.CertFile = "", filepath.Join(pki, "dhcp.crt") },
			want: []string{"no client certificate"},
		},
		"certificate files that do not exist": {
			edit: func(c *APIConfig) {
				c.PKIDir, c.CertFile, c.KeyFile = "", "/nonexistent/dhcp.crt", "/nonexistent/dhcp.key"
			},
			want: []string{"cert: stat /nonexistent/dhcp.crt", "key: stat /nonexistent/dhcp.key"},
		},
		"a PKI directory without the files": {
			edit: func(c *APIConfig) { c.PKIDir = filepath.Join(pki, "none") },
			want: []string{
				"cert: stat " + filepath.Join(pki, "none", "dhcp.crt") + ": no such file or directory",
				"key: stat " + filepath.Join(pki, "none", "dhcp.key"),
				"ca: stat " + filepath.Join(pki, "none", "ca.crt"),
			},
		},
		"certificates with plain http": {
			edit: func(c *APIConfig) { c.APIURL = "http://u:s3cret@127.0.0.1:1079" },
			want: []string{`api-url: "http://u:xxxxx@127.0.0.1:1079" is plain http; client certificates need an https:// URL`},
		},
		"zero timeout": {
			edit: func(c *APIConfig) { c.APITimeout = 0 },
			want: []string{"api-timeout: 0s; give a positive duration, e.g. 2s"},
		},
		"negative timeout": {
			edit: func(c *APIConfig) { c.APITimeout = -time.Second },
			want: []string{"api-timeout: -1s"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			if tt.edit != nil {
				tt.edit(&c)
			}
			errs := c.Validate("dhcp")
			if len(errs) != len(tt.want) {
				t.Fatalf("Validate = %v, want %d errors, one per problem", errs, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q, want it to say %q", i, errs[i], w)
				}
				if strings.Contains(errs[i].Error(), "s3cret") {
					t.Errorf("error %d repeats the URL's password: %v", i, errs[i])
				}
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		c             APIConfig
		cert, key, ca string
		role          string
	}{
		"none":                 {role: "dhcp"},
		"the PKI directory's":  {c: APIConfig{PKIDir: "/etc/carbide"}, role: "pxe", cert: "/etc/carbide/pxe.crt", key: "/etc/carbide/pxe.key", ca: "/etc/carbide/ca.crt"},
		"a file overrides one": {c: APIConfig{PKIDir: "/etc/carbide", KeyFile: "/secrets/dhcp.key"}, role: "dhcp", cert: "/etc/carbide/dhcp.crt", key: "/secrets/dhcp.key", ca: "/etc/carbide/ca.crt"},
		"files only":           {c: APIConfig{CertFile: "c", KeyFile: "k"}, role: "dhcp", cert: "c", key: "k"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cert, key, ca := tt.c.Credentials(tt.role)
			if diff := cmp.Diff([]string{tt.cert, tt.key, tt.ca}, []string{cert, key, ca}); diff != "" {
				t.Errorf("Credentials(%s) (-want +got):\n%s", tt.role, diff)
			}
		})
	}
}

func TestAPIConfigAddFlags(t *testing.T) {
	t.Parallel()
	var help strings.Builder
	fs := NewFlagSet("carbide-test", "", &help)
	c := DefaultAPIConfig()
	c.AddFlags(fs, "pxe", "a request whose call fails gets 503")
	err := Parse(fs, "CARBIDE_TEST_", []string{"--pki-dir", "/pki", "--cert", "/c.crt", "--key", "/c.key", "--ca", "/ca.crt"},
		env(map[string]string{"CARBIDE_TEST_API_URL": "https://api:1079", "CARBIDE_TEST_API_TIMEOUT": "500ms"}))
	if err != nil {
		t.Fatal(err)
	}
	want := APIConfig{APIURL: "https://api:1079", PKIDir: "/pki", CertFile: "/c.crt", KeyFile: "/c.key", CAFile: "/ca.crt",
		APITimeout: 500 * time.Millisecond}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	fs.Usage()
	for _, w := range []string{
		"base URL of the Carbide API (default \"https://127.0.0.1:1079\")",
		"directory holding pxe.crt, pxe.key and ca.crt (the API's <data-dir>/pki); --cert, --key and --ca override its files",
		"client certificate (PEM) of the pxe role",
		"deadline of each API call; a request whose call fails gets 503 (default 2s)",
	} {
		if !strings.Contains(help.String(), w) {
			t.Errorf("help lacks %q:\n%s", w, help.String())
		}
	}
}

// writeCert writes a self-signed certificate for cn, and its key, as PEM.
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	mustWrite(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// TestClient: the client presents the role's certificate from the PKI
// directory and trusts the CA there.
func TestClient(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var peers []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for _, c := range r.TLS.PeerCertificates {
			peers = append(peers, c.Subject.CommonName)
		}
		mu.Unlock()
		http.Error(w, "not here", http.StatusNotFound)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	pki := t.TempDir()
	writeCert(t, filepath.Join(pki, "pxe.crt"), filepath.Join(pki, "pxe.key"), "pxe")
	mustWrite(t, filepath.Join(pki, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	c := APIConfig{APIURL: srv.URL, PKIDir: pki, APITimeout: time.Second}
	client, err := c.Client("pxe")
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{}))
	if connect.CodeOf(err) == connect.CodeUnavailable {
		t.Fatalf("GetBootConfig did not reach the server: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"pxe"}, peers); diff != "" {
		t.Errorf("client certificates the server saw (-want +got):\n%s", diff)
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	for _, f := range []string{"dhcp.crt", "dhcp.key"} {
		mustWrite(t, filepath.Join(pki, f), []byte("not PEM"))
	}
	c := APIConfig{APIURL: "https://127.0.0.1:1079", PKIDir: pki}
	_, err := c.Client("dhcp")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(pki, "dhcp.crt")) {
		t.Errorf("Client = %v, want an error naming dhcp.crt", err)
	}
	c = APIConfig{APIURL: "ftp://x"}
	if _, err := c.Client("dhcp"); err == nil {
		t.Error("Client(ftp://x) succeeded")
	}
	c = APIConfig{APIURL: "http://127.0.0.1:1079"}
	if _, err := c.Client("dhcp"); err != nil {
		t.Errorf("Client(plain http) = %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://carbide.example:1079":     "https://carbide.example:1079",
		"https://u:s3cret@carbide.example": "https://u:xxxxx@carbide.example",
		"https://[::1":                     "(unparsable)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
