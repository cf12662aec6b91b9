package dhcpd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The REQUEST accepting this daemon's offer is acknowledged from the offer
// (the API wrote the lease when asked for it); any other request asks the
// API again.
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
