package dhcpd

import (
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

var localOrigin = &dhcpv1.Origin{LocalAddress: "10.0.0.1"}

// clientOrigin is the origin of an unrelayed request from a client that
// has an address (ciaddr): that address selects the segment.
func clientOrigin(ciaddr string) *dhcpv1.Origin {
	return &dhcpv1.Origin{LocalAddress: "10.0.0.1", LinkSelection: ciaddr}
}

// TestHandleMessages covers every message type and DHCPREQUEST state on
// the local link.
func TestHandleMessages(t *testing.T) {
	t.Parallel()
	otherAddr := func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
		return &dhcpv1.LeaseResponse{Address: "10.0.0.77", LeaseDuration: durationpb.New(time.Hour)}, nil
	}
	tests := map[string]struct {
		pkt       *dhcpv4.DHCPv4
		leaseFunc func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error)

		wantType     dhcpv4.MessageType // MessageTypeNone: no reply
		wantDest     *net.UDPAddr
		wantYIAddr   net.IP
		wantCIAddr   net.IP
		wantLeases   []*dhcpv1.LeaseRequest
		wantReleases []*dhcpv1.ReleaseRequest
		wantDeclines []*dhcpv1.DeclineRequest
		wantInforms  []*dhcpv1.InformRequest
		wantDrop     string
	}{
		"discover": {
			pkt:        packet(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptHostName("pxe-client"))),
			wantType:   dhcpv4.MessageTypeOffer,
			wantDest:   bcast68,
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, ClientHostname: "pxe-client", Offer: true}},
		},
		"discover with a requested address and the broadcast flag": {
			pkt: packet(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithBroadcast(true),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.0.50")))),
			wantType:   dhcpv4.MessageTypeOffer,
			wantDest:   bcast68,
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, RequestedAddress: "10.0.0.50", Offer: true}},
		},
		"request, selecting, our server": {
			pkt: packet(t, dhcpv4.MessageTypeRequest,
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
			wantType:   dhcpv4.MessageTypeAck,
			wantDest:   bcast68,
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, RequestedAddress: leaseAddr}},
		},
		"request, selecting, another server": {
			pkt: packet(t, dhcpv4.MessageTypeRequest,
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.9"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
			wantDrop: reasonOtherServer,
		},
		"request, selecting, API leases another address": {
			pkt: packet(t, dhcpv4.MessageTypeRequest,
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
			leaseFunc:  otherAddr,
			wantType:   dhcpv4.MessageTypeNak,
			wantDest:   bcast68,
			wantYIAddr: ip("0.0.0.0"),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, RequestedAddress: leaseAddr}},
		},
		"request, init-reboot": {
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
			wantType:   dhcpv4.MessageTypeAck,
			wantDest:   bcast68,
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, RequestedAddress: leaseAddr}},
		},
		"request, init-reboot, API leases another address": {
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.9.9")))),
			wantType:   dhcpv4.MessageTypeNak,
			wantDest:   bcast68,
			wantYIAddr: ip("0.0.0.0"),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: localOrigin, RequestedAddress: "10.0.9.9"}},
		},
		"request, renewing": {
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr))),
			wantType:   dhcpv4.MessageTypeAck,
			wantDest:   &net.UDPAddr{IP: ip(leaseAddr), Port: 68},
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip(leaseAddr),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: clientOrigin(leaseAddr), RequestedAddress: leaseAddr, Extend: true}},
		},
		"request, rebinding": {
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr)), dhcpv4.WithBroadcast(true)),
			wantType:   dhcpv4.MessageTypeAck,
			wantDest:   &net.UDPAddr{IP: ip(leaseAddr), Port: 68},
			wantYIAddr: ip(leaseAddr),
			wantCIAddr: ip(leaseAddr),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: clientOrigin(leaseAddr), RequestedAddress: leaseAddr, Extend: true}},
		},
		"request, renewing, API leases another address": {
			pkt:        packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr))),
			leaseFunc:  otherAddr,
			wantType:   dhcpv4.MessageTypeNak,
			wantDest:   bcast68,
			wantYIAddr: ip("0.0.0.0"),
			wantCIAddr: ip("0.0.0.0"),
			wantLeases: []*dhcpv1.LeaseRequest{{Mac: "52:54:00:12:34:56", Origin: clientOrigin(leaseAddr), RequestedAddress: leaseAddr, Extend: true}},
		},
		"request without an address": {
			pkt:      packet(t, dhcpv4.MessageTypeRequest),
			wantDrop: reasonNoAddress,
		},
		"release": {
			pkt: packet(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip(leaseAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1")))),
			wantReleases: []*dhcpv1.ReleaseRequest{{Mac: "52:54:00:12:34:56", Address: leaseAddr}},
		},
		"release to another server": {
			pkt: packet(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip(leaseAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.9")))),
			wantDrop: reasonOtherServer,
		},
		"release without ciaddr": {
			pkt:      packet(t, dhcpv4.MessageTypeRelease),
			wantDrop: reasonNoAddress,
		},
		"decline": {
			pkt: packet(t, dhcpv4.MessageTypeDecline,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr))),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1")))),
			wantDeclines: []*dhcpv1.DeclineRequest{{Mac: "52:54:00:12:34:56", Address: leaseAddr}},
		},
		"decline without an address": {
			pkt:      packet(t, dhcpv4.MessageTypeDecline),
			wantDrop: reasonNoAddress,
		},
		"inform": {
			pkt:         packet(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(ip("10.0.0.60"))),
			wantType:    dhcpv4.MessageTypeAck,
			wantDest:    &net.UDPAddr{IP: ip("10.0.0.60"), Port: 68},
			wantYIAddr:  ip("0.0.0.0"),
			wantCIAddr:  ip("10.0.0.60"),
			wantInforms: []*dhcpv1.InformRequest{{Mac: "52:54:00:12:34:56", Origin: clientOrigin("10.0.0.60")}},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{leaseFunc: tt.leaseFunc}
			h, m := testHandler(t, testConfig(), api, nil)
			reply, dest := h.Handle(t.Context(), testIface, tt.pkt)

			if tt.wantType == dhcpv4.MessageTypeNone {
				if reply != nil {
					t.Fatalf("got a reply %s, want none", reply.Summary())
				}
			} else {
				if reply == nil {
					t.Fatalf("got no reply, want %s", tt.wantType)
				}
				got := onWire(t, reply)
				if got.MessageType() != tt.wantType {
					t.Errorf("reply type %s, want %s", got.MessageType(), tt.wantType)
				}
				if diff := cmp.Diff(tt.wantDest.String(), dest.String()); diff != "" {
					t.Errorf("destination (-want +got):\n%s", diff)
				}
				if !got.YourIPAddr.Equal(tt.wantYIAddr) || !got.ClientIPAddr.Equal(tt.wantCIAddr) {
					t.Errorf("yiaddr %s ciaddr %s, want %s %s", got.YourIPAddr, got.ClientIPAddr, tt.wantYIAddr, tt.wantCIAddr)
				}
				if got.OpCode != dhcpv4.OpcodeBootReply || got.TransactionID != tt.pkt.TransactionID ||
					got.ClientHWAddr.String() != testMAC.String() {
					t.Errorf("reply header op %s xid %s chaddr %s does not answer the request", got.OpCode, got.TransactionID, got.ClientHWAddr)
				}
				if sid := got.ServerIdentifier(); !sid.Equal(ip("10.0.0.1")) {
					t.Errorf("server identifier %s, want 10.0.0.1", sid)
				}
				switch tt.wantType {
				case dhcpv4.MessageTypeNak:
					for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter} {
						if got.Options.Has(code) {
							t.Errorf("NAK carries option %s", code)
						}
					}
					if got.Message() == "" {
						t.Error("NAK carries no message (56)")
					}
				case dhcpv4.MessageTypeAck, dhcpv4.MessageTypeOffer:
					if got.SubnetMask() == nil {
						t.Error("no subnet mask")
					}
				}
				if tt.wantType == dhcpv4.MessageTypeAck && tt.pkt.MessageType() == dhcpv4.MessageTypeInform {
					for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue} {
						if got.Options.Has(code) {
							t.Errorf("INFORM's ACK carries option %s", code)
						}
					}
				}
				if n := counter(t, m.replies, replyType(reply)); n != 0 {
					t.Errorf("replies_total counted %v before sending", n)
				}
			}

			opts := protocmp.Transform()
			if diff := cmp.Diff(tt.wantLeases, api.leases, opts); diff != "" {
				t.Errorf("Lease calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantReleases, api.releases, opts); diff != "" {
				t.Errorf("Release calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDeclines, api.declines, opts); diff != "" {
				t.Errorf("Decline calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantInforms, api.informs, opts); diff != "" {
				t.Errorf("Inform calls (-want +got):\n%s", diff)
			}
			if got := counter(t, m.requests, requestTypes[tt.pkt.MessageType()]); got != 1 {
				t.Errorf("requests_total{type=%q} = %v, want 1", requestTypes[tt.pkt.MessageType()], got)
			}
			if tt.wantDrop != "" {
				if got := counter(t, m.drops, tt.wantDrop); got != 1 {
					t.Errorf("drops_total{reason=%q} = %v, want 1", tt.wantDrop, got)
				}
			}
		})
	}
}

// TestReplyOptions checks every option an ACK carries, and that unset
// segment options are left out.
func TestReplyOptions(t *testing.T) {
	t.Parallel()
	full := map[dhcpv4.OptionCode][]byte{
		dhcpv4.OptionDHCPMessageType:       {5},
		dhcpv4.OptionServerIdentifier:      {10, 0, 0, 1},
		dhcpv4.OptionSubnetMask:            {255, 255, 255, 0},
		dhcpv4.OptionRouter:                {10, 0, 0, 1},
		dhcpv4.OptionDomainNameServer:      {10, 0, 0, 2, 10, 0, 0, 3},
		dhcpv4.OptionDomainName:            []byte("lab.example"),
		dhcpv4.OptionHostName:              []byte("node-1"),
		dhcpv4.OptionInterfaceMTU:          {0x23, 0x28}, // 9000
		dhcpv4.OptionNTPServers:            {10, 0, 0, 4},
		dhcpv4.OptionIPAddressLeaseTime:    {0, 0, 0x0e, 0x10}, // 3600
		dhcpv4.OptionRenewTimeValue:        {0, 0, 0x07, 0x08}, // 1800
		dhcpv4.OptionRebindingTimeValue:    {0, 0, 0x0c, 0x4e}, // 3150
		dhcpv4.OptionClientIdentifier:      {1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56},
		dhcpv4.OptionRelayAgentInformation: nil, // absent
	}
	minimal := map[dhcpv4.OptionCode][]byte{
		dhcpv4.OptionDHCPMessageType:    {5},
		dhcpv4.OptionServerIdentifier:   {10, 0, 0, 1},
		dhcpv4.OptionIPAddressLeaseTime: {0, 0, 0x02, 0x58}, // 600
		dhcpv4.OptionRenewTimeValue:     {0, 0, 0x01, 0x2c}, // 300
		dhcpv4.OptionRebindingTimeValue: {0, 0, 0x02, 0x0d}, // 525
		dhcpv4.OptionClientIdentifier:   {1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56},
	}
	tests := map[string]struct {
		resp  *dhcpv1.LeaseResponse
		want  map[dhcpv4.OptionCode][]byte
		exact bool // the reply has no other options
	}{
		"full segment options and a host name": {
			want: full,
		},
		"nothing set": {
			resp: &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(10 * time.Minute),
				Options: &dhcpv1.NetworkOptions{}},
			want:  minimal,
			exact: true,
		},
		"unusable values are left out": {
			resp: &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(10 * time.Minute),
				Options: &dhcpv1.NetworkOptions{PrefixLength: 40, Gateway: "fe80::1", DnsServers: []string{"nope"}, Mtu: 20}},
			want:  minimal,
			exact: true,
		},
		"lease time past 32 bits is capped below infinity": {
			resp: &dhcpv1.LeaseResponse{Address: leaseAddr, LeaseDuration: durationpb.New(200 * 365 * 24 * time.Hour)},
			want: map[dhcpv4.OptionCode][]byte{
				dhcpv4.OptionIPAddressLeaseTime: {0xff, 0xff, 0xff, 0xfe},
				dhcpv4.OptionRenewTimeValue:     {0x7f, 0xff, 0xff, 0xff},
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{}
			if tt.resp != nil {
				api.leaseFunc = func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) { return tt.resp, nil }
			}
			h, _ := testHandler(t, testConfig(), api, nil)
			pkt := packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr)),
				dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56})))
			reply, _ := h.Handle(t.Context(), testIface, pkt)
			got := onWire(t, reply)
			if got == nil {
				t.Fatal("no reply")
			}
			for code, want := range tt.want {
				if diff := cmp.Diff(want, got.Options.Get(code)); diff != "" {
					t.Errorf("option %s (-want +got):\n%s", code, diff)
				}
			}
			if tt.exact && len(got.Options) != len(tt.want) {
				t.Errorf("reply has options %v, want only %d", got.Options, len(tt.want))
			}
		})
	}
}
