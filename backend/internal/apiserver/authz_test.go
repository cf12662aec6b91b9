package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/authn"
	"github.com/carbide-dev/carbide/backend/internal/authz"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

const (
	testIssuer   = "https://issuer.carbide.test"
	testAudience = "carbide-api"
)

// rpc is one RPC the server offers: its procedure path and the descriptor
// of its messages.
type rpc struct {
	procedure string
	md        protoreflect.MethodDescriptor
}

// servedProcedures lists every RPC the server offers, from the service
// descriptors, so that a new RPC cannot escape the checks below. connect-go
// registers the health and reflection schemas under the package prefix
// "connectext." and ships reflection v1alpha with v1's messages.
func servedProcedures(t testing.TB) []rpc {
	t.Helper()
	services := map[string]string{ // served name -> descriptor name
		"grpc.health.v1.Health":                    "connectext.grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection":      "connectext.grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection": "connectext.grpc.reflection.v1.ServerReflection",
	}
	for _, name := range ServiceNames {
		services[name] = name
	}
	var out []rpc
	for served, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatalf("descriptor of %s: %v", name, err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			out = append(out, rpc{procedure: "/" + served + "/" + string(md.Name()), md: md})
		}
	}
	return out
}

// TestPolicyCoversEveryRPC fails when an RPC the server offers has no
// entry in the authorization table, or the table names an RPC that does
// not exist.
func TestPolicyCoversEveryRPC(t *testing.T) {
	t.Parallel()
	served := map[string]bool{}
	for _, r := range servedProcedures(t) {
		served[r.procedure] = true
		if _, ok := authz.Policy[r.procedure]; !ok {
			t.Errorf("%s has no entry in authz.Policy; every RPC needs one", r.procedure)
		}
	}
	for procedure := range authz.Policy {
		if !served[procedure] {
			t.Errorf("authz.Policy names %s, which the server does not offer", procedure)
		}
	}
}

// allowed is the authorization the API promises, written out independently
// of authz.Policy: whether a caller with role may call md.
func allowed(role principal.Role, r rpc) bool {
	md := r.md
	service, method, _ := strings.Cut(strings.TrimPrefix(r.procedure, "/"), "/")
	readOnly := md.Options() != nil && strings.Contains(md.Options().(interface{ String() string }).String(), "NO_SIDE_EFFECTS")
	if service == "grpc.health.v1.Health" {
		return true
	}
	isUser := role == principal.RoleAdmin || role == principal.RoleOperator || role == principal.RoleViewer
	if strings.HasPrefix(service, "grpc.reflection.") {
		return isUser
	}
	// Held identity reports are an admin's to see and decide.
	if strings.HasSuffix(method, "IdentityConflict") || strings.HasSuffix(method, "IdentityConflicts") {
		return role == principal.RoleAdmin
	}
	// Only the BMC daemons claim and report BMC work.
	bmcDaemon := service == "carbide.bmc.v1.BMCService" &&
		(method == "Claim" || method == "Renew" || method == "Report" || method == "Release")
	if bmcDaemon || role == principal.RoleBMC {
		return bmcDaemon && role == principal.RoleBMC
	}
	// Only the PXE daemon passes on an installed system's phone-home.
	if method == "PhoneHome" {
		return role == principal.RolePXE
	}
	switch role {
	case principal.RoleAdmin:
		return service != "carbide.agent.v1.AgentService"
	case principal.RoleOperator:
		return readOnly && service != "carbide.audit.v1.AuditService" && service != "carbide.agent.v1.AgentService" ||
			method == "CreateMachine" || method == "UpdateMachine" || method == "RetryMachine" ||
			method == "RequestOperation" || method == "CancelOperation" ||
			service == "carbide.instance.v1.ImageService" || service == "carbide.instance.v1.InstanceService"
	case principal.RoleViewer:
		return readOnly && service != "carbide.audit.v1.AuditService" && service != "carbide.agent.v1.AgentService"
	case principal.RolePXE:
		return service == "carbide.boot.v1.BootService"
	case principal.RoleDHCP:
		return service == "carbide.network.v1.AddressService" || service == "carbide.dhcp.v1.DHCPService"
	case principal.RoleDNS:
		return method == "Watch" && service == "carbide.watch.v1.WatchService"
	case principal.RoleAgent:
		return service == "carbide.agent.v1.AgentService"
	}
	return false
}

// credential is one way of presenting oneself to the API.
type credential struct {
	certFile, keyFile string
	token             string
	// role is the role the credential proves; "" for none (the API must
	// answer Unauthenticated).
	role principal.Role
}

// matrixFixture holds the PKI and the JWT issuer of the matrix test.
type matrixFixture struct {
	dir      string
	rsaKey   *rsa.PrivateKey
	machine  string
	tokens   []string // every token handed out, for the log check
	creds    map[string]credential
	jwksFile string
}

func newMatrixFixture(t *testing.T) *matrixFixture {
	t.Helper()
	f := &matrixFixture{dir: t.TempDir(), machine: uuid.NewString(), creds: map[string]credential{}}
	var err error
	if f.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: f.rsaKey.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	raw, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	f.jwksFile = filepath.Join(f.dir, "jwks.json")
	if err := os.WriteFile(f.jwksFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// addCerts issues the certificate credentials once the server's PKI exists.
func (f *matrixFixture) addCerts(t *testing.T, pkiDir string) {
	t.Helper()
	for _, r := range []principal.Role{principal.RoleAdmin, principal.RoleOperator, principal.RoleViewer,
		principal.RoleDHCP, principal.RolePXE, principal.RoleDNS, principal.RoleBMC} {
		f.creds["cert "+string(r)] = credential{
			certFile: filepath.Join(pkiDir, string(r)+".crt"), keyFile: filepath.Join(pkiDir, string(r)+".key"), role: r,
		}
	}
	ca, err := pki.LoadCA(filepath.Join(pkiDir, pki.CACertFile), filepath.Join(pkiDir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueClient(pki.AgentID("", f.machine), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.creds["cert agent"] = f.writeCert(t, "agent", certPEM, keyPEM, principal.RoleAgent)

	other, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = other.IssueClient(pki.UserID("", principal.RoleAdmin, "intruder"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.creds["cert from another CA"] = f.writeCert(t, "other", certPEM, keyPEM, "")
	certPEM, keyPEM = expiredClientCert(t, ca, pki.UserID("", principal.RoleAdmin, "expired"))
	f.creds["expired cert"] = f.writeCert(t, "expired", certPEM, keyPEM, "")
}

func (f *matrixFixture) writeCert(t *testing.T, name string, certPEM, keyPEM []byte, role principal.Role) credential {
	t.Helper()
	c := credential{certFile: filepath.Join(f.dir, name+".crt"), keyFile: filepath.Join(f.dir, name+".key"), role: role}
	if err := os.WriteFile(c.certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// expiredClientCert issues a client certificate that expired an hour ago.
func expiredClientCert(t *testing.T, ca *pki.CA, id string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "expired"},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// addTokens adds the bearer-token credentials.
func (f *matrixFixture) addTokens(t *testing.T) {
	t.Helper()
	now := time.Now()
	good := func(role principal.Role) map[string]any {
		return map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "user-" + string(role),
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": []string{string(role)}}
	}
	for _, r := range []principal.Role{principal.RoleAdmin, principal.RoleOperator, principal.RoleViewer} {
		f.creds["jwt "+string(r)] = credential{token: f.sign(t, good(r)), role: r}
	}
	with := func(k string, v any) map[string]any {
		c := good(principal.RoleAdmin)
		c[k] = v
		return c
	}
	f.creds["expired jwt"] = credential{token: f.sign(t, with("exp", now.Add(-time.Hour).Unix()))}
	f.creds["jwt for another audience"] = credential{token: f.sign(t, with("aud", "someone-else"))}
	f.creds["jwt from another issuer"] = credential{token: f.sign(t, with("iss", "https://evil.example"))}
	f.creds["jwt with alg none"] = credential{token: f.unsigned(t, good(principal.RoleAdmin))}
	f.creds["jwt HS256 keyed with the RSA public key"] = credential{token: f.hmacWithPublicKey(t, good(principal.RoleAdmin))}
	f.creds["no credentials"] = credential{}
}

// addAgentTokens adds agent tokens: one the server issued for the
// fixture's machine, an expired one, and one signed by another key.
func (f *matrixFixture) addAgentTokens(t *testing.T, tokens *pki.AgentTokens) {
	t.Helper()
	id := uuid.MustParse(f.machine)
	issue := func(a *pki.AgentTokens, at time.Time) string {
		tok, _, err := a.Issue(id, uuid.New(), at, at.Add(2*pki.DefaultAgentTokenTTL))
		if err != nil {
			t.Fatal(err)
		}
		f.tokens = append(f.tokens, tok)
		testsecret.Register(t, tok)
		return tok
	}
	f.creds["agent token"] = credential{token: issue(tokens, time.Now()), role: principal.RoleAgent}
	f.creds["expired agent token"] = credential{token: issue(tokens, time.Now().Add(-2*pki.DefaultAgentTokenTTL))}
	other, _, err := pki.NewAgentTokens(filepath.Join(f.dir, "other-agent.key"), "", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	f.creds["agent token signed by another key"] = credential{token: issue(other, time.Now())}
}

func (f *matrixFixture) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.rsaKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	f.tokens = append(f.tokens, tok)
	testsecret.Register(t, tok)
	return tok
}

func (f *matrixFixture) compact(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
}

func (f *matrixFixture) unsigned(t *testing.T, claims map[string]any) string {
	t.Helper()
	tok := f.compact(t, map[string]any{"alg": "none", "typ": "JWT", "kid": "k1"}, claims) + "."
	f.tokens = append(f.tokens, tok)
	testsecret.Register(t, tok)
	return tok
}

// hmacWithPublicKey forges a token the classic way: HS256 with the
// issuer's public RSA key as the HMAC secret.
func (f *matrixFixture) hmacWithPublicKey(t *testing.T, claims map[string]any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(f.rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	signing := f.compact(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	tok := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	f.tokens = append(f.tokens, tok)
	testsecret.Register(t, tok)
	return tok
}

// callAny calls md with an empty request (machine_id set to machine where
// the request has one) and returns the RPC's error.
func callAny(ctx context.Context, hc *http.Client, baseURL string, r rpc, token, machine string) error {
	md := r.md
	req := dynamicpb.NewMessage(md.Input())
	if fd := md.Input().Fields().ByName("machine_id"); fd != nil {
		req.Set(fd, protoreflect.ValueOfString(machine))
	}
	client := connect.NewClient[dynamicpb.Message, dynamicpb.Message](hc, baseURL+r.procedure,
		connect.WithSchema(md), connect.WithGRPC(),
		connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(md.Output())
			return nil
		}))
	setAuth := func(h http.Header) {
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
	}
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		stream := client.CallBidiStream(ctx)
		setAuth(stream.RequestHeader())
		if err := stream.Send(req); err != nil {
			_, rerr := stream.Receive()
			return rerr
		}
		_, err := stream.Receive()
		stream.CloseRequest()
		stream.CloseResponse()
		return err
	case md.IsStreamingServer():
		r := connect.NewRequest(req)
		setAuth(r.Header())
		stream, err := client.CallServerStream(ctx, r)
		if err != nil {
			return err
		}
		defer stream.Close()
		stream.Receive()
		return stream.Err()
	default:
		r := connect.NewRequest(req)
		setAuth(r.Header())
		_, err := client.CallUnary(ctx, r)
		return err
	}
}

// TestAuthorizationMatrix calls every RPC with every kind of credential and
// checks the exact outcome: Unauthenticated without valid credentials,
// PermissionDenied for a role the RPC is not open to, and through to the
// handler otherwise. It also checks that no token and no private key ever
// reaches the server's log.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	f := newMatrixFixture(t)
	logs := &lockedBuffer{}
	e := newEnvWith(t, "embedded", "grpc", envOptions{
		logs: logs,
		configure: func(c *Config) {
			c.JWT = &authn.JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSFile: f.jwksFile}
		},
	})
	f.addCerts(t, e.PKI)
	f.addTokens(t)
	f.addAgentTokens(t, e.Tokens)
	methods := servedProcedures(t)

	for name, cred := range f.creds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			hc := e.HTTP
			if cred.certFile != "" {
				hc = e.httpClientFiles(t, cred.certFile, cred.keyFile)
			}
			for _, r := range methods {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := callAny(ctx, hc, e.URL, r, cred.token, f.machine)
				cancel()
				code := connect.CodeOf(err)
				switch {
				case strings.HasPrefix(r.procedure, "/grpc.health.v1.Health/"):
					if err != nil {
						t.Errorf("%s: %v; health checks are open to anyone", r.procedure, err)
					}
				case cred.role == "":
					if code != connect.CodeUnauthenticated {
						t.Errorf("%s: got %v, want unauthenticated", r.procedure, describe(err))
					}
				case allowed(cred.role, r):
					if err != nil && (code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied) {
						t.Errorf("%s: role %s was refused: %v", r.procedure, cred.role, err)
					}
				default:
					if code != connect.CodePermissionDenied {
						t.Errorf("%s: role %s got %v, want permission_denied", r.procedure, cred.role, describe(err))
					}
				}
			}
		})
	}
	t.Cleanup(func() {
		out := logs.String()
		for _, tok := range f.tokens {
			if strings.Contains(out, tok) {
				t.Errorf("a bearer token appears in the server log")
			}
			// The signature alone is secret enough to matter.
			if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) > 16 && strings.Contains(out, parts[2]) {
				t.Errorf("a token signature appears in the server log")
			}
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("private key material appears in the server log")
		}
		if !strings.Contains(out, "rpc rejected") {
			t.Errorf("the server log has no rejected RPCs; was it captured?")
		}
	})
}

func describe(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}

// TestAgentSpeaksForItsMachineOnly checks that an agent certificate for
// machine A can report A's inventory and not B's.
func TestAgentSpeaksForItsMachineOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "connect")
	a := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"52:54:00:00:0a:01"}})
	b := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"52:54:00:00:0b:01"}})
	ca, err := pki.LoadCA(filepath.Join(e.PKI, pki.CACertFile), filepath.Join(e.PKI, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueClient(pki.AgentID("", a.GetId()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	agent := e.clientsOver(e.httpClientFiles(t, certFile, keyFile))
	inv := fullInventory("")

	_, err = agent.Agent.ReportInventory(t.Context(), connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: b.GetId(), Inventory: inv}))
	wantError(t, err, connect.CodePermissionDenied, a.GetId())

	resp, err := agent.Agent.ReportInventory(t.Context(), connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: a.GetId(), Inventory: inv}))
	if err != nil {
		t.Fatalf("agent of %s reporting for itself: %v", a.GetId(), err)
	}
	got := resp.Msg.GetMachine()
	if got.GetState().String() != "MACHINE_STATE_READY" || got.GetInventory().GetMemoryBytes() != 8<<30 {
		t.Errorf("after the report: state %s, inventory %v", got.GetState(), got.GetInventory())
	}
	other, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: b.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if other.Msg.GetMachine().GetInventory() != nil || other.Msg.GetMachine().GetState().String() != "MACHINE_STATE_DISCOVERED" {
		t.Errorf("machine B changed: %v", other.Msg.GetMachine())
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
