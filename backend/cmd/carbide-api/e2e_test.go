package main

// End-to-end tests of the carbide-api binary with the real peers a user
// would use: grpcurl and buf curl (built into ../../../bin by `make tools`),
// several API processes on one PostgreSQL database, and restarts.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/pgtest"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	_ "github.com/jackc/pgx/v5/stdlib"
	"google.golang.org/protobuf/proto"
)

var apiBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "carbide-api-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	apiBinary = filepath.Join(dir, "carbide-api")
	if out, err := exec.Command("go", "build", "-o", apiBinary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build carbide-api: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// tool returns the path of a pinned tool built by `make tools`.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "..", "..", "bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found at %s: run `make tools` in the repository root first", name, path)
	}
	return path
}

// apiProc is a running carbide-api process.
type apiProc struct {
	cmd  *exec.Cmd
	addr string
	// pki is the directory of its development PKI.
	pki  string
	log  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`msg="carbide-api listening" address=(\S+)`)

// startAPI starts carbide-api --dev on a free port with its data (and
// development PKI) in dataDir and the given flags, and waits until it
// serves. It is stopped at cleanup.
func startAPI(t *testing.T, dataDir string, args ...string) *apiProc {
	t.Helper()
	return startAPIArgs(t, dataDir, append([]string{"--dev"}, args...)...)
}

// startAPIArgs is startAPI without --dev: args choose how it serves.
func startAPIArgs(t *testing.T, dataDir string, args ...string) *apiProc {
	t.Helper()
	return startAPIEnv(t, dataDir, nil, args...)
}

// startAPIEnv is startAPIArgs with env added to the process's environment.
func startAPIEnv(t *testing.T, dataDir string, env []string, args ...string) *apiProc {
	t.Helper()
	cmd := exec.Command(apiBinary, append([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start carbide-api: %v", err)
	}
	p := &apiProc{cmd: cmd, pki: filepath.Join(dataDir, "pki"), log: &syncBuffer{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.log.Write([]byte(line + "\n"))
			if m := listening.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case p.addr = <-addr:
		testsecret.RegisterFiles(t, filepath.Join(p.pki, "*.key"))
	case err := <-p.done:
		p.done <- err
		t.Fatalf("carbide-api exited before serving: %v\n%s", err, p.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("carbide-api did not start serving within 60s\n%s", p.log)
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit, then copies the server's
// log to the test output, which `make go-test` checks for secrets.
func (p *apiProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	defer func() { fmt.Fprintf(t.Output(), "carbide-api log:\n%s", p.log) }()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("carbide-api did not exit cleanly: %v\n%s", err, p.log)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("carbide-api did not stop within 30s of SIGTERM\n%s", p.log)
	}
}

func (p *apiProc) url() string { return "https://" + p.addr }

// client returns an HTTP/2 client that trusts the API's development CA and
// presents the admin certificate.
func (p *apiProc) client(t *testing.T) *http.Client {
	t.Helper()
	roots, err := pki.LoadPool(filepath.Join(p.pki, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(p.pki, "admin.crt"), filepath.Join(p.pki, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       protocols,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}
}

// tlsFlags are grpcurl's (and, with two dashes, buf curl's) flags to trust
// the API and present the admin certificate.
func (p *apiProc) tlsFlags(dashes string) []string {
	return []string{
		dashes + "cacert", filepath.Join(p.pki, "ca.crt"),
		dashes + "cert", filepath.Join(p.pki, "admin.crt"),
		dashes + "key", filepath.Join(p.pki, "admin.key"),
	}
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCommandLineClients drives the binary with grpcurl and buf curl: the
// services are listed by reflection, a segment created with grpcurl reads
// back with buf curl over gRPC, gRPC-Web and Connect, and a bad request
// gets InvalidArgument naming the field.
func TestCommandLineClients(t *testing.T) {
	t.Parallel()
	grpcurl, buf := tool(t, "grpcurl"), tool(t, "buf")
	api := startAPI(t, t.TempDir())
	grpcurlTLS := api.tlsFlags("-")

	list := runTool(t, grpcurl, append(grpcurlTLS, api.addr, "list")...)
	for _, want := range []string{
		"carbide.machine.v1.MachineService",
		"carbide.network.v1.SegmentService",
		"carbide.network.v1.AddressService",
		"carbide.watch.v1.WatchService",
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
	} {
		if !strings.Contains(list, want+"\n") {
			t.Errorf("grpcurl list lacks %s; got:\n%s", want, list)
		}
	}

	if health := runTool(t, grpcurl, append(grpcurlTLS, api.addr, "grpc.health.v1.Health/Check")...); !strings.Contains(health, `"SERVING"`) {
		t.Errorf("grpc.health.v1.Health/Check = %s, want SERVING", health)
	}

	body := `{"segment":{"name":"rack1","prefix":"10.0.0.0/24","gateway":"10.0.0.1","dns_servers":["10.0.0.2"],` +
		`"domain":"rack1.example.net","ranges":[{"start":"10.0.0.10","end":"10.0.0.200"}],` +
		`"reservations":[{"mac":"52:54:00:00:00:01","address":"10.0.0.5"}]}}`
	out := runTool(t, grpcurl, append(grpcurlTLS, "-d", body, api.addr, "carbide.network.v1.SegmentService/CreateSegment")...)
	var created struct {
		Segment struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"segment"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Segment.ID == "" {
		t.Fatalf("grpcurl CreateSegment output is not a segment: %v\n%s", err, out)
	}

	for _, protocol := range []string{"grpc", "grpcweb", "connect"} {
		t.Run("buf curl "+protocol, func(t *testing.T) {
			args := append([]string{"curl", "--protocol", protocol}, api.tlsFlags("--")...)
			args = append(args, "-d", fmt.Sprintf(`{"id":%q}`, created.Segment.ID),
				api.url()+"/carbide.network.v1.SegmentService/GetSegment")
			out := runTool(t, buf, args...)
			var got struct {
				Segment struct {
					ID           string `json:"id"`
					Name         string `json:"name"`
					Prefix       string `json:"prefix"`
					Reservations []struct {
						Mac     string `json:"mac"`
						Address string `json:"address"`
					} `json:"reservations"`
				} `json:"segment"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("buf curl output is not JSON: %v\n%s", err, out)
			}
			s := got.Segment
			if s.ID != created.Segment.ID || s.Name != "rack1" || s.Prefix != "10.0.0.0/24" ||
				len(s.Reservations) != 1 || s.Reservations[0].Address != "10.0.0.5" {
				t.Errorf("buf curl --protocol %s read back %+v", protocol, s)
			}
		})
	}

	// A user with a bearer token instead of a certificate.
	viewer := strings.TrimSpace(runTool(t, apiBinary, "dev-token", "--data-dir", filepath.Dir(api.pki), "--role", "viewer"))
	testsecret.Register(t, viewer)
	bearer := []string{"-cacert", filepath.Join(api.pki, "ca.crt"), "-H", "authorization: Bearer " + viewer}
	if got := runTool(t, grpcurl, append(bearer, "-d", fmt.Sprintf(`{"id":%q}`, created.Segment.ID),
		api.addr, "carbide.network.v1.SegmentService/GetSegment")...); !strings.Contains(got, created.Segment.ID) {
		t.Errorf("viewer token: GetSegment printed %s", got)
	}
	denied, err := exec.Command(grpcurl, append(bearer, "-d", `{"segment":{"name":"other","prefix":"10.9.0.0/24"}}`,
		api.addr, "carbide.network.v1.SegmentService/CreateSegment")...).CombinedOutput()
	if err == nil || !strings.Contains(string(denied), "PermissionDenied") {
		t.Errorf("viewer token creating a segment: want PermissionDenied, got %v\n%s", err, denied)
	}
	if strings.Contains(api.log.String(), viewer) {
		t.Error("the bearer token appears in the server log")
	}
	anonymous, err := exec.Command(grpcurl, "-cacert", filepath.Join(api.pki, "ca.crt"), api.addr, "list").CombinedOutput()
	if err == nil || !strings.Contains(string(anonymous), "Unauthenticated") {
		t.Errorf("grpcurl without credentials: want Unauthenticated, got %v\n%s", err, anonymous)
	}

	cmd := exec.Command(grpcurl, append(grpcurlTLS, "-d", `{"segment":{"name":"bad","prefix":"10.1.0.1/24"}}`,
		api.addr, "carbide.network.v1.SegmentService/CreateSegment")...)
	bad, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("creating a segment with prefix 10.1.0.1/24 succeeded:\n%s", bad)
	}
	if !strings.Contains(string(bad), "InvalidArgument") || !strings.Contains(string(bad), "segment.prefix") {
		t.Errorf("want InvalidArgument naming segment.prefix, got:\n%s", bad)
	}
}

// TestConcurrentAllocationAcrossProcesses runs two API processes on one
// PostgreSQL database and sends 200 concurrent allocations for 100 MACs
// through both: each MAC gets one address, no address is shared, and the
// database agrees. Then it fills the pool and expects ResourceExhausted.
func TestConcurrentAllocationAcrossProcesses(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Database(t)
	// Both processes share one PKI, so one client certificate works with
	// both; it is made first, as a deployment would.
	dataDir := t.TempDir()
	if _, err := pki.EnsureDev(filepath.Join(dataDir, "pki"), "", nil); err != nil {
		t.Fatal(err)
	}
	// Both start at once on an empty database: migrations must take turns.
	var apis [2]*apiProc
	var wg sync.WaitGroup
	for i := range apis {
		wg.Add(1)
		go func() {
			defer wg.Done()
			apis[i] = startAPI(t, dataDir, "--database-url", dbURL)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	client := apis[0].client(t)
	var addrs [2]networkv1connect.AddressServiceClient
	for i, api := range apis {
		addrs[i] = networkv1connect.NewAddressServiceClient(client, api.url(), connect.WithGRPC())
	}
	segments := networkv1connect.NewSegmentServiceClient(client, apis[0].url(), connect.WithGRPC())
	ctx := context.Background()
	seg, err := segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "pool", Prefix: "10.20.0.0/24", Gateway: "10.20.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.20.0.2", End: "10.20.0.254"}},
	}}))
	if err != nil {
		t.Fatalf("CreateSegment: %v", err)
	}
	segID := seg.Msg.GetSegment().GetId()
	const poolSize = 253

	allocate := func(api int, mac string) (string, error) {
		resp, err := addrs[api].AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: segID, Mac: mac}))
		if err != nil {
			return "", err
		}
		return resp.Msg.GetLease().GetAddress(), nil
	}
	mac := func(i int) string { return fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff) }

	const macs = 100
	results := make([][2]string, macs)
	errs := make(chan error, 2*macs)
	for i := range 2 * macs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, call := i%macs, i/macs
			a, err := allocate((i/2)%2, mac(m))
			if err != nil {
				errs <- fmt.Errorf("allocate %s: %w", mac(m), err)
				return
			}
			results[m][call] = a
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	owner := map[string]int{}
	for m, r := range results {
		if r[0] != r[1] {
			t.Errorf("%s got two addresses: %s and %s", mac(m), r[0], r[1])
		}
		if prev, taken := owner[r[0]]; taken {
			t.Errorf("%s was handed to %s and %s", r[0], mac(prev), mac(m))
		}
		owner[r[0]] = m
	}
	again, err := allocate(1, mac(7))
	if err != nil || again != results[7][0] {
		t.Errorf("repeated allocate for %s = %q, %v; want %s", mac(7), again, err, results[7][0])
	}

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkDB := func(want int) {
		t.Helper()
		var rows, addresses, holders int
		err := db.QueryRow(`SELECT count(*), count(DISTINCT address), count(DISTINCT mac) FROM leases WHERE segment_id = $1`, segID).
			Scan(&rows, &addresses, &holders)
		if err != nil {
			t.Fatal(err)
		}
		if rows != want || addresses != want || holders != want {
			t.Errorf("database holds %d leases, %d distinct addresses, %d distinct MACs; want %d of each", rows, addresses, holders, want)
		}
	}
	checkDB(macs)

	// Fill the rest of the pool through both processes at once.
	errs = make(chan error, poolSize)
	for i := macs; i < poolSize; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := allocate(i%2, mac(i)); err != nil {
				errs <- fmt.Errorf("allocate %s: %w", mac(i), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkDB(poolSize)
	_, err = allocate(0, mac(poolSize))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("allocate beyond the pool: got %v, want ResourceExhausted", err)
	} else if !strings.Contains(err.Error(), "no free address") {
		t.Errorf("ResourceExhausted message does not explain: %v", err)
	}
}

// TestRestartKeepsData stops and restarts the API on each store and reads
// back what was written before.
func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"embedded", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dataDir, args := t.TempDir(), []string{}
			if kind == "postgres" {
				args = []string{"--database-url", pgtest.Database(t)}
			}
			ctx := context.Background()

			first := startAPI(t, dataDir, args...)
			client := first.client(t)
			segments := networkv1connect.NewSegmentServiceClient(client, first.url())
			seg, err := segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
				Name: "persist", Prefix: "192.168.10.0/24",
				Ranges: []*networkv1.AddressRange{{Start: "192.168.10.100", End: "192.168.10.150"}},
			}}))
			if err != nil {
				t.Fatalf("CreateSegment: %v", err)
			}
			segID := seg.Msg.GetSegment().GetId()
			machines := machinev1connect.NewMachineServiceClient(client, first.url())
			m, err := machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
				Hostname: "node1", Macs: []string{"52:54:00:aa:bb:01"}, Labels: map[string]string{"rack": "r1"},
			}))
			if err != nil {
				t.Fatalf("CreateMachine: %v", err)
			}
			address := networkv1connect.NewAddressServiceClient(client, first.url())
			lease, err := address.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: segID, Mac: "52:54:00:aa:bb:01"}))
			if err != nil {
				t.Fatalf("AllocateAddress: %v", err)
			}
			first.stop(t)

			second := startAPI(t, dataDir, args...)
			segments = networkv1connect.NewSegmentServiceClient(client, second.url())
			if got, err := segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: segID})); err != nil {
				t.Errorf("GetSegment after restart: %v", err)
			} else if got.Msg.GetSegment().GetName() != "persist" {
				t.Errorf("segment after restart: %v", got.Msg.GetSegment())
			}
			machines = machinev1connect.NewMachineServiceClient(client, second.url())
			got, err := machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: m.Msg.GetMachine().GetId()}))
			if err != nil {
				t.Fatalf("GetMachine after restart: %v", err)
			}
			ifs := got.Msg.GetMachine().GetInterfaces()
			if got.Msg.GetMachine().GetHostname() != "node1" || len(ifs) != 1 || ifs[0].GetAddress() != lease.Msg.GetLease().GetAddress() {
				t.Errorf("machine after restart: %v; want node1 with address %s", got.Msg.GetMachine(), lease.Msg.GetLease().GetAddress())
			}
			address = networkv1connect.NewAddressServiceClient(client, second.url())
			renewed, err := address.AllocateAddress(ctx, connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: segID, Mac: "52:54:00:aa:bb:01"}))
			if err != nil || renewed.Msg.GetLease().GetAddress() != lease.Msg.GetLease().GetAddress() {
				t.Errorf("allocate after restart = %v, %v; want %s", renewed, err, lease.Msg.GetLease().GetAddress())
			}
		})
	}
}

// TestShutdownEndsWatchStreams checks that SIGTERM stops the server
// promptly even while a Watch stream is open, and that the stream's client
// is told why.
func TestShutdownEndsWatchStreams(t *testing.T) {
	t.Parallel()
	api := startAPI(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := watchv1connect.NewWatchServiceClient(api.client(t), api.url(), connect.WithGRPC())
	stream, err := watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{}))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if !stream.Receive() || stream.Msg().GetType() != watchv1.EventType_EVENT_TYPE_SYNCED {
		t.Fatalf("first event of a watch on an empty store = %v, %v; want SYNCED", stream.Msg(), stream.Err())
	}
	start := time.Now()
	api.stop(t)
	if stream.Receive() {
		t.Errorf("stream delivered %v after shutdown", stream.Msg())
	}
	if code := connect.CodeOf(stream.Err()); code != connect.CodeUnavailable {
		t.Errorf("stream ended with %v, want Unavailable", stream.Err())
	}
	t.Logf("shutdown with an open stream took %s", time.Since(start))
}

// TestDevCertForAgent issues an agent certificate with `dev-cert` and uses
// it: the agent reports its own machine's inventory and nobody else's.
func TestDevCertForAgent(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	api := startAPI(t, dataDir)
	ctx := context.Background()
	machines := machinev1connect.NewMachineServiceClient(api.client(t), api.url())
	var ids []string
	for _, mac := range []string{"52:54:00:00:aa:01", "52:54:00:00:bb:01"} {
		m, err := machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{Macs: []string{mac}}))
		if err != nil {
			t.Fatalf("CreateMachine: %v", err)
		}
		ids = append(ids, m.Msg.GetMachine().GetId())
	}
	out := runTool(t, apiBinary, "dev-cert", "--data-dir", dataDir, "--agent", ids[0], "--out", t.TempDir())
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "spiffe://carbide.local/agent/"+ids[0] {
		t.Fatalf("dev-cert printed %q", out)
	}
	hc := api.client(t)
	pair, err := tls.LoadX509KeyPair(lines[1], lines[2])
	if err != nil {
		t.Fatal(err)
	}
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
	agent := agentv1connect.NewAgentServiceClient(hc, api.url())
	inv := &machinev1.Inventory{System: &machinev1.SystemInfo{Serial: "SN-1"}, MemoryBytes: 4 << 30}
	_, err = agent.ReportInventory(ctx, connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: ids[1], Inventory: inv}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("agent of %s reporting for %s: %v, want permission_denied", ids[0], ids[1], err)
	}
	resp, err := agent.ReportInventory(ctx, connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: ids[0], Inventory: inv}))
	if err != nil {
		t.Fatalf("agent reporting for its own machine: %v", err)
	}
	// Memory alone fails the hardware checks (no processor, disk or NIC).
	if m := resp.Msg.GetMachine(); m.GetState() != machinev1.MachineState_MACHINE_STATE_FAILED ||
		m.GetInventory().GetSystem().GetSerial() != "SN-1" || m.GetHardwareId() != "serial:SN-1" {
		t.Errorf("after the report: %v", m)
	}
}

// TestServingModeIsExplicit checks that the development PKI and token
// issuer come only with --dev: without a certificate, --dev or
// --insecure-plaintext the server refuses to start and says what to pass;
// the old --plaintext is refused with a message naming the new flags;
// contradictory flags are refused; and --insecure-plaintext issues nothing,
// so a token of a development issuer left in the data directory is refused.
func TestServingModeIsExplicit(t *testing.T) {
	t.Parallel()
	refused := map[string]struct {
		args []string
		want []string
	}{
		"no certificate":  {nil, []string{"no TLS certificate", "--tls-cert", "--dev", "--insecure-plaintext"}},
		"old --plaintext": {[]string{"--plaintext"}, []string{"--plaintext was renamed --insecure-plaintext", "--dev"}},
		"dev and a certificate": {[]string{"--dev", "--tls-cert", "server.crt", "--tls-key", "server.key"},
			[]string{"dev: cannot be combined with tls-cert"}},
		"dev and plaintext": {[]string{"--dev", "--insecure-plaintext"}, []string{"dev and insecure-plaintext: choose one"}},
		"plaintext and a client CA": {[]string{"--insecure-plaintext", "--client-ca", "ca.crt"},
			[]string{"insecure-plaintext: cannot be combined"}},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, apiBinary, append([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("carbide-api %s started (%v); want a refusal\n%s", strings.Join(tc.args, " "), err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("carbide-api %s: output lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dataDir, "pki")); !os.IsNotExist(err) {
				t.Errorf("a refused start left %s/pki behind (%v)", dataDir, err)
			}
		})
	}

	t.Run("insecure plaintext issues nothing", func(t *testing.T) {
		t.Parallel()
		// A development issuer from an earlier --dev run stays in the data
		// directory; a plaintext server must not trust it.
		dataDir := t.TempDir()
		startAPI(t, dataDir).stop(t)
		token := strings.TrimSpace(runTool(t, apiBinary, "dev-token", "--data-dir", dataDir, "--role", "admin"))
		keyFile := filepath.Join(dataDir, "pki", pki.AgentTokenKeyFile)
		if err := os.Remove(keyFile); err != nil {
			t.Fatal(err)
		}

		api := startAPIArgs(t, dataDir, "--insecure-plaintext")
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{Protocols: protocols}}
		segments := networkv1connect.NewSegmentServiceClient(hc, "http://"+api.addr, connect.WithGRPC())
		req := connect.NewRequest(&networkv1.ListSegmentsRequest{})
		req.Header().Set("Authorization", "Bearer "+token)
		_, err := segments.ListSegments(context.Background(), req)
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("a development token against --insecure-plaintext: %v; want unauthenticated", err)
		}
		if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
			t.Errorf("--insecure-plaintext created the agent-token key %s (%v)", keyFile, err)
		}
		for _, want := range []string{"serving without TLS (--insecure-plaintext)", "no --agent-token-key"} {
			if !strings.Contains(api.log.String(), want) {
				t.Errorf("the log lacks %q:\n%s", want, api.log)
			}
		}
		if strings.Contains(api.log.String(), "bearer tokens accepted") {
			t.Errorf("--insecure-plaintext set up a token issuer:\n%s", api.log)
		}
	})
}

// TestRequestSizeLimit sends requests over --max-request-bytes (4 MiB by
// default) to the carbide-api process: a 64 MiB body and a 1 MiB gzip body
// that inflates to 1 GiB, over Connect and gRPC, with and without
// credentials. Each is refused with ResourceExhausted naming the limit and
// its flag, counted in carbide_api_limit_hits_total, and the process's peak
// resident memory grows by less than the limit.
func TestRequestSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 4 << 20
	api := startAPI(t, t.TempDir())
	admin := api.client(t)
	anonymous := api.client(t)
	anonymous.Transport.(*http.Transport).TLSClientConfig.Certificates = nil

	plain := make([]byte, 64<<20)
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zeros := make([]byte, 1<<20)
	for range 1 << 10 {
		zw.Write(zeros)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the gzip body holding 1 GiB is %d bytes", bomb.Len())

	// Normal work first, so that the peak below is the server's working
	// size: requests of exactly the limit to the same procedure, over
	// both protocols, plain and gzip-encoded. (The field's tag and length
	// take 5 bytes.)
	near, err := proto.Marshal(&networkv1.ListSegmentsRequest{PageToken: strings.Repeat("a", limit-5)})
	if err != nil || len(near) != limit {
		t.Fatalf("a message of the limit: %d bytes, %v", len(near), err)
	}
	var nearGzip bytes.Buffer
	zw = gzip.NewWriter(&nearGzip)
	zw.Write(near)
	zw.Close()
	const procedure = "/carbide.network.v1.SegmentService/ListSegments"
	// The working size is the peak once it stops growing: rounds of such
	// requests until ten in a row leave it where it was.
	peak, steady := int64(0), 0
	for round := 0; steady < 10; round++ {
		if round == 100 {
			t.Fatalf("the peak resident memory still grows after %d rounds of requests under the limit: %d KiB", round, peak)
		}
		for _, protocol := range []string{"connect", "grpc"} {
			for _, gzipped := range []bool{false, true} {
				data := near
				if gzipped {
					data = nearGzip.Bytes()
				}
				if code, msg := rawCall(t, admin, api.url()+procedure, protocol, data, gzipped); code == "resource_exhausted" {
					t.Fatalf("a request of the limit (%s, gzip %v): %s %s", protocol, gzipped, code, msg)
				}
			}
		}
		if hwm := procStatus(t, api.cmd.Process.Pid)["VmHWM"]; hwm > peak {
			peak, steady = hwm, 0
		} else {
			steady++
		}
	}
	before := procStatus(t, api.cmd.Process.Pid)

	// Twice, to see that nothing accumulates.
	for range 2 {
		for _, caller := range []struct {
			name string
			hc   *http.Client
		}{{"admin", admin}, {"anonymous", anonymous}} {
			for _, protocol := range []string{"connect", "grpc"} {
				for _, body := range []struct {
					name    string
					data    []byte
					gzipped bool
				}{{"64 MiB", plain, false}, {"gzip of 1 GiB", bomb.Bytes(), true}} {
					code, msg := rawCall(t, caller.hc, api.url()+procedure, protocol, body.data, body.gzipped)
					if code != "resource_exhausted" || !strings.Contains(msg, "4194304 bytes (4 MiB)") || !strings.Contains(msg, "--max-request-bytes") {
						t.Errorf("%s, %s, %s: %s %q; want resource_exhausted naming the limit and --max-request-bytes",
							caller.name, protocol, body.name, code, msg)
					}
				}
			}
		}
	}
	after := procStatus(t, api.cmd.Process.Pid)
	t.Logf("carbide-api peak resident memory: %d KiB after normal work, %d KiB after the oversized requests", before["VmHWM"], after["VmHWM"])
	if grown := (after["VmHWM"] - before["VmHWM"]) << 10; grown >= limit {
		t.Errorf("the oversized requests raised the peak resident memory by %d bytes; want less than the limit, %d", grown, limit)
	}
	if got := scrape(t, admin, api.url(), `carbide_api_limit_hits_total{limit="request_bytes"}`); got != 16 {
		t.Errorf(`carbide_api_limit_hits_total{limit="request_bytes"} = %v, want 16`, got)
	}
}

// rawCall sends body as the request message of procedure over protocol
// ("connect" or "grpc"), gzip-encoded if gzipped says so, and returns the
// error code and message of the answer ("ok" if none).
func rawCall(t *testing.T, hc *http.Client, url, protocol string, body []byte, gzipped bool) (code, msg string) {
	t.Helper()
	if protocol == "grpc" {
		prefix := []byte{0, 0, 0, 0, 0}
		if gzipped {
			prefix[0] = 1
		}
		binary.BigEndian.PutUint32(prefix[1:], uint32(len(body)))
		body = append(prefix, body...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch protocol {
	case "connect":
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Connect-Protocol-Version", "1")
		if gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
	case "grpc":
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		if gzipped {
			req.Header.Set("Grpc-Encoding", "gzip")
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s call: %v", protocol, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s call: read the answer: %v", protocol, err)
	}
	if protocol == "connect" {
		if resp.StatusCode == http.StatusOK {
			return "ok", ""
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(answer, &e); err != nil {
			t.Fatalf("connect error body %q: %v", answer, err)
		}
		return e.Code, e.Message
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	message := resp.Trailer.Get("Grpc-Message")
	if message == "" {
		message = resp.Header.Get("Grpc-Message")
	}
	n, err := strconv.Atoi(status)
	if err != nil {
		t.Fatalf("gRPC answer without a status (HTTP %d)", resp.StatusCode)
	}
	message, _ = neturl.PathUnescape(message)
	if n == 0 {
		return "ok", ""
	}
	return connect.Code(n).String(), message
}

// procStatus reads the kB fields of /proc/<pid>/status (VmRSS, VmHWM...).
func procStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if f := strings.Fields(value); ok && len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[name] = n
		}
	}
	return out
}

// scrape returns the value of one sample of the API's /metrics.
func scrape(t *testing.T, hc *http.Client, base, sample string) float64 {
	t.Helper()
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", sample)
	return 0
}
