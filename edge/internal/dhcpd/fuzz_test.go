package dhcpd

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fuzzAPI answers from the request alone, so that a fuzzed packet decides
// what the API says: the requested address if any (else 10.0.0.50), an
// error when the MAC's last byte asks for one, and odd options.
func fuzzAPI() *fakeAPI {
	return &fakeAPI{noRecord: true, leaseFunc: func(_ context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
		mac := req.GetMac()
		switch mac[len(mac)-1] {
		case '1':
			return nil, connect.NewError(connect.CodeNotFound, errors.New("no segment"))
		case '2':
			return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("full"))
		case '3':
			return &dhcpv1.LeaseResponse{Address: "nonsense"}, nil
		}
		addr := req.GetRequestedAddress()
		if addr == "" {
			addr = leaseAddr
		}
		return &dhcpv1.LeaseResponse{
			Address:       addr,
			LeaseDuration: durationpb.New(time.Duration(len(mac)) * time.Hour),
			Hostname:      req.GetClientHostname(),
			Options: &dhcpv1.NetworkOptions{
				PrefixLength: uint32(len(req.GetOrigin().GetCircuitId())),
				Gateway:      req.GetOrigin().GetLinkSelection(),
				DnsServers:   []string{req.GetOrigin().GetRelayAddress(), "10.0.0.2"},
				Domain:       string(req.GetOrigin().GetRemoteId()),
				Mtu:          uint32(len(req.GetClientHostname())) * 300,
			},
		}, nil
	}}
}

func fuzzSeeds(t testing.TB) [][]byte {
	relayed := []dhcpv4.Modifier{dhcpv4.WithGatewayIP(ip("10.0.1.1")),
		relayInfo(sub(1, []byte("swp1")), sub(2, []byte("leaf")), sub(5, []byte{10, 0, 2, 0}), sub(11, []byte{10, 0, 1, 1}))}
	boot := []dhcpv4.Modifier{arch(iana.EFI_X86_64_HTTP), ipxeUC,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient")), dhcpv4.WithOption(dhcpv4.OptHostName("n1"))}
	var seeds [][]byte
	for _, p := range []*dhcpv4.DHCPv4{
		packet(t, dhcpv4.MessageTypeDiscover),
		packet(t, dhcpv4.MessageTypeDiscover, append(relayed, boot...)...),
		packet(t, dhcpv4.MessageTypeDiscover, arch(iana.INTEL_X86PC)),
		packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip("10.0.0.1"))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.0.50")))),
		packet(t, dhcpv4.MessageTypeRequest, append(relayed, dhcpv4.WithClientIP(ip("10.0.2.7")))...),
		packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.9.9.9")))),
		packet(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip("10.0.0.50"))),
		packet(t, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.0.0.50")))),
		packet(t, dhcpv4.MessageTypeInform, append(relayed, dhcpv4.WithClientIP(ip("10.0.2.7")))...),
		packet(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr([]byte{0x52, 0x54, 0, 0, 0, 0x01})),
	} {
		seeds = append(seeds, p.ToBytes())
	}
	return append(seeds, nil, []byte{1, 1, 6, 0}, make([]byte, 300))
}

// FuzzHandlePacket feeds raw bytes through HandlePacket, the path of every
// packet the socket loop receives: it must never panic, and any reply must
// serialize and parse back as an answer to the request.
func FuzzHandlePacket(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	cfg := testConfig()
	cfg.EFIARM64File = "arm64.efi"
	cfg.HTTPBootURL = "http://10.0.0.1/boot.efi"
	cfg.IPXEScriptURL = "http://10.0.0.1/{mac}/{mac}"
	h, _ := testHandler(f, cfg, fuzzAPI(), io.Discard) // debug logging too
	ifaces := []Interface{testIface, {Name: "eth2"}, {Name: "eth3", Addr: netip.MustParseAddr("192.0.2.1")}}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, iface := range ifaces {
			reply, dest := h.HandlePacket(context.Background(), iface, b)
			if reply == nil {
				if dest != nil {
					t.Fatalf("no reply but a destination %s", dest)
				}
				continue
			}
			if dest == nil || dest.IP.To4() == nil || dest.Port == 0 {
				t.Fatalf("reply with destination %v", dest)
			}
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatalf("replied to a packet that does not parse: %v", err)
			}
			got, err := dhcpv4.FromBytes(reply.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse: %v\n%s", err, reply.Summary())
			}
			if got.OpCode != dhcpv4.OpcodeBootReply || got.TransactionID != req.TransactionID {
				t.Fatalf("reply op %s xid %s to xid %s", got.OpCode, got.TransactionID, req.TransactionID)
			}
			switch got.MessageType() {
			case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak:
			default:
				t.Fatalf("reply of type %s", got.MessageType())
			}
			if got.ServerIdentifier() == nil {
				t.Fatal("reply without a server identifier")
			}
		}
	})
}

// BenchmarkHandlePacket measures the daemon's own work per packet (the API
// is a fake that answers at once): parse, handle, serialize.
func BenchmarkHandlePacket(b *testing.B) {
	cfg := testConfig()
	h, _ := testHandler(b, cfg, &fakeAPI{noRecord: true}, nil)
	for name, pkt := range map[string]*dhcpv4.DHCPv4{
		"discover": packet(b, dhcpv4.MessageTypeDiscover, arch(iana.EFI_X86_64)),
		"relayed request": packet(b, dhcpv4.MessageTypeRequest, dhcpv4.WithGatewayIP(ip("10.0.1.1")),
			relayInfo(sub(1, []byte("swp1")), sub(5, []byte{10, 0, 0, 0})),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
	} {
		raw := pkt.ToBytes()
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				reply, _ := h.HandlePacket(context.Background(), testIface, raw)
				if reply == nil {
					b.Fatal("no reply")
				}
				_ = reply.ToBytes()
			}
		})
	}
}

// FuzzMessageType: the message type the reader sorts packets by (before
// the handler parses them) is never another than the one the parser
// finds; it may find none where the parser finds one (options carried in
// the file and sname fields), which sends the packet to the lane of new
// exchanges.
func FuzzMessageType(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := messageType(b)
		pkt, err := dhcpv4.FromBytes(b)
		if err != nil || pkt.MessageType() == dhcpv4.MessageTypeNone {
			return
		}
		if got != dhcpv4.MessageTypeNone && got != pkt.MessageType() {
			t.Fatalf("messageType = %v, the parser says %v", got, pkt.MessageType())
		}
	})
}
