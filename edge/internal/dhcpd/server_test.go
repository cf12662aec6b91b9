package dhcpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"
)

// waitFor polls cond until it holds or 5 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readReply reads one DHCP packet from c.
func readReply(t *testing.T, c net.PacketConn) *dhcpv4.DHCPv4 {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read a reply: %v", err)
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return p
}

// TestServe drives the socket loop over loopback: a relay agent's DISCOVER
// gets an OFFER at the relay's port, garbage is counted, and the loop ends
// with its context.
func TestServe(t *testing.T) {
	t.Parallel()
	conn := listenUDP(t)
	relay := listenUDP(t)
	cfg := testConfig()
	cfg.Port = relay.LocalAddr().(*net.UDPAddr).Port
	h, m := testHandler(t, cfg, &fakeAPI{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.serve(ctx, conn, testIface, 8) }()

	if _, err := relay.WriteTo([]byte("not DHCP"), conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	discover := packet(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(ip("127.0.0.1")),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{9, 9, 9, 9}))
	if _, err := relay.WriteTo(discover.ToBytes(), conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	offer := readReply(t, relay)
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.TransactionID != discover.TransactionID {
		t.Fatalf("got %s xid %s, want an OFFER for xid %s", offer.MessageType(), offer.TransactionID, discover.TransactionID)
	}
	waitFor(t, "the reply and the drop to be counted", func() bool {
		return counter(t, m.replies, "offer") == 1 && counter(t, m.drops, reasonMalformed) == 1
	})

	cancel()
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestServeBusy: packets past max-in-flight are dropped and counted, not
// queued behind a slow API.
func TestServeBusy(t *testing.T) {
	t.Parallel()
	conn := listenUDP(t)
	client := listenUDP(t)
	cfg := testConfig()
	cfg.APITimeout = time.Minute
	api := &fakeAPI{block: true}
	h, m := testHandler(t, cfg, api, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.serve(ctx, conn, testIface, 1) }()

	b := packet(t, dhcpv4.MessageTypeDiscover).ToBytes()
	client.WriteTo(b, conn.LocalAddr())
	waitFor(t, "the first packet to reach the API", func() bool { return api.calls() == 1 })
	client.WriteTo(b, conn.LocalAddr())
	waitFor(t, "the second packet to be dropped", func() bool { return counter(t, m.drops, reasonBusy) == 1 })

	cancel() // ends the blocked call, and the loop
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if api.calls() != 1 {
		t.Errorf("%d API calls, want 1", api.calls())
	}
}

// TestServeBusyFinishesExchanges: with every worker for new exchanges
// busy, DISCOVERs are dropped but a REQUEST still gets a worker of its
// own lane, so an overloaded daemon finishes the exchanges it started.
func TestServeBusyFinishesExchanges(t *testing.T) {
	t.Parallel()
	conn := listenUDP(t)
	client := listenUDP(t)
	cfg := testConfig()
	cfg.APITimeout = time.Minute
	api := &fakeAPI{block: true}
	h, m := testHandler(t, cfg, api, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.serve(ctx, conn, testIface, 1) }()

	discover := packet(t, dhcpv4.MessageTypeDiscover).ToBytes()
	client.WriteTo(discover, conn.LocalAddr())
	waitFor(t, "the DISCOVER to reach the API", func() bool { return api.calls() == 1 })
	client.WriteTo(discover, conn.LocalAddr())
	waitFor(t, "the second DISCOVER to be dropped", func() bool { return counter(t, m.drops, reasonBusy) == 1 })
	request := packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 7)))).ToBytes()
	client.WriteTo(request, conn.LocalAddr())
	waitFor(t, "the REQUEST to reach the API", func() bool { return api.calls() == 2 })
	if n := counter(t, m.drops, reasonBusy); n != 1 {
		t.Errorf("%v packets dropped as busy, want 1 (the second DISCOVER)", n)
	}

	cancel() // ends the blocked calls, and the loop
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// connectFake serves a fakeAPI as the Connect DHCPService.
type connectFake struct {
	dhcpv1connect.UnimplementedDHCPServiceHandler
	api *fakeAPI
}

func (c connectFake) Lease(ctx context.Context, req *connect.Request[dhcpv1.LeaseRequest]) (*connect.Response[dhcpv1.LeaseResponse], error) {
	resp, err := c.api.Lease(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// LeaseBatch answers each request as Lease does.
func (c connectFake) LeaseBatch(ctx context.Context, req *connect.Request[dhcpv1.LeaseBatchRequest]) (*connect.Response[dhcpv1.LeaseBatchResponse], error) {
	out := &dhcpv1.LeaseBatchResponse{}
	for _, r := range req.Msg.GetRequests() {
		resp, err := c.api.Lease(ctx, r)
		if err != nil {
			out.Results = append(out.Results, &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Error{Error: &dhcpv1.LeaseError{
				Code: connect.CodeOf(err).String(), Message: err.Error()}}})
			continue
		}
		out.Results = append(out.Results, &dhcpv1.LeaseResult{Result: &dhcpv1.LeaseResult_Lease{Lease: resp}})
	}
	return connect.NewResponse(out), nil
}

func (c connectFake) Inform(ctx context.Context, req *connect.Request[dhcpv1.InformRequest]) (*connect.Response[dhcpv1.InformResponse], error) {
	resp, err := c.api.Inform(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (c connectFake) Release(ctx context.Context, req *connect.Request[dhcpv1.ReleaseRequest]) (*connect.Response[dhcpv1.ReleaseResponse], error) {
	if err := c.api.Release(ctx, req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.ReleaseResponse{}), nil
}

func (c connectFake) Decline(ctx context.Context, req *connect.Request[dhcpv1.DeclineRequest]) (*connect.Response[dhcpv1.DeclineResponse], error) {
	if err := c.api.Decline(ctx, req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dhcpv1.DeclineResponse{}), nil
}

// connectServer serves api over Connect (HTTP/1.1 and h2c) on loopback.
func connectServer(t *testing.T, api *fakeAPI) *httptest.Server {
	t.Helper()
	return serveDHCP(t, connectFake{api: api})
}

// serveDHCP serves h over Connect (HTTP/1.1 and h2c) on loopback.
func serveDHCP(t *testing.T, h dhcpv1connect.DHCPServiceHandler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(dhcpv1connect.NewDHCPServiceHandler(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestSDKAPI calls each method of the adapter over Connect, and sees the
// API's codes come back as Connect codes.
func TestSDKAPI(t *testing.T) {
	t.Parallel()
	ok := &fakeAPI{}
	a := NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, connectServer(t, ok).URL), nil, 2)
	ctx := t.Context()
	if resp, err := a.Lease(ctx, &dhcpv1.LeaseRequest{Mac: "52:54:00:12:34:56", Origin: localOrigin}); err != nil || resp.GetAddress() != leaseAddr {
		t.Errorf("Lease = %v, %v", resp, err)
	}
	if resp, err := a.Inform(ctx, &dhcpv1.InformRequest{Mac: "52:54:00:12:34:56", Origin: localOrigin}); err != nil || resp.GetOptions().GetPrefixLength() != 24 {
		t.Errorf("Inform = %v, %v", resp, err)
	}
	if err := a.Release(ctx, &dhcpv1.ReleaseRequest{Mac: "52:54:00:12:34:56", Address: leaseAddr}); err != nil {
		t.Errorf("Release: %v", err)
	}
	if err := a.Decline(ctx, &dhcpv1.DeclineRequest{Mac: "52:54:00:12:34:56", Address: leaseAddr}); err != nil {
		t.Errorf("Decline: %v", err)
	}
	if ok.calls() != 4 {
		t.Errorf("the server saw %d calls, want 4", ok.calls())
	}

	failing := &fakeAPI{err: connect.NewError(connect.CodeNotFound, errors.New("no segment"))}
	a = NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, connectServer(t, failing).URL), nil, 2)
	_, lerr := a.Lease(ctx, &dhcpv1.LeaseRequest{})
	_, ierr := a.Inform(ctx, &dhcpv1.InformRequest{})
	for name, err := range map[string]error{
		"Lease": lerr, "Inform": ierr,
		"Release": a.Release(ctx, &dhcpv1.ReleaseRequest{}), "Decline": a.Decline(ctx, &dhcpv1.DeclineRequest{}),
	} {
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: %v, want not_found", name, err)
		}
	}
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c := listenUDP(t)
		c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// TestRun runs the whole daemon on the loopback interface against a
// Connect server: the SDK adapter, the device-bound socket and the metrics
// endpoint. Replies go to ciaddr or giaddr on loopback, never broadcast.
func TestRun(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	srv := connectServer(t, api)

	client := listenUDP(t)
	cfg := DefaultConfig()
	cfg.APIURL = srv.URL
	cfg.Interfaces = []string{"lo"}
	cfg.Port = freePort(t, "udp")
	cfg.ClientPort = client.LocalAddr().(*net.UDPAddr).Port
	cfg.MetricsListen = "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp"))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cfg.Run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	daemon := &net.UDPAddr{IP: ip("127.0.0.1"), Port: cfg.Port}
	// The socket opens asynchronously: ask until the daemon answers.
	var ack *dhcpv4.DHCPv4
	inform := packet(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(ip("127.0.0.1"))).ToBytes()
	waitFor(t, "an answer to DHCPINFORM", func() bool {
		client.WriteTo(inform, daemon)
		buf := make([]byte, 1500)
		client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := client.ReadFrom(buf)
		if err != nil {
			return false
		}
		ack, err = dhcpv4.FromBytes(buf[:n])
		return err == nil
	})
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.ServerIdentifier().Equal(ip("127.0.0.1")) {
		t.Fatalf("got %s from %s, want an ACK from 127.0.0.1", ack.MessageType(), ack.ServerIdentifier())
	}
	api.mu.Lock()
	origin := api.informs[0].GetOrigin()
	api.mu.Unlock()
	if got := origin.GetLocalAddress(); got != "127.0.0.1" {
		t.Errorf("origin.local_address = %q, want lo's 127.0.0.1", got)
	}

	// A relayed DISCOVER whose relay is 127.0.0.1: the OFFER goes to
	// giaddr at the server port, which is the daemon itself, and it drops
	// its own BOOTREPLY. (Nothing here broadcasts.)
	relayed := packet(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(ip("127.0.0.1")))
	client.WriteTo(relayed.ToBytes(), daemon)
	metricsURL := "http://" + cfg.MetricsListen + "/metrics"
	waitFor(t, "the metrics to show the OFFER come back", func() bool {
		body := get(t, metricsURL)
		return strings.Contains(body, `carbide_dhcp_replies_total{type="offer"} 1`) &&
			strings.Contains(body, `carbide_dhcp_drops_total{reason="not_bootrequest"} 1`)
	})
	body := get(t, metricsURL)
	for _, want := range []string{
		`carbide_dhcp_requests_total{type="inform"}`,
		`carbide_dhcp_requests_total{type="discover"} 1`,
		`carbide_dhcp_replies_total{type="ack"} `,
		`carbide_dhcp_drops_total{reason="send_error"} 0`,
		`carbide_dhcp_handle_seconds_count{type="inform"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := get(t, "http://"+cfg.MetricsListen+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestRunProfiles: with DebugPprof (--debug-pprof) the daemon serves the
// runtime profiles on its metrics listener and logs once that it does;
// without it, it serves none.
func TestRunProfiles(t *testing.T) {
	t.Parallel()
	for name, tt := range map[string]struct {
		on   bool
		code int
	}{
		"on":  {on: true, code: http.StatusOK},
		"off": {on: false, code: http.StatusNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := connectServer(t, &fakeAPI{})
			cfg := DefaultConfig()
			cfg.APIURL = srv.URL
			cfg.Interfaces = []string{"lo"}
			cfg.Port = freePort(t, "udp")
			cfg.MetricsListen = "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp"))
			cfg.DebugPprof = tt.on
			var logs syncBuffer
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- cfg.Run(ctx, slog.New(slog.NewTextHandler(&logs, nil))) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			base := "http://" + cfg.MetricsListen
			waitFor(t, "the metrics listener", func() bool { return get(t, base+"/healthz") == "ok\n" })
			resp, err := http.Get(base + "/debug/pprof/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("GET /debug/pprof/ = %d, want %d", resp.StatusCode, tt.code)
			}
			// The daemon says so before it says it serves.
			waitFor(t, "the start-up log", func() bool { return strings.Contains(logs.String(), "serving DHCP") })
			if got, want := strings.Count(logs.String(), "profiling enabled (--debug-pprof)"), map[bool]int{true: 1, false: 0}[tt.on]; got != want {
				t.Errorf("the log says profiling is enabled %d times, want %d:\n%s", got, want, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer that a logger can write to while a test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRunInvalid: Run reports configuration problems before opening
// anything.
func TestRunInvalid(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	err := cfg.Run(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "interface: none given") {
		t.Fatalf("Run = %v, want the configuration problems", err)
	}
}

// TestResolveInterfaces finds lo's address, and names the interfaces it
// cannot use.
func TestResolveInterfaces(t *testing.T) {
	t.Parallel()
	got, err := resolveInterfaces([]string{"lo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("resolveInterfaces(lo) = %v", got)
	}
	if _, err := resolveInterfaces([]string{"carbide-nope0", "lo"}); err == nil || !strings.Contains(err.Error(), "carbide-nope0") {
		t.Errorf("resolveInterfaces(carbide-nope0) = %v, want an error naming it", err)
	}
}

// gatedFake is a DHCPService whose Lease calls wait for a gate to open,
// and whose LeaseBatch records each batch; batches fail with
// InvalidArgument while reject is set.
type gatedFake struct {
	connectFake
	gate    chan struct{}
	started chan struct{} // gets a value as each Lease call starts
	reject  bool
	mu      sync.Mutex
	batches [][]string // the MACs of each LeaseBatch call
	singles []string   // the MACs of each Lease call
}

func (g *gatedFake) Lease(ctx context.Context, req *connect.Request[dhcpv1.LeaseRequest]) (*connect.Response[dhcpv1.LeaseResponse], error) {
	g.mu.Lock()
	g.singles = append(g.singles, req.Msg.GetMac())
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.gate
	return g.connectFake.Lease(ctx, req)
}

func (g *gatedFake) LeaseBatch(ctx context.Context, req *connect.Request[dhcpv1.LeaseBatchRequest]) (*connect.Response[dhcpv1.LeaseBatchResponse], error) {
	var macs []string
	for _, r := range req.Msg.GetRequests() {
		macs = append(macs, r.GetMac())
	}
	g.mu.Lock()
	g.batches = append(g.batches, macs)
	g.mu.Unlock()
	if g.reject {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("requests[1].mac: invalid"))
	}
	return g.connectFake.LeaseBatch(ctx, req)
}

// While --api-calls Lease calls are in flight, further requests queue,
// and go out together as one LeaseBatch when a call returns; each caller
// gets its own answer, errors included. A batch the API rejects as
// invalid is sent again one request at a time.
func TestSDKAPIBatches(t *testing.T) {
	t.Parallel()
	for _, reject := range []bool{false, true} {
		t.Run(fmt.Sprintf("reject=%v", reject), func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{leaseFunc: func(_ context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
				if req.GetMac() == "52:54:00:00:00:07" {
					return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("pool full"))
				}
				return &dhcpv1.LeaseResponse{Address: "10.0.0." + req.GetMac()[len(req.GetMac())-1:], LeaseDuration: durationpb.New(time.Hour)}, nil
			}}
			g := &gatedFake{connectFake: connectFake{api: api}, gate: make(chan struct{}), started: make(chan struct{}, 100), reject: reject}
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			const calls = 3
			a := NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, serveDHCP(t, g).URL), m, calls)
			const n = calls + 5
			type answer struct {
				resp *dhcpv1.LeaseResponse
				err  error
			}
			answers := make([]answer, n)
			var wg sync.WaitGroup
			for i := range n {
				if i == calls {
					// The first calls have reached the server and wait.
					for range calls {
						<-g.started
					}
				}
				wg.Go(func() {
					resp, err := a.Lease(t.Context(), &dhcpv1.LeaseRequest{Mac: fmt.Sprintf("52:54:00:00:00:%02d", i), Origin: localOrigin})
					answers[i] = answer{resp, err}
				})
			}
			// Wait until the last requests have queued behind the calls.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				a.mu.Lock()
				queued := len(a.queue)
				a.mu.Unlock()
				if queued == n-calls {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d requests queued, want %d", queued, n-calls)
				}
			}
			close(g.gate)
			wg.Wait()

			for i, ans := range answers {
				want := fmt.Sprintf("10.0.0.%d", i)
				switch {
				case i == 7 && connect.CodeOf(ans.err) != connect.CodeResourceExhausted:
					t.Errorf("request %d: %v, %v; want resource_exhausted", i, ans.resp, ans.err)
				case i != 7 && (ans.err != nil || ans.resp.GetAddress() != want):
					t.Errorf("request %d: %v, %v; want %s", i, ans.resp, ans.err, want)
				}
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.batches) != 1 || len(g.batches[0]) != n-calls {
				t.Errorf("batches sent: %v, want one of the %d queued requests", g.batches, n-calls)
			}
			wantSingles := calls
			if reject {
				wantSingles = n // the rejected batch's requests went one by one
			}
			if len(g.singles) != wantSingles {
				t.Errorf("%d Lease calls, want %d", len(g.singles), wantSingles)
			}
			// carbide_dhcp_lease_batch_size: a sample per call, of its requests.
			var pm dto.Metric
			if err := m.leaseBatch.Write(&pm); err != nil {
				t.Fatal(err)
			}
			samples, requests := uint64(wantSingles+1), float64(wantSingles+n-calls)
			if h := pm.GetHistogram(); h.GetSampleCount() != samples || h.GetSampleSum() != requests {
				t.Errorf("lease_batch_size: %d calls carrying %v requests, want %d carrying %v", h.GetSampleCount(), h.GetSampleSum(), samples, requests)
			}
		})
	}
}

// A request whose caller has already given up takes no call slot for
// good: requests after many such still get their answers.
func TestSDKAPIGivenUpRequests(t *testing.T) {
	t.Parallel()
	a := NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, connectServer(t, &fakeAPI{}).URL), nil, 2)
	done, cancel := context.WithCancel(t.Context())
	cancel()
	for range 4 {
		if _, err := a.Lease(done, &dhcpv1.LeaseRequest{Mac: "52:54:00:12:34:56", Origin: localOrigin}); err == nil {
			t.Fatal("Lease with a cancelled context succeeded")
		}
	}
	ctx, stop := context.WithTimeout(t.Context(), 5*time.Second)
	defer stop()
	if resp, err := a.Lease(ctx, &dhcpv1.LeaseRequest{Mac: "52:54:00:12:34:57", Origin: localOrigin}); err != nil || resp.GetAddress() != leaseAddr {
		t.Errorf("Lease after cancelled requests = %v, %v", resp, err)
	}
}
