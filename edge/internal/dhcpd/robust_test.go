package dhcpd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestDropMalformed feeds packets the daemon must drop, as raw bytes
// through HandlePacket (the socket loop's path): each is counted by reason
// and never reaches the API.
func TestDropMalformed(t *testing.T) {
	t.Parallel()
	valid := packet(t, dhcpv4.MessageTypeDiscover).ToBytes()
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	mod := func(mods ...dhcpv4.Modifier) []byte { return packet(t, dhcpv4.MessageTypeDiscover, mods...).ToBytes() }
	tests := map[string]struct {
		b     []byte
		iface Interface
		want  string
	}{
		"empty":                  {b: nil, want: reasonMalformed},
		"too short for a header": {b: valid[:100], want: reasonMalformed},
		"no magic cookie": {b: edit(func(b []byte) []byte {
			b[236] = 0
			return b
		}), want: reasonMalformed},
		"no end option": {b: edit(func(b []byte) []byte {
			return b[:240+3] // the cookie and option 53 only
		}), want: reasonMalformed},
		"option longer than the packet": {b: edit(func(b []byte) []byte {
			return append(b[:240], 12, 200, 'x')
		}), want: reasonMalformed},
		"BOOTREPLY": {b: edit(func(b []byte) []byte {
			b[0] = 2
			return b
		}), want: reasonNotRequest},
		"unknown op": {b: edit(func(b []byte) []byte {
			b[0] = 7
			return b
		}), want: reasonNotRequest},
		"BOOTP request, no message type": {b: mod(dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType)),
			want: reasonNoMessageType},
		"message type of zero length": {b: mod(withOpt(dhcpv4.OptionDHCPMessageType, nil)),
			want: reasonNoMessageType},
		"an OFFER sent to the server": {b: mod(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer)),
			want: reasonUnexpectedType},
		"unknown message type": {b: mod(dhcpv4.WithMessageType(42)),
			want: reasonUnexpectedType},
		"not Ethernet": {b: mod(dhcpv4.WithHWType(iana.HWTypeIEEE802)),
			want: reasonBadHWAddr},
		"8-byte hardware address": {b: mod(dhcpv4.WithHwAddr([]byte{1, 2, 3, 4, 5, 6, 7, 8})),
			want: reasonBadHWAddr},
		"no hardware address": {b: mod(dhcpv4.WithHwAddr(nil)),
			want: reasonBadHWAddr},
		"unrelayed, on an interface without an address": {b: valid, iface: Interface{Name: "eth9"},
			want: reasonNoLocalAddress},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := &fakeAPI{}
			h, m := testHandler(t, testConfig(), api, nil)
			iface := tt.iface
			if iface.Name == "" {
				iface = testIface
			}
			if reply, dest := h.HandlePacket(t.Context(), iface, tt.b); reply != nil || dest != nil {
				t.Fatalf("got a reply to %s", dest)
			}
			if got := counter(t, m.drops, tt.want); got != 1 {
				t.Errorf("drops_total{reason=%q} = %v, want 1", tt.want, got)
			}
			if api.calls() != 0 {
				t.Errorf("%d API calls, want none", api.calls())
			}
			for typ := range strings.SplitSeq("discover request decline release inform", " ") {
				if got := counter(t, m.requests, typ); got != 0 {
					t.Errorf("requests_total{type=%q} = %v, want 0", typ, got)
				}
			}
		})
	}
}

// TestHandleNil: a nil packet is dropped like a malformed one.
func TestHandleNil(t *testing.T) {
	t.Parallel()
	h, m := testHandler(t, testConfig(), &fakeAPI{}, nil)
	if reply, _ := h.Handle(t.Context(), testIface, nil); reply != nil {
		t.Fatal("reply to nil")
	}
	if got := counter(t, m.drops, reasonMalformed); got != 1 {
		t.Errorf("drops_total{reason=malformed} = %v, want 1", got)
	}
}

// TestAPIErrors: when the API fails, the daemon sends nothing, and counts
// and logs the failure.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	badLease := func(resp *dhcpv1.LeaseResponse) func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
		return func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) { return resp, nil }
	}
	discover := packet(t, dhcpv4.MessageTypeDiscover)
	tests := map[string]struct {
		api      *fakeAPI
		pkt      *dhcpv4.DHCPv4
		wantCode string
		wantLog  string
	}{
		"no segment": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeNotFound, errors.New("origin.local_address: no segment has 10.0.0.1"))},
			pkt:      discover,
			wantCode: "not_found",
			wantLog:  "level=WARN msg=\"no segment for this origin",
		},
		"pool full": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeResourceExhausted, errors.New("segment lab is full"))},
			pkt:      discover,
			wantCode: "resource_exhausted",
			wantLog:  "level=WARN msg=\"the segment's address pool is full, or",
		},
		"enrolment refused": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeResourceExhausted, errors.New("mac 52:54:00:00:00:01 not enrolled: segment lab has enrolled 200 new machines"))},
			pkt:      discover,
			wantCode: "resource_exhausted",
			wantLog:  "the API enrols no more new machines from this relay",
		},
		"API overloaded: no NAK": {
			api: &fakeAPI{err: connect.NewError(connect.CodeResourceExhausted, errors.New(
				"the API is overloaded: 8 lease calls are deciding and 30 waiting, so this one would finish in about 2.4s, after its deadline (in 1.9s)"))},
			pkt:      packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr))),
			wantCode: "resource_exhausted",
			wantLog:  "or the API is overloaded (see the error)",
		},
		"unreachable": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeUnavailable, errors.New("dial tcp 127.0.0.1:1079: connection refused"))},
			pkt:      discover,
			wantCode: "unavailable",
			wantLog:  "level=ERROR",
		},
		"too slow: the call's deadline ends it": {
			api:      &fakeAPI{block: true},
			pkt:      discover,
			wantCode: "deadline_exceeded",
			wantLog:  "level=ERROR",
		},
		"a plain context error": {
			api:      &fakeAPI{err: context.DeadlineExceeded},
			pkt:      discover,
			wantCode: "deadline_exceeded",
			wantLog:  "level=ERROR",
		},
		"internal error": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeInternal, errors.New("boom"))},
			pkt:      packet(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip(leaseAddr))),
			wantCode: "internal",
			wantLog:  "call=Lease",
		},
		"lease without an address": {
			api:      &fakeAPI{leaseFunc: badLease(&dhcpv1.LeaseResponse{LeaseDuration: durationpb.New(time.Hour)})},
			pkt:      discover,
			wantCode: codeInvalidResponse,
			wantLog:  "unusable answer",
		},
		"lease of an IPv6 address": {
			api:      &fakeAPI{leaseFunc: badLease(&dhcpv1.LeaseResponse{Address: "2001:db8::5", LeaseDuration: durationpb.New(time.Hour)})},
			pkt:      discover,
			wantCode: codeInvalidResponse,
		},
		"lease without a lease time": {
			api:      &fakeAPI{leaseFunc: badLease(&dhcpv1.LeaseResponse{Address: leaseAddr})},
			pkt:      discover,
			wantCode: codeInvalidResponse,
		},
		"inform fails": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeUnavailable, errors.New("down"))},
			pkt:      packet(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(ip(leaseAddr))),
			wantCode: "unavailable",
			wantLog:  "call=Inform",
		},
		"release fails": {
			api:      &fakeAPI{err: connect.NewError(connect.CodeUnavailable, errors.New("down"))},
			pkt:      packet(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip(leaseAddr))),
			wantCode: "unavailable",
			wantLog:  "call=Release",
		},
		"decline fails": {
			api: &fakeAPI{err: connect.NewError(connect.CodeUnavailable, errors.New("down"))},
			pkt: packet(t, dhcpv4.MessageTypeDecline,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))),
			wantCode: "unavailable",
			wantLog:  "call=Decline",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.APITimeout = 20 * time.Millisecond
			var log syncbuf.Buffer
			h, m := testHandler(t, cfg, tt.api, &log)
			const n = 3
			for range n {
				if reply, _ := h.Handle(t.Context(), testIface, tt.pkt); reply != nil {
					t.Fatalf("got reply %s, want none", reply.MessageType())
				}
			}
			if got := counter(t, m.apiErrors, tt.wantCode); got != n {
				t.Errorf("api_errors_total{code=%q} = %v, want %d", tt.wantCode, got, n)
			}
			if got := counter(t, m.drops, reasonAPIError); got != n {
				t.Errorf("drops_total{reason=api_error} = %v, want %d", got, n)
			}
			var logged []string
			for line := range strings.Lines(log.String()) {
				if strings.Contains(line, "code="+tt.wantCode) {
					logged = append(logged, line)
				}
			}
			if len(logged) != 1 {
				t.Fatalf("logged %d lines about the failure, want 1 (rate-limited):\n%s", len(logged), log.String())
			}
			if !strings.Contains(logged[0], tt.wantLog) || !strings.Contains(logged[0], "mac=52:54:00:12:34:56") {
				t.Errorf("log line %q does not say %q and the MAC", logged[0], tt.wantLog)
			}
		})
	}
}

// TestLogThrottle lets one message per key through each interval and
// reports how many it held back.
func TestLogThrottle(t *testing.T) {
	t.Parallel()
	th := newLogThrottle(10 * time.Second)
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0},
		{"a", 5 * time.Second, false, 0},
		{"a", 11 * time.Second, true, 2},
		{"a", 12 * time.Second, false, 0},
		{"a", 30 * time.Second, true, 1},
	}
	for i, s := range steps {
		ok, suppressed := th.allow(s.key, t0.Add(s.at))
		if ok != s.ok || suppressed != s.suppressed {
			t.Errorf("step %d (%s at %s): allow = %v, %d; want %v, %d", i, s.key, s.at, ok, suppressed, s.ok, s.suppressed)
		}
	}
}

// TestClientHostname: option 12 reaches the API as valid UTF-8 of at most
// 255 bytes, which protobuf can carry.
func TestClientHostname(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		opt  []byte
		want string
	}{
		"none":          {nil, ""},
		"plain":         {[]byte("node-7"), "node-7"},
		"trailing NULs": {[]byte("node-7\x00\x00"), "node-7"},
		"invalid UTF-8": {[]byte("no\xffde"), "node"},
		"too long":      {[]byte(strings.Repeat("a", 254) + "é"), strings.Repeat("a", 254)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var mods []dhcpv4.Modifier
			if tt.opt != nil {
				mods = append(mods, withOpt(dhcpv4.OptionHostName, tt.opt))
			}
			if got := clientHostname(packet(t, dhcpv4.MessageTypeDiscover, mods...)); got != tt.want {
				t.Errorf("clientHostname = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestServerIDConfigured: with --server-id, replies carry it, and requests
// naming either it or the interface's address are ours.
func TestServerIDConfigured(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ServerID = netip.MustParseAddr("192.0.2.10")
	for _, sid := range []string{"192.0.2.10", "10.0.0.1"} {
		h, _ := testHandler(t, cfg, &fakeAPI{}, nil)
		reply, _ := h.Handle(t.Context(), testIface, packet(t, dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(sid))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip(leaseAddr)))))
		got := onWire(t, reply)
		if got == nil || got.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("server id %s: got %v, want an ACK", sid, got)
		}
		if !got.ServerIdentifier().Equal(ip("192.0.2.10")) {
			t.Errorf("server identifier %s, want 192.0.2.10", got.ServerIdentifier())
		}
	}
}
