package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

const machine = "0f6d2c1e-8a4b-4c3d-9e2f-1a2b3c4d5e6f"

func TestIDBuilders(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		got, want string
	}{
		"service":              {pki.ServiceID("carbide.local", principal.RoleDHCP), "spiffe://carbide.local/service/dhcp"},
		"service default td":   {pki.ServiceID("", principal.RoleBMC), "spiffe://carbide.local/service/bmc"},
		"agent":                {pki.AgentID("prod.example", machine), "spiffe://prod.example/agent/" + machine},
		"agent lower-cases":    {pki.AgentID("", strings.ToUpper(machine)), "spiffe://carbide.local/agent/" + machine},
		"user":                 {pki.UserID("carbide.local", principal.RoleAdmin, "alice"), "spiffe://carbide.local/user/admin/alice"},
		"user default td":      {pki.UserID("", principal.RoleViewer, "ci.bot"), "spiffe://carbide.local/user/viewer/ci.bot"},
		"default trust domain": {pki.DefaultTrustDomain, "carbide.local"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// certWithURIs returns a self-signed certificate whose URI SANs are uris,
// parsed as a TLS stack would. PrincipalFromCert does not verify chains, so
// no CA is needed, and raw construction lets the test carry IDs that
// IssueClient would refuse to issue.
func certWithURIs(t *testing.T, isCA bool, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if !isCA {
		tmpl.DNSNames = []string{"other-sans-are-ignored.example"}
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestPrincipalFromCert(t *testing.T) {
	t.Parallel()
	type validCase struct {
		td   string
		uri  string
		want *principal.Principal
	}
	// byCert returns the principal a certificate for id with roles gives.
	byCert := func(id, machineID string, roles ...principal.Role) *principal.Principal {
		return &principal.Principal{Name: id, Roles: roles, MachineID: machineID, Method: principal.MethodCertificate}
	}
	valid := map[string]validCase{}
	for _, r := range principal.ServiceRoles {
		id := "spiffe://carbide.local/service/" + string(r)
		valid["service "+string(r)] = validCase{"carbide.local", id, byCert(id, "", r)}
	}
	for _, r := range principal.UserRoles {
		id := "spiffe://carbide.local/user/" + string(r) + "/alice"
		valid["user "+string(r)] = validCase{"carbide.local", id, byCert(id, "", r)}
	}
	agent := "spiffe://carbide.local/agent/" + machine
	valid["agent"] = validCase{"carbide.local", agent, byCert(agent, machine, principal.RoleAgent)}
	dns := "spiffe://carbide.local/service/dns"
	valid["empty td means default"] = validCase{"", dns, byCert(dns, "", principal.RoleDNS)}
	custom := "spiffe://prod.example-1/user/operator/ci_bot.2-x"
	valid["custom td and name chars"] = validCase{"prod.example-1", custom, byCert(custom, "", principal.RoleOperator)}
	long := "spiffe://carbide.local/user/viewer/" + strings.Repeat("a", 64)
	valid["name of 64 chars"] = validCase{"", long, byCert(long, "", principal.RoleViewer)}
	built := pki.AgentID("", strings.ToUpper(machine))
	valid["built agent ID"] = validCase{"", built, byCert(built, machine, principal.RoleAgent)}

	for name, tt := range valid {
		t.Run("valid/"+name, func(t *testing.T) {
			t.Parallel()
			got, err := pki.PrincipalFromCert(tt.td, certWithURIs(t, false, tt.uri))
			if err != nil {
				t.Fatalf("PrincipalFromCert: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}

	rejected := map[string]struct {
		td      string
		uris    []string
		isCA    bool
		nilCert bool
		// wantErr is a fragment of the error message.
		wantErr string
	}{
		"nil certificate":        {nilCert: true, wantErr: "no certificate"},
		"no URI SAN":             {wantErr: "no URI SAN"},
		"two URI SANs":           {uris: []string{"spiffe://carbide.local/service/dhcp", "spiffe://carbide.local/service/dns"}, wantErr: "2 URI SANs"},
		"CA certificate":         {uris: []string{"spiffe://carbide.local/service/dhcp"}, isCA: true, wantErr: "CA certificate"},
		"other trust domain":     {uris: []string{"spiffe://evil.local/service/dhcp"}, wantErr: `trust domain "evil.local" is not "carbide.local"`},
		"td suffix":              {uris: []string{"spiffe://carbide.local.evil/service/dhcp"}, wantErr: "trust domain"},
		"upper-case td":          {uris: []string{"spiffe://CARBIDE.local/service/dhcp"}, wantErr: "trust domain"},
		"td with port":           {uris: []string{"spiffe://carbide.local:443/service/dhcp"}, wantErr: "trust domain"},
		"td with userinfo":       {uris: []string{"spiffe://admin@carbide.local/service/dhcp"}, wantErr: "trust domain"},
		"https scheme":           {uris: []string{"https://carbide.local/service/dhcp"}, wantErr: "spiffe://"},
		"opaque URI":             {uris: []string{"spiffe:carbide.local/service/dhcp"}, wantErr: "spiffe://"},
		"no path":                {uris: []string{"spiffe://carbide.local"}, wantErr: "no path"},
		"root path":              {uris: []string{"spiffe://carbide.local/"}, wantErr: "empty path segment"},
		"trailing slash":         {uris: []string{"spiffe://carbide.local/service/dhcp/"}, wantErr: "empty path segment"},
		"double slash":           {uris: []string{"spiffe://carbide.local/service//dhcp"}, wantErr: "empty path segment"},
		"dot-dot segment":        {uris: []string{"spiffe://carbide.local/user/admin/.."}, wantErr: `".."`},
		"dot segment":            {uris: []string{"spiffe://carbide.local/user/admin/."}, wantErr: `"."`},
		"percent-encoded":        {uris: []string{"spiffe://carbide.local/service/%64hcp"}, wantErr: "character other than"},
		"query":                  {uris: []string{"spiffe://carbide.local/service/dhcp?x=1"}, wantErr: "character other than"},
		"fragment":               {uris: []string{"spiffe://carbide.local/service/dhcp#x"}, wantErr: "character other than"},
		"unknown kind":           {uris: []string{"spiffe://carbide.local/daemon/dhcp"}, wantErr: `unknown kind "daemon"`},
		"service without role":   {uris: []string{"spiffe://carbide.local/service"}, wantErr: "service/<role>"},
		"service extra segment":  {uris: []string{"spiffe://carbide.local/service/dhcp/x"}, wantErr: "service/<role>"},
		"unknown service role":   {uris: []string{"spiffe://carbide.local/service/ntp"}, wantErr: `unknown service role "ntp"`},
		"service as agent":       {uris: []string{"spiffe://carbide.local/service/agent"}, wantErr: `unknown service role "agent"`},
		"service as admin":       {uris: []string{"spiffe://carbide.local/service/admin"}, wantErr: `unknown service role "admin"`},
		"service role case":      {uris: []string{"spiffe://carbide.local/service/DHCP"}, wantErr: "unknown service role"},
		"agent without uuid":     {uris: []string{"spiffe://carbide.local/agent"}, wantErr: "agent/<machine-uuid>"},
		"agent extra segment":    {uris: []string{"spiffe://carbide.local/agent/" + machine + "/x"}, wantErr: "agent/<machine-uuid>"},
		"agent bad uuid":         {uris: []string{"spiffe://carbide.local/agent/not-a-uuid"}, wantErr: "not a lower-case canonical UUID"},
		"agent upper-case uuid":  {uris: []string{"spiffe://carbide.local/agent/" + strings.ToUpper(machine)}, wantErr: "not a lower-case canonical UUID"},
		"agent uuid no hyphens":  {uris: []string{"spiffe://carbide.local/agent/" + strings.ReplaceAll(machine, "-", "")}, wantErr: "not a lower-case canonical UUID"},
		"agent short uuid":       {uris: []string{"spiffe://carbide.local/agent/" + machine[:35]}, wantErr: "not a lower-case canonical UUID"},
		"agent nil uuid":         {uris: []string{"spiffe://carbide.local/agent/00000000-0000-0000-0000-000000000000"}, wantErr: "nil UUID"},
		"user without name":      {uris: []string{"spiffe://carbide.local/user/admin"}, wantErr: "user/<role>/<name>"},
		"user extra segment":     {uris: []string{"spiffe://carbide.local/user/admin/alice/x"}, wantErr: "user/<role>/<name>"},
		"unknown user role":      {uris: []string{"spiffe://carbide.local/user/root/alice"}, wantErr: `unknown user role "root"`},
		"user with service role": {uris: []string{"spiffe://carbide.local/user/dhcp/alice"}, wantErr: `unknown user role "dhcp"`},
		"user with agent role":   {uris: []string{"spiffe://carbide.local/user/agent/alice"}, wantErr: `unknown user role "agent"`},
		"upper-case user name":   {uris: []string{"spiffe://carbide.local/user/admin/Alice"}, wantErr: "user name"},
		"user name too long":     {uris: []string{"spiffe://carbide.local/user/admin/" + strings.Repeat("a", 65)}, wantErr: "user name"},
		"user name with @":       {uris: []string{"spiffe://carbide.local/user/admin/a@b"}, wantErr: "character other than"},
		"ID too long":            {uris: []string{"spiffe://carbide.local/user/admin/" + strings.Repeat("a", 2048)}, wantErr: "longer than 2048"},
	}
	for name, tt := range rejected {
		t.Run("rejected/"+name, func(t *testing.T) {
			t.Parallel()
			var c *x509.Certificate
			if !tt.nilCert {
				c = certWithURIs(t, tt.isCA, tt.uris...)
			}
			p, err := pki.PrincipalFromCert(tt.td, c)
			if err == nil {
				t.Fatalf("PrincipalFromCert = %+v, want error", p)
			}
			if !errors.Is(err, pki.ErrInvalidIdentity) {
				t.Errorf("error %q does not wrap ErrInvalidIdentity", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}

	t.Run("bad configured trust domain", func(t *testing.T) {
		t.Parallel()
		_, err := pki.PrincipalFromCert("Carbide.Local", certWithURIs(t, false, "spiffe://Carbide.Local/service/dhcp"))
		if err == nil || errors.Is(err, pki.ErrInvalidIdentity) {
			t.Fatalf("error = %v, want a configuration error not wrapping ErrInvalidIdentity", err)
		}
	})
}
