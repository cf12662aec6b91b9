package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// newCA returns a fresh CA valid for validity, failing the test on error.
func newCA(t *testing.T, validity time.Duration) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", validity)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// checkLeafKey checks that keyPEM is a PKCS #8 P-256 key matching cert.
func checkLeafKey(t *testing.T, cert *x509.Certificate, keyPEM []byte) {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key is not a PKCS #8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("parse key: %v", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", k)
	}
	if !ek.PublicKey.Equal(cert.PublicKey) {
		t.Errorf("key does not match certificate")
	}
	if cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v, want ECDSA-SHA256", cert.SignatureAlgorithm)
	}
	if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA=%v KeyUsage=%v, want a leaf with digitalSignature only", cert.IsCA, cert.KeyUsage)
	}
}

func TestNewCA(t *testing.T) {
	t.Parallel()
	ca := newCA(t, time.Hour)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA limited to leaves", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("KeyUsage %v lacks certSign", c.KeyUsage)
	}
	if k, ok := ca.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", ca.Key)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v, want ECDSA-SHA256", c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}

	for name, tt := range map[string]struct {
		cn       string
		validity time.Duration
	}{
		"empty name":    {"", time.Hour},
		"zero validity": {"x", 0},
		"negative":      {"x", -time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := pki.NewCA(tt.cn, tt.validity); err == nil {
				t.Error("NewCA succeeded, want error")
			}
		})
	}
}

func TestIssueServer(t *testing.T) {
	t.Parallel()
	ca := newCA(t, 24*time.Hour)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	tests := map[string]struct {
		hosts   []string
		wantErr string
	}{
		"dns and ips":  {hosts: []string{"api.carbide.local", "localhost", "127.0.0.1", "::1", "10.0.0.5"}},
		"only an ip":   {hosts: []string{"192.0.2.1"}},
		"wildcard":     {hosts: []string{"*.carbide.local"}},
		"no hosts":     {wantErr: "no hosts"},
		"host:port":    {hosts: []string{"localhost:8443"}, wantErr: "without port"},
		"space":        {hosts: []string{"a b"}, wantErr: "not a valid DNS name"},
		"empty label":  {hosts: []string{"a..b"}, wantErr: "not a valid DNS name"},
		"empty host":   {hosts: []string{""}, wantErr: "not a valid DNS name"},
		"url":          {hosts: []string{"https://x"}, wantErr: "without port"},
		"bracketed ip": {hosts: []string{"[::1]"}, wantErr: "neither an IP address nor a DNS name"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			certPEM, keyPEM, err := ca.IssueServer(tt.hosts, time.Hour)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("IssueServer error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueServer: %v", err)
			}
			cert := parseCertPEM(t, certPEM)
			checkLeafKey(t, cert, keyPEM)
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage %v, want [ServerAuth]", cert.ExtKeyUsage)
			}
			for _, h := range tt.hosts {
				name := h
				if w, ok := strings.CutPrefix(h, "*."); ok {
					name = "node1." + w
				}
				opts := x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
				if _, err := cert.Verify(opts); err != nil {
					t.Errorf("verify for %q: %v", name, err)
				}
			}
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if _, err := cert.Verify(opts); err == nil {
				t.Error("server certificate verifies for client auth, want refusal")
			}
			if len(cert.URIs) != 0 {
				t.Errorf("server certificate has URI SANs %v", cert.URIs)
			}
		})
	}
}

func TestIssueClient(t *testing.T) {
	t.Parallel()
	ca := newCA(t, 24*time.Hour)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	tests := map[string]struct {
		id      string
		wantErr string
	}{
		"service": {id: pki.ServiceID("", principal.RoleDHCP)},
		"agent":   {id: pki.AgentID("", machine)},
		"user":    {id: pki.UserID("", principal.RoleAdmin, "bootstrap")},
		// IssueClient checks SPIFFE syntax only; roles are checked on use.
		"other td":       {id: "spiffe://other.example/service/dhcp"},
		"empty":          {id: "", wantErr: "spiffe://"},
		"https":          {id: "https://carbide.local/service/dhcp", wantErr: "spiffe://"},
		"no path":        {id: "spiffe://carbide.local", wantErr: "no path"},
		"trailing slash": {id: "spiffe://carbide.local/service/", wantErr: "empty path segment"},
		"query":          {id: "spiffe://carbide.local/service/dhcp?a", wantErr: "character other than"},
		"upper-case td":  {id: "spiffe://Carbide.local/service/dhcp", wantErr: "trust domain"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			certPEM, keyPEM, err := ca.IssueClient(tt.id, time.Hour)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("IssueClient error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueClient: %v", err)
			}
			cert := parseCertPEM(t, certPEM)
			checkLeafKey(t, cert, keyPEM)
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage %v, want [ClientAuth]", cert.ExtKeyUsage)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != tt.id {
				t.Errorf("URIs %v, want exactly [%s]", cert.URIs, tt.id)
			}
			if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
				t.Errorf("client certificate has other SANs")
			}
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("verify for client auth: %v", err)
			}
			opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			if _, err := cert.Verify(opts); err == nil {
				t.Error("client certificate verifies for server auth, want refusal")
			}
		})
	}
}

func TestIssueValidity(t *testing.T) {
	t.Parallel()
	ca := newCA(t, time.Hour)
	id := pki.ServiceID("", principal.RoleDNS)
	tests := map[string]struct {
		issue     func() ([]byte, []byte, error)
		wantErr   string
		wantUntil time.Time // zero: don't check
	}{
		"client clamped to CA expiry": {
			issue:     func() ([]byte, []byte, error) { return ca.IssueClient(id, 24*time.Hour) },
			wantUntil: ca.Cert.NotAfter,
		},
		"server clamped to CA expiry": {
			issue:     func() ([]byte, []byte, error) { return ca.IssueServer([]string{"localhost"}, 24*time.Hour) },
			wantUntil: ca.Cert.NotAfter,
		},
		"client zero validity": {
			issue:   func() ([]byte, []byte, error) { return ca.IssueClient(id, 0) },
			wantErr: "not positive",
		},
		"server negative validity": {
			issue:   func() ([]byte, []byte, error) { return ca.IssueServer([]string{"localhost"}, -time.Second) },
			wantErr: "not positive",
		},
		"window after CA expiry": {
			issue: func() ([]byte, []byte, error) {
				return ca.IssueClientWindow(id, ca.Cert.NotAfter.Add(time.Hour), ca.Cert.NotAfter.Add(2*time.Hour))
			},
			wantErr: "is empty",
		},
		"nil CA": {
			issue:   func() ([]byte, []byte, error) { return (*pki.CA)(nil).IssueClient(id, time.Hour) },
			wantErr: "no certificate or key",
		},
		"expired CA": {
			issue: func() ([]byte, []byte, error) {
				expired := *ca
				c := *ca.Cert
				c.NotAfter = time.Now().Add(-time.Minute)
				expired.Cert = &c
				return expired.IssueClient(id, time.Hour)
			},
			wantErr: "create a new CA",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			certPEM, _, err := tt.issue()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := parseCertPEM(t, certPEM).NotAfter; !got.Equal(tt.wantUntil) {
				t.Errorf("NotAfter %v, want %v", got, tt.wantUntil)
			}
		})
	}
}

func TestLoadCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := pki.EnsureDev(dir, "", nil); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := pki.EnsureDev(other, "", nil); err != nil {
		t.Fatal(err)
	}
	// An SEC 1 encoding of the CA key must load too.
	ca, err := pki.LoadCA(dir+"/ca.crt", dir+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	sec1Path := writeFile(t, work, "sec1.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600)
	// What openssl ecparam -genkey writes: the curve OID, then the key.
	p256OID := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	withParams := writeFile(t, work, "params.key", append(pemBlock("EC PARAMETERS", p256OID), readFile(t, work, "sec1.key")...), 0o600)
	garbage := writeFile(t, work, "garbage.pem", []byte("not PEM"), 0o600)
	pubKey := writeFile(t, work, "pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), 0o600)

	tests := map[string]struct {
		cert, key string
		wantErr   string
	}{
		"pkcs8":             {cert: dir + "/ca.crt", key: dir + "/ca.key"},
		"sec1":              {cert: dir + "/ca.crt", key: sec1Path},
		"sec1 after params": {cert: dir + "/ca.crt", key: withParams},
		"mismatched key":    {cert: dir + "/ca.crt", key: other + "/ca.key", wantErr: "does not match"},
		"leaf as CA":        {cert: dir + "/server.crt", key: dir + "/server.key", wantErr: "not a CA certificate"},
		"missing cert":      {cert: work + "/none.crt", key: dir + "/ca.key", wantErr: "no such file"},
		"missing key":       {cert: dir + "/ca.crt", key: work + "/none.key", wantErr: "no such file"},
		"garbage cert":      {cert: garbage, key: dir + "/ca.key", wantErr: "no PEM"},
		"garbage key":       {cert: dir + "/ca.crt", key: garbage, wantErr: "no PEM block"},
		"wrong key block":   {cert: dir + "/ca.crt", key: pubKey, wantErr: `"PUBLIC KEY"`},
		"cert file as key":  {cert: dir + "/ca.crt", key: dir + "/ca.crt", wantErr: `"CERTIFICATE"`},
		"key file as cert":  {cert: dir + "/ca.key", key: dir + "/ca.key", wantErr: "no PEM"},
		"another CA's cert": {cert: other + "/ca.crt", key: dir + "/ca.key", wantErr: "does not match"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ca, err := pki.LoadCA(tt.cert, tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadCA error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			certPEM, _, err := ca.IssueClient(pki.ServiceID("", principal.RolePXE), time.Hour)
			if err != nil {
				t.Fatalf("IssueClient: %v", err)
			}
			if err := parseCertPEM(t, certPEM).CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("issued certificate not signed by loaded CA: %v", err)
			}
		})
	}
}

func TestLoadPool(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := pki.EnsureDev(d, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	bundle := writeFile(t, work, "bundle.pem", append(readFile(t, a, "ca.crt"), readFile(t, b, "ca.crt")...), 0o644)
	empty := writeFile(t, work, "empty.pem", nil, 0o644)
	withKey := writeFile(t, work, "withkey.pem", append(readFile(t, a, "ca.crt"), readFile(t, a, "ca.key")...), 0o600)
	badDER := writeFile(t, work, "bad.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}), 0o644)

	tests := map[string]struct {
		file    string
		trusts  []string // dirs whose dhcp.crt must verify
		wantErr string
	}{
		"one CA":        {file: a + "/ca.crt", trusts: []string{a}},
		"bundle of two": {file: bundle, trusts: []string{a, b}},
		"missing":       {file: work + "/none.pem", wantErr: "no such file"},
		"empty":         {file: empty, wantErr: "no PEM certificates"},
		"leaf":          {file: a + "/server.crt", wantErr: "not a CA certificate"},
		"key in bundle": {file: withKey, wantErr: `unexpected PEM block "PRIVATE KEY"`},
		"bad DER":       {file: badDER, wantErr: "parse certificate 1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, err := pki.LoadPool(tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadPool error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadPool: %v", err)
			}
			for _, d := range tt.trusts {
				cert := parseCertPEM(t, readFile(t, d, "dhcp.crt"))
				opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
				if _, err := cert.Verify(opts); err != nil {
					t.Errorf("dhcp.crt of %s does not verify: %v", d, err)
				}
			}
		})
	}
}
