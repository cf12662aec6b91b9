package dhcpd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The REQUEST accepting this daemon's offer of a lease the client holds
// (not tentative) is acknowledged from the offer; any other request asks
// the API again.
func TestRequestAcceptingOfferNeedsNoCall(t *testing.T) {
	api := &fakeAPI{}
	h, m := testHandler(t, testConfig(), api, nil)
	selecting := func(addr string) *dhcpv4.DHCPv4 {
		return packet(t, dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(addr))))
	}

	if reply, _ := h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeDiscover)); reply == nil || reply.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("DISCOVER: got %v, want an OFFER", reply)
	}
	reply, _ := h.Handle(t.Context(), testIface, selecting(leaseAddr))
	if reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck || !reply.YourIPAddr.Equal(ip(leaseAddr)) {
		t.Fatalf("REQUEST for the offered address: got %v, want an ACK of %s", reply, leaseAddr)
	}
	if d := reply.IPAddressLeaseTime(0); d < 59*time.Minute || d > time.Hour {
		t.Errorf("lease time %s, want what is left of the offered hour", d)
	}
	if n := api.calls(); n != 1 {
		t.Errorf("%d API calls for a DISCOVER and the REQUEST accepting its offer, want 1", n)
	}
	if n := testutil.ToFloat64(m.offerAcks); n != 1 {
		t.Errorf("offer_acks_total = %v, want 1", n)
	}

	// The offer is used once: a repeated REQUEST asks the API.
	if reply, _ := h.Handle(t.Context(), testIface, selecting(leaseAddr)); reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("repeated REQUEST: got %v, want an ACK", reply)
	}
	if n := api.calls(); n != 2 {
		t.Errorf("%d API calls after a repeated REQUEST, want 2", n)
	}

	// A REQUEST for another address than the one offered asks the API
	// (which here leases 10.0.0.50 again, so the client gets a NAK).
	h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeDiscover))
	if reply, _ := h.Handle(t.Context(), testIface, selecting("10.0.0.77")); reply == nil || reply.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST for another address: got %v, want a NAK", reply)
	}
	if n := api.calls(); n != 4 {
		t.Errorf("%d API calls, want 4", n)
	}
}

func TestOffersExpire(t *testing.T) {
	o := newOffers()
	addr := netip.MustParseAddr(leaseAddr)
	now := time.Now()
	o.put("52:54:00:12:34:56", lease{addr: addr, duration: time.Hour}, now)
	if _, ok := o.take("52:54:00:12:34:56", addr, now.Add(offerTTL)); ok {
		t.Error("an offer was taken after its time was up")
	}
	o.put("52:54:00:12:34:56", lease{addr: addr, duration: time.Hour}, now)
	o.forget("52:54:00:12:34:56")
	if _, ok := o.take("52:54:00:12:34:56", addr, now); ok {
		t.Error("a forgotten offer was taken")
	}
	o.put("52:54:00:12:34:56", lease{addr: addr, duration: time.Hour}, now)
	l, ok := o.take("52:54:00:12:34:56", addr, now.Add(3*time.Second))
	if !ok || l.duration != time.Hour-3*time.Second {
		t.Errorf("take after 3 s = %v %v, want the lease with 59m57s left", l, ok)
	}
}

// A DISCOVER asks the API for an offer; the API answers with a tentative
// one (an address it chose without writing it). The REQUEST that accepts
// it asks the API to lease that address and is ACKed only if the API
// leased that very address: when another client took it meanwhile (the
// API leases another), the client gets a NAK. A non-tentative offer (a
// lease the client held already) is acknowledged from the cache.
func TestRequestAcceptingTentativeOfferLeases(t *testing.T) {
	t.Parallel()
	selecting := func(addr string) *dhcpv4.DHCPv4 {
		return packet(t, dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(addr))))
	}
	tests := map[string]struct {
		tentative bool
		leased    string // what the API leases at the REQUEST
		wantType  dhcpv4.MessageType
		wantCalls int
	}{
		"tentative, leased":          {tentative: true, leased: leaseAddr, wantType: dhcpv4.MessageTypeAck, wantCalls: 2},
		"tentative, taken meanwhile": {tentative: true, leased: "10.0.0.51", wantType: dhcpv4.MessageTypeNak, wantCalls: 2},
		"held lease, from the cache": {tentative: false, leased: "10.0.0.51", wantType: dhcpv4.MessageTypeAck, wantCalls: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{leaseFunc: func(_ context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
				resp := &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(time.Hour), Options: segmentOptions()}
				if req.GetOffer() {
					resp.Tentative = tc.tentative
				} else {
					resp.Address = tc.leased
				}
				return resp, nil
			}}
			h, m := testHandler(t, testConfig(), api, nil)
			if reply, _ := h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeDiscover)); reply == nil || reply.MessageType() != dhcpv4.MessageTypeOffer || !reply.YourIPAddr.Equal(ip(leaseAddr)) {
				t.Fatalf("DISCOVER: got %v, want an OFFER of %s", reply, leaseAddr)
			}
			reply, _ := h.Handle(t.Context(), testIface, selecting(leaseAddr))
			if reply == nil || reply.MessageType() != tc.wantType {
				t.Fatalf("REQUEST for the offered address: got %v, want a %s", reply, tc.wantType)
			}
			if tc.wantType == dhcpv4.MessageTypeAck && !reply.YourIPAddr.Equal(ip(leaseAddr)) {
				t.Errorf("ACK of %s, want %s", reply.YourIPAddr, leaseAddr)
			}
			if n := api.calls(); n != tc.wantCalls {
				t.Fatalf("%d API calls, want %d", n, tc.wantCalls)
			}
			if !api.leases[0].GetOffer() {
				t.Errorf("the DISCOVER's call %v does not ask for an offer", api.leases[0])
			}
			if tc.wantCalls == 2 {
				got := api.leases[1]
				if got.GetOffer() || got.GetRequestedAddress() != leaseAddr || got.GetExtend() {
					t.Errorf("the REQUEST's call %v, want a lease (no offer) of the offered %s", got, leaseAddr)
				}
			}
			acks, leases := 0.0, 0.0
			if tc.tentative {
				leases = 1
			} else {
				acks = 1
			}
			if got := testutil.ToFloat64(m.offerAcks); got != acks {
				t.Errorf("offer_acks_total = %v, want %v", got, acks)
			}
			if got := testutil.ToFloat64(m.offerLeases); got != leases {
				t.Errorf("offer_leases_total = %v, want %v", got, leases)
			}
		})
	}
}

// The API must not answer a request to lease with an offer: the daemon
// would ACK an address nobody leased.
func TestTentativeAnswerToRequestIsRefused(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{leaseFunc: func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
		return &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(time.Hour), Tentative: true}, nil
	}}
	h, m := testHandler(t, testConfig(), api, nil)
	reply, _ := h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))))
	if reply != nil {
		t.Fatalf("INIT-REBOOT REQUEST answered with a tentative lease: got %v, want no reply", reply)
	}
	if n := counter(t, m.apiErrors, codeInvalidResponse); n != 1 {
		t.Errorf("api_errors_total{code=%q} = %v, want 1", codeInvalidResponse, n)
	}
}

// TestTentativeOfferLimit: past the limit of DISCOVERs answered at once a
// DISCOVER asks for a written lease, not an offer; at 0 every one does.
func TestTentativeOfferLimit(t *testing.T) {
	for _, limit := range []int{0, 1} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			release := make(chan struct{})
			api := &fakeAPI{leaseFunc: func(_ context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
				if req.GetMac() == "52:54:00:12:34:56" {
					<-release // the first DISCOVER stays in progress
				}
				return &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(time.Hour), Options: segmentOptions()}, nil
			}}
			cfg := testConfig()
			cfg.TentativeOfferLimit = limit
			h, _ := testHandler(t, cfg, api, nil)
			first := make(chan struct{})
			go func() {
				defer close(first)
				h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeDiscover))
			}()
			for h.discovering.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			other := packet(t, dhcpv4.MessageTypeDiscover)
			other.ClientHWAddr = net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x57}
			h.Handle(t.Context(), testIface, other)
			close(release)
			<-first
			offers := map[string]bool{}
			for _, l := range api.leases {
				offers[l.GetMac()] = l.GetOffer()
			}
			want := map[string]bool{"52:54:00:12:34:56": limit >= 1, "52:54:00:12:34:57": false}
			if fmt.Sprint(offers) != fmt.Sprint(want) {
				t.Errorf("offer asked by MAC %v, want %v", offers, want)
			}
		})
	}
}
