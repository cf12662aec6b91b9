package dhcpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/insomniacslk/dhcp/dhcpv4"
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
	mux := http.NewServeMux()
	mux.Handle(dhcpv1connect.NewDHCPServiceHandler(connectFake{api: api}))
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
	a := NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, connectServer(t, ok).URL))
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
	a = NewSDKAPI(dhcpv1connect.NewDHCPServiceClient(http.DefaultClient, connectServer(t, failing).URL))
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
