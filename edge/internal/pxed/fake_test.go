package pxed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The machine the fake API knows by default.
const (
	testMAC       = "52:54:00:12:34:56"
	testMachineID = "6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b"
	testHostname  = "node-1.lab.example"
	testLease     = "10.0.0.50" // the address leased to testMAC
	testToken     = "agent-token-0123456789-secret"
	testNonce     = "Ym9vdC1ub25jZS0wMTIzNDU2Nzg5LXNlY3JldA"
	testInstance  = "0b7e3c1a-5d2f-4e8a-9c6b-1f2e3d4c5b6a"
)

var testExpiry = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeBoot is a BootService that answers like the API: it knows machines
// by MAC, and starts the boot of a machine being discovered, and issues
// its agent token for the boot's nonce, only for the address leased to it.
// It returns a machine's instance's cloud-init data, and accepts its
// phone-home, only from that address too.
type fakeBoot struct {
	bootv1connect.UnimplementedBootServiceHandler

	mu sync.Mutex
	// machines are the API's answers by MAC, without token fields.
	machines map[string]*bootv1.GetBootConfigResponse
	// leases are the addresses leased to each MAC.
	leases map[string]string
	// err, if set, is what every call returns.
	err error
	// block makes every call wait until its context ends.
	block bool
	calls []*bootv1.GetBootConfigRequest
	// cloudInit are the cloud-init data of the machines with an
	// instance, by MAC.
	cloudInit map[string]*bootv1.CloudInit
	// phoneHomeErr, if set, is what PhoneHome returns.
	phoneHomeErr error
	phoneHomes   []*bootv1.PhoneHomeRequest
}

var _ bootv1connect.BootServiceHandler = (*fakeBoot)(nil)

func newFakeBoot() *fakeBoot {
	return &fakeBoot{
		machines: map[string]*bootv1.GetBootConfigResponse{
			testMAC: {
				MachineId: testMachineID,
				Hostname:  testHostname,
				Action:    bootv1.BootAction_BOOT_ACTION_DISCOVERY,
			},
		},
		leases:    map[string]string{testMAC: testLease},
		cloudInit: map[string]*bootv1.CloudInit{},
	}
}

func (f *fakeBoot) GetBootConfig(ctx context.Context, req *connect.Request[bootv1.GetBootConfigRequest]) (*connect.Response[bootv1.GetBootConfigResponse], error) {
	f.mu.Lock()
	f.calls = append(f.calls, proto.Clone(req.Msg).(*bootv1.GetBootConfigRequest))
	m, ok := f.machines[req.Msg.GetMac()]
	lease := f.leases[req.Msg.GetMac()]
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	resp := proto.Clone(m).(*bootv1.GetBootConfigResponse)
	start, nonce := req.Msg.GetStartBoot(), req.Msg.GetBootNonce()
	if resp.Action == bootv1.BootAction_BOOT_ACTION_DISCOVERY && (start || nonce != "") {
		switch {
		case req.Msg.GetClientAddress() == "" || req.Msg.GetClientAddress() != lease:
			resp.TokenWithheldReason = "client address " + req.Msg.GetClientAddress() + " does not hold the lease of " + req.Msg.GetMac()
		case start:
			resp.BootNonce = testNonce
		case nonce == testNonce:
			resp.AgentToken = testToken
			resp.AgentTokenExpireTime = timestamppb.New(testExpiry)
		default:
			resp.TokenWithheldReason = "the boot nonce is not the machine's current one"
		}
	}
	f.mu.Lock()
	ci := f.cloudInit[req.Msg.GetMac()]
	f.mu.Unlock()
	if ci != nil && req.Msg.GetCloudInit() && req.Msg.GetClientAddress() != "" && req.Msg.GetClientAddress() == lease {
		resp.CloudInit = proto.Clone(ci).(*bootv1.CloudInit)
	}
	return connect.NewResponse(resp), nil
}

// PhoneHome accepts the phone-home of the machine's instance from the
// address leased to it, as the API does.
func (f *fakeBoot) PhoneHome(ctx context.Context, req *connect.Request[bootv1.PhoneHomeRequest]) (*connect.Response[bootv1.PhoneHomeResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phoneHomes = append(f.phoneHomes, proto.Clone(req.Msg).(*bootv1.PhoneHomeRequest))
	if f.phoneHomeErr != nil {
		return nil, f.phoneHomeErr
	}
	if _, ok := f.machines[req.Msg.GetMac()]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no machine has MAC "+req.Msg.GetMac()))
	}
	if req.Msg.GetClientAddress() != f.leases[req.Msg.GetMac()] {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("client address "+req.Msg.GetClientAddress()+" does not hold the lease of "+req.Msg.GetMac()))
	}
	if ci := f.cloudInit[req.Msg.GetMac()]; ci == nil || ci.GetInstanceId() != req.Msg.GetInstanceId() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("machine is not booting instance "+req.Msg.GetInstanceId()))
	}
	return connect.NewResponse(&bootv1.PhoneHomeResponse{}), nil
}

// setCloudInit gives the machine with mac an instance with ci.
func (f *fakeBoot) setCloudInit(mac string, ci *bootv1.CloudInit) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cloudInit[mac] = ci
}

// phoneHomeCalls returns the PhoneHome calls so far.
func (f *fakeBoot) phoneHomeCalls() []*bootv1.PhoneHomeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*bootv1.PhoneHomeRequest(nil), f.phoneHomes...)
}

// set replaces the machine with mac.
func (f *fakeBoot) set(mac string, m *bootv1.GetBootConfigResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.machines[mac] = m
}

func (f *fakeBoot) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeBoot) lastCall(t *testing.T) *bootv1.GetBootConfigRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		t.Fatal("the API was not called")
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeBoot) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// serve serves f over HTTP and returns its URL.
func (f *fakeBoot) serve(t *testing.T) string {
	t.Helper()
	testsecret.Register(t, testToken)
	mux := http.NewServeMux()
	mux.Handle(bootv1connect.NewBootServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// client returns a BootAPI that calls f over HTTP, through the generated
// client, as the daemon does.
func (f *fakeBoot) client(t *testing.T) BootAPI {
	t.Helper()
	return NewSDKAPI(bootv1connect.NewBootServiceClient(http.DefaultClient, f.serve(t)))
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writeCA writes a self-signed CA certificate (PEM) to dir/name and
// returns its path and contents.
func writeCA(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, p, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, string(p)
}

// testEnv is an HTTPHandler wired to a fake API, with its metrics and log.
type testEnv struct {
	fake      *fakeBoot
	h         *HTTPHandler
	metrics   *Metrics
	log       *syncbuf.Buffer
	artifacts string // the artifacts directory
	outside   string // a file next to it, outside, that must never be served
	caPEM     string // the agent's CA bundle
}

const secretContent = "this file is outside every served directory"

// newTestEnv returns a handler for a valid configuration (edited by edit)
// with an artifacts directory holding scout/vmlinuz, scout/scout.cpio.gz,
// a directory, and a symbolic link out of it.
func newTestEnv(t *testing.T, edit func(*Config)) *testEnv {
	t.Helper()
	env := &testEnv{fake: newFakeBoot(), log: &syncbuf.Buffer{}}
	top := t.TempDir()
	env.artifacts = filepath.Join(top, "artifacts")
	env.outside = filepath.Join(top, "secret")
	mustWrite(t, env.outside, []byte(secretContent))
	mustWrite(t, filepath.Join(env.artifacts, "scout", "vmlinuz"), kernelBytes())
	mustWrite(t, filepath.Join(env.artifacts, "scout", "scout.cpio.gz"), []byte("initrd"))
	if err := os.Symlink(env.outside, filepath.Join(env.artifacts, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../secret", filepath.Join(env.artifacts, "scout", "relative-link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("vmlinuz", filepath.Join(env.artifacts, "scout", "link-in")); err != nil {
		t.Fatal(err)
	}
	var caFile string
	caFile, env.caPEM = writeCA(t, top, "agent-ca.crt")

	c := DefaultConfig()
	c.APIURL = "http://127.0.0.1:1"
	c.ArtifactsDir = env.artifacts
	c.TFTPListen = ""
	c.AgentAPIURL = "https://198.18.0.1:1079"
	c.AgentCAFile = caFile
	if edit != nil {
		edit(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	env.metrics = m
	h, err := NewHTTPHandler(&c, env.fake.client(t), m, testLogger(env.log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	env.h = h
	return env
}

// kernelBytes is the test kernel: 10000 bytes, each its offset mod 251.
func kernelBytes() []byte {
	b := make([]byte, 10000)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// get sends GET target from remote (host:port) to the handler.
func (env *testEnv) get(target, remote string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = remote
	req.Host = "198.18.0.2:8080"
	for k, v := range header {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	env.h.ServeHTTP(w, req)
	return w
}

// staticAPI answers every call with resp.
type staticAPI struct {
	resp *bootv1.GetBootConfigResponse
}

func (s *staticAPI) GetBootConfig(context.Context, *bootv1.GetBootConfigRequest) (*bootv1.GetBootConfigResponse, error) {
	return proto.Clone(s.resp).(*bootv1.GetBootConfigResponse), nil
}

func (s *staticAPI) PhoneHome(context.Context, *bootv1.PhoneHomeRequest) (*bootv1.PhoneHomeResponse, error) {
	return nil, connect.NewError(connect.CodeUnimplemented, nil)
}

// httptestRequest is a GET of target from remote.
func httptestRequest(target, remote string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = remote
	return req
}

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}
