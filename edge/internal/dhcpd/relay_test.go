package dhcpd

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
)

// relayInfo builds option 82 from sub-options.
func relayInfo(subs ...dhcpv4.Option) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(subs...))
}

func sub(code uint8, v []byte) dhcpv4.Option {
	return dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(code), v)
}

// segmentAPI leases like the API picks segments: by link selection, else
// relay address, else local address; each selects its own /24.
func segmentAPI() *fakeAPI {
	return &fakeAPI{leaseFunc: func(_ context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
		o := req.GetOrigin()
		key := o.GetLocalAddress()
		switch {
		case o.GetLinkSelection() != "":
			key = o.GetLinkSelection()
		case o.GetRelayAddress() != "":
			key = o.GetRelayAddress()
		}
		a := net.ParseIP(key).To4()
		a[3] = 100
		return &dhcpv1.LeaseResponse{Address: a.String(), LeaseDuration: durationpb.New(time.Hour),
			Options: &dhcpv1.NetworkOptions{PrefixLength: 24}}, nil
	}}
}

// TestRelay covers relayed requests: the origin from giaddr and option 82,
// replies to giaddr:67 with option 82 echoed, and the server identifier
// override.
func TestRelay(t *testing.T) {
	t.Parallel()
	agent := relayInfo(
		sub(1, []byte("swp12")),
		sub(2, []byte("leaf-3")),
		sub(5, []byte{10, 0, 2, 0}),
	)
	giaddr := dhcpv4.WithGatewayIP(ip("10.0.1.1"))
	tests := map[string]struct {
		pkt *dhcpv4.DHCPv4

		wantType      dhcpv4.MessageType
		wantOrigin    *dhcpv1.Origin
		wantYIAddr    net.IP
		wantDest      *net.UDPAddr
		wantSID       net.IP
		wantBroadcast bool
		wantDrop      string
	}{
		"discover, link selection preferred": {
			pkt:      packet(t, dhcpv4.MessageTypeDiscover, giaddr, agent),
			wantType: dhcpv4.MessageTypeOffer,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1", LinkSelection: "10.0.2.0",
				CircuitId: []byte("swp12"), RemoteId: []byte("leaf-3")},
			wantYIAddr: ip("10.0.2.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.0.1"),
		},
		"discover without option 82": {
			pkt:        packet(t, dhcpv4.MessageTypeDiscover, giaddr),
			wantType:   dhcpv4.MessageTypeOffer,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1"},
			wantYIAddr: ip("10.0.1.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.0.1"),
		},
		"malformed link selection is ignored": {
			pkt:        packet(t, dhcpv4.MessageTypeDiscover, giaddr, relayInfo(sub(1, []byte("swp12")), sub(5, []byte{10, 0}))),
			wantType:   dhcpv4.MessageTypeOffer,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1", CircuitId: []byte("swp12")},
			wantYIAddr: ip("10.0.1.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.0.1"),
		},
		"request, selecting": {
			pkt: packet(t, dhcpv4.MessageTypeRequest, giaddr, agent,
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.2.100")))),
			wantType: dhcpv4.MessageTypeAck,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1", LinkSelection: "10.0.2.0",
				CircuitId: []byte("swp12"), RemoteId: []byte("leaf-3")},
			wantYIAddr: ip("10.0.2.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.0.1"),
		},
		"NAK to a relay has the broadcast bit": {
			pkt: packet(t, dhcpv4.MessageTypeRequest, giaddr,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.7.7")))),
			wantType:      dhcpv4.MessageTypeNak,
			wantOrigin:    &dhcpv1.Origin{RelayAddress: "10.0.1.1"},
			wantYIAddr:    ip("0.0.0.0"),
			wantDest:      &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:       ip("10.0.0.1"),
			wantBroadcast: true,
		},
		"server identifier override (RFC 5107)": {
			pkt:        packet(t, dhcpv4.MessageTypeDiscover, giaddr, relayInfo(sub(11, []byte{10, 0, 1, 1}))),
			wantType:   dhcpv4.MessageTypeOffer,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1"},
			wantYIAddr: ip("10.0.1.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.1.1"),
		},
		"request selecting the overridden server identifier": {
			pkt: packet(t, dhcpv4.MessageTypeRequest, giaddr, relayInfo(sub(11, []byte{10, 0, 1, 1})),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.1.1"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.1.100")))),
			wantType:   dhcpv4.MessageTypeAck,
			wantOrigin: &dhcpv1.Origin{RelayAddress: "10.0.1.1"},
			wantYIAddr: ip("10.0.1.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.1.1"),
		},
		"request selecting another server through a relay": {
			pkt: packet(t, dhcpv4.MessageTypeRequest, giaddr, agent,
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.1.1"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.2.100")))),
			wantDrop: reasonOtherServer,
		},
		"inform": {
			pkt:        packet(t, dhcpv4.MessageTypeInform, giaddr, agent, dhcpv4.WithClientIP(ip("10.0.2.30"))),
			wantType:   dhcpv4.MessageTypeAck,
			wantYIAddr: ip("0.0.0.0"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.1.1"), Port: 67},
			wantSID:    ip("10.0.0.1"),
		},
		"unicast renewal from a client behind a relay": {
			// RENEWING goes straight to the server, without the relay:
			// no giaddr, and the client's address is on another link.
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip("10.0.2.100"))),
			wantType:   dhcpv4.MessageTypeAck,
			wantOrigin: &dhcpv1.Origin{LocalAddress: "10.0.0.1", LinkSelection: "10.0.2.100"},
			wantYIAddr: ip("10.0.2.100"),
			wantDest:   &net.UDPAddr{IP: ip("10.0.2.100"), Port: 68},
			wantSID:    ip("10.0.0.1"),
		},
		"option 82 from a client on the local link does not pick the segment": {
			pkt:        packet(t, dhcpv4.MessageTypeDiscover, agent),
			wantType:   dhcpv4.MessageTypeOffer,
			wantOrigin: localOrigin,
			wantYIAddr: ip("10.0.0.100"),
			wantDest:   bcast68,
			wantSID:    ip("10.0.0.1"),
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := segmentAPI()
			h, m := testHandler(t, testConfig(), api, nil)
			reply, dest := h.Handle(t.Context(), testIface, tt.pkt)
			if tt.wantDrop != "" {
				if reply != nil || api.calls() != 0 {
					t.Fatalf("got reply %v after %d API calls, want a silent drop", reply, api.calls())
				}
				if got := counter(t, m.drops, tt.wantDrop); got != 1 {
					t.Errorf("drops_total{reason=%q} = %v, want 1", tt.wantDrop, got)
				}
				return
			}
			got := onWire(t, reply)
			if got == nil {
				t.Fatal("no reply")
			}
			if got.MessageType() != tt.wantType {
				t.Errorf("reply type %s, want %s", got.MessageType(), tt.wantType)
			}
			if tt.wantOrigin != nil {
				if len(api.leases) != 1 {
					t.Fatalf("%d Lease calls, want 1", len(api.leases))
				}
				if diff := cmp.Diff(tt.wantOrigin, api.leases[0].GetOrigin(), protocmp.Transform()); diff != "" {
					t.Errorf("origin (-want +got):\n%s", diff)
				}
			}
			if !got.YourIPAddr.Equal(tt.wantYIAddr) {
				t.Errorf("yiaddr %s, want %s", got.YourIPAddr, tt.wantYIAddr)
			}
			if dest.String() != tt.wantDest.String() {
				t.Errorf("sent to %s, want %s", dest, tt.wantDest)
			}
			if !got.GatewayIPAddr.Equal(tt.pkt.GatewayIPAddr) {
				t.Errorf("giaddr %s, want %s", got.GatewayIPAddr, tt.pkt.GatewayIPAddr)
			}
			if sid := got.ServerIdentifier(); !sid.Equal(tt.wantSID) {
				t.Errorf("server identifier %s, want %s", sid, tt.wantSID)
			}
			if got.IsBroadcast() != tt.wantBroadcast {
				t.Errorf("broadcast bit %v, want %v", got.IsBroadcast(), tt.wantBroadcast)
			}
			want82 := tt.pkt.Options.Get(dhcpv4.OptionRelayAgentInformation)
			if got82 := got.Options.Get(dhcpv4.OptionRelayAgentInformation); !bytes.Equal(got82, want82) {
				t.Errorf("option 82 echoed as %x, want %x", got82, want82)
			}
		})
	}
}
