package dhcpd

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Interface is the network interface a packet arrived on.
type Interface struct {
	// Name is the interface's name, for logs.
	Name string
	// Addr is the daemon's IPv4 address on the interface: the origin of
	// requests that were not relayed, and the server identifier unless
	// the daemon has one configured.
	Addr netip.Addr
}

// Handler answers DHCPv4 requests by asking the Carbide API. It is safe
// for concurrent use. Beyond metrics, the only state it keeps between
// packets is the leases it offered in the last few seconds (see offers).
type Handler struct {
	api        LeaseAPI
	boot       bootConfig
	serverID   netip.Addr // configured; invalid to use each interface's address
	timeout    time.Duration
	serverPort int
	clientPort int
	metrics    *Metrics
	logger     *slog.Logger
	throttle   *logThrottle
	offers     *offers
	// tentativeLimit is TentativeOfferLimit; discovering counts the
	// DISCOVERs being answered.
	tentativeLimit int32
	discovering    atomic.Int32
}

// NewHandler returns a Handler configured by cfg that asks api, counts in
// m and logs to logger. cfg should have passed Validate; an unset API
// timeout is the default one.
func NewHandler(cfg *Config, api LeaseAPI, m *Metrics, logger *slog.Logger) *Handler {
	return &Handler{
		api: api,
		boot: bootConfig{
			ipxeScriptURL: cfg.IPXEScriptURL,
			biosFile:      cfg.BIOSFile,
			efiX64File:    cfg.EFIX64File,
			efiARM64File:  cfg.EFIARM64File,
			httpBootURL:   cfg.HTTPBootURL,
			tftpServer:    cfg.TFTPServer,
		},
		serverID:   cfg.ServerID,
		timeout:    cmp.Or(max(cfg.APITimeout, 0), DefaultConfig().APITimeout),
		serverPort: cfg.Port,
		clientPort: cfg.ClientPort,
		metrics:    m,
		logger:     logger,
		throttle:   newLogThrottle(10 * time.Second),
		offers:     newOffers(),

		tentativeLimit: int32(cfg.TentativeOfferLimit),
	}
}

// requestTypes are the message types a server takes, by their metric label.
var requestTypes = map[dhcpv4.MessageType]string{
	dhcpv4.MessageTypeDiscover: "discover",
	dhcpv4.MessageTypeRequest:  "request",
	dhcpv4.MessageTypeDecline:  "decline",
	dhcpv4.MessageTypeRelease:  "release",
	dhcpv4.MessageTypeInform:   "inform",
}

// request is a packet being handled, with what the handler read from it.
type request struct {
	pkt   *dhcpv4.DHCPv4
	iface Interface
	typ   string // metric label of the message type
	mac   string // lower-case, colon-separated

	// own is the daemon's address for this request: the configured
	// server identifier, else the interface's address.
	own netip.Addr

	// Set for a relayed request only (giaddr != 0).
	giaddr        netip.Addr
	circuitID     []byte
	remoteID      []byte
	linkSelection netip.Addr
	sidOverride   netip.Addr // RFC 5107 server identifier override
}

func (r *request) relayed() bool { return r.giaddr.IsValid() }

// clientAddr is the address of a client that says it has one: ciaddr of a
// DHCPREQUEST (RENEWING, REBINDING) or a DHCPINFORM.
func (r *request) clientAddr() (netip.Addr, bool) {
	switch r.pkt.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		return ip4(r.pkt.ClientIPAddr)
	}
	return netip.Addr{}, false
}

// serverID is the server identifier of replies to r.
func (r *request) serverID() netip.Addr {
	if r.sidOverride.IsValid() {
		return r.sidOverride
	}
	return r.own
}

// isOurs reports whether a server identifier the client sent names this
// daemon.
func (r *request) isOurs(sid netip.Addr) bool {
	return sid == r.own || sid == r.iface.Addr || (r.sidOverride.IsValid() && sid == r.sidOverride)
}

// origin tells the API where r came from.
func (r *request) origin() *dhcpv1.Origin {
	if !r.relayed() {
		o := &dhcpv1.Origin{LocalAddress: r.iface.Addr.String()}
		if ci, ok := r.clientAddr(); ok {
			// The client's link is that of its address, which need not
			// be ours: a client behind a relay renews by unicast straight
			// to us (RFC 2131 4.4.5), with no giaddr. Its address selects
			// the segment, as a relay's link selection would.
			o.LinkSelection = ci.String()
		}
		return o
	}
	o := &dhcpv1.Origin{
		RelayAddress: r.giaddr.String(),
		CircuitId:    r.circuitID,
		RemoteId:     r.remoteID,
	}
	if r.linkSelection.IsValid() {
		o.LinkSelection = r.linkSelection.String()
	}
	return o
}

// HandlePacket parses a UDP payload received on iface and handles it: the
// path of every packet the daemon receives. It returns the reply and where
// to send it, or nil when there is nothing to send.
func (h *Handler) HandlePacket(ctx context.Context, iface Interface, b []byte) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	pkt, err := dhcpv4.FromBytes(b)
	if err != nil {
		h.drop(ctx, reasonMalformed, iface, nil, slog.String("error", err.Error()))
		return nil, nil
	}
	return h.Handle(ctx, iface, pkt)
}

// Handle answers one DHCPv4 request received on iface. It returns the reply
// and where to send it, or nil when there is nothing to send: for DHCPRELEASE
// and DHCPDECLINE, and for every packet it drops (each counted by reason).
// It calls the API at most once, with a deadline.
func (h *Handler) Handle(ctx context.Context, iface Interface, pkt *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	r, reason := h.read(iface, pkt)
	if reason != "" {
		h.drop(ctx, reason, iface, pkt)
		return nil, nil
	}
	start := time.Now()
	h.metrics.requests.WithLabelValues(r.typ).Inc()
	defer func() { h.metrics.handleSeconds.WithLabelValues(r.typ).Observe(time.Since(start).Seconds()) }()

	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	var reply *dhcpv4.DHCPv4
	switch pkt.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		reply, reason = h.discover(ctx, r)
	case dhcpv4.MessageTypeRequest:
		reply, reason = h.request(ctx, r)
	case dhcpv4.MessageTypeRelease:
		reason = h.release(ctx, r)
	case dhcpv4.MessageTypeDecline:
		reason = h.decline(ctx, r)
	case dhcpv4.MessageTypeInform:
		reply, reason = h.inform(ctx, r)
	}
	if reason != "" {
		h.drop(ctx, reason, iface, pkt)
		return nil, nil
	}
	if reply == nil {
		return nil, nil
	}
	dest := h.destination(r, reply)
	if h.logger.Enabled(ctx, slog.LevelDebug) {
		h.logger.LogAttrs(ctx, slog.LevelDebug, "reply",
			slog.String("interface", iface.Name), slog.String("mac", r.mac),
			slog.String("xid", pkt.TransactionID.String()), slog.String("request", r.typ),
			slog.String("reply", replyType(reply)), slog.String("yiaddr", reply.YourIPAddr.String()),
			slog.String("to", dest.String()))
	}
	return reply, dest
}

// read checks that pkt is a request this server takes, and reads what the
// handler needs from it; it returns a drop reason when pkt is not.
func (h *Handler) read(iface Interface, pkt *dhcpv4.DHCPv4) (*request, string) {
	switch {
	case pkt == nil:
		return nil, reasonMalformed
	case pkt.OpCode != dhcpv4.OpcodeBootRequest:
		return nil, reasonNotRequest
	case pkt.HWType != iana.HWTypeEthernet || len(pkt.ClientHWAddr) != 6:
		return nil, reasonBadHWAddr
	}
	mt := pkt.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return nil, reasonNoMessageType
	}
	typ, ok := requestTypes[mt]
	if !ok {
		return nil, reasonUnexpectedType
	}
	r := &request{pkt: pkt, iface: iface, typ: typ, mac: pkt.ClientHWAddr.String(), own: h.serverID}
	if !r.own.IsValid() {
		r.own = iface.Addr
	}
	if !r.own.IsValid() {
		return nil, reasonNoLocalAddress
	}
	gi, ok := ip4(pkt.GatewayIPAddr)
	if !ok {
		return r, ""
	}
	r.giaddr = gi
	// Option 82 is trusted only from a relay agent: on the local link a
	// client could choose its segment with a forged link selection.
	var rai dhcpv4.RelayOptions
	if v := pkt.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil && rai.FromBytes(v) == nil {
		r.circuitID = truncate(rai.Get(dhcpv4.AgentCircuitIDSubOption), 255)
		r.remoteID = truncate(rai.Get(dhcpv4.AgentRemoteIDSubOption), 255)
		r.linkSelection, _ = ip4(rai.Get(dhcpv4.LinkSelectionSubOption))
		r.sidOverride, _ = ip4(rai.Get(dhcpv4.ServerIdentifierOverrideSubOption))
	}
	return r, ""
}

// lease is a usable answer of the API's Lease.
type lease struct {
	addr     netip.Addr
	duration time.Duration
	hostname string
	options  *dhcpv1.NetworkOptions
	// tentative: the API offered addr without leasing it (see
	// LeaseResponse.tentative); only an answer to a DISCOVER is.
	tentative bool
}

// callLease asks the API for r's lease, or with offer (a DISCOVER) for the
// address it would lease; ok is false, and the failure counted and
// logged, when there is none to give.
func (h *Handler) callLease(ctx context.Context, r *request, requested netip.Addr, extend, offer bool) (lease, bool) {
	req := &dhcpv1.LeaseRequest{Mac: r.mac, Origin: r.origin(), ClientHostname: clientHostname(r.pkt), Extend: extend, Offer: offer}
	if requested.IsValid() {
		req.RequestedAddress = requested.String()
	}
	resp, err := h.api.Lease(ctx, req)
	if err != nil {
		h.apiError(ctx, r, "Lease", err)
		return lease{}, false
	}
	addr, err := netip.ParseAddr(resp.GetAddress())
	d := resp.GetLeaseDuration().AsDuration()
	if err != nil || !addr.Is4() || addr.IsUnspecified() || d < time.Second || resp.GetTentative() && !offer {
		h.apiError(ctx, r, "Lease", errInvalidResponse)
		return lease{}, false
	}
	return lease{addr: addr, duration: d, hostname: resp.GetHostname(), options: resp.GetOptions(), tentative: resp.GetTentative()}, true
}

var errInvalidResponse = errors.New("the API's answer has no IPv4 address or no lease time, or offers an address it was asked to lease")

// discover offers r an address (RFC 2131 4.3.1): the API decides it.
// While few DISCOVERs are being answered (at most TentativeOfferLimit) the
// offer is tentative: the API writes nothing for a new client until the
// REQUEST that accepts it, so the OFFER leaves sooner. Under load the API
// writes the lease at the DISCOVER, in batches, and the REQUEST is
// answered from the offer cache, which costs less per client.
func (h *Handler) discover(ctx context.Context, r *request) (*dhcpv4.DHCPv4, string) {
	n := h.discovering.Add(1)
	defer h.discovering.Add(-1)
	requested, _ := optIP4(r.pkt, dhcpv4.OptionRequestedIPAddress)
	l, ok := h.callLease(ctx, r, requested, false, n <= h.tentativeLimit)
	if !ok {
		return nil, reasonAPIError
	}
	h.offers.put(r.mac, l, time.Now())
	reply := h.newReply(r, dhcpv4.MessageTypeOffer)
	h.fillLease(reply, r, l)
	return reply, ""
}

// request handles DHCPREQUEST in each of its states (RFC 2131 4.3.2).
func (h *Handler) request(ctx context.Context, r *request) (*dhcpv4.DHCPv4, string) {
	sid, hasSID := optIP4(r.pkt, dhcpv4.OptionServerIdentifier)
	if hasSID && !r.isOurs(sid) {
		return nil, reasonOtherServer // the client chose another server's offer
	}
	ciaddr, hasCIAddr := ip4(r.pkt.ClientIPAddr)
	var want netip.Addr
	renewing := !hasSID && hasCIAddr
	if !renewing {
		// SELECTING (option 54) or INIT-REBOOT (neither 54 nor ciaddr):
		// the address is option 50.
		want, _ = optIP4(r.pkt, dhcpv4.OptionRequestedIPAddress)
		if !want.IsValid() {
			want = ciaddr
		}
	} else {
		// RENEWING (unicast) or REBINDING (broadcast): ciaddr.
		want = ciaddr
	}
	if !want.IsValid() {
		return nil, reasonNoAddress
	}
	l, ok := lease{}, false
	if hasSID {
		// Accepting the offer this daemon just made. An offer of a lease
		// the client holds already is acknowledged as it is; a tentative
		// one is leased now, by the call below, which leases the offered
		// address unless another client took it meanwhile (RFC 2131
		// 4.3.2: then the client is refused).
		if l, ok = h.offers.take(r.mac, want, time.Now()); ok {
			if l.tentative {
				ok = false
				h.metrics.offerLeases.Inc()
			} else {
				h.metrics.offerAcks.Inc()
			}
		}
	}
	if !ok {
		if l, ok = h.callLease(ctx, r, want, renewing, false); !ok {
			return nil, reasonAPIError
		}
	}
	if l.addr != want {
		reply := h.newReply(r, dhcpv4.MessageTypeNak)
		reply.UpdateOption(dhcpv4.OptMessage("requested address is not yours; start again with DHCPDISCOVER"))
		return reply, ""
	}
	reply := h.newReply(r, dhcpv4.MessageTypeAck)
	reply.ClientIPAddr = r.pkt.ClientIPAddr
	h.fillLease(reply, r, l)
	return reply, ""
}

func (h *Handler) release(ctx context.Context, r *request) string {
	if sid, ok := optIP4(r.pkt, dhcpv4.OptionServerIdentifier); ok && !r.isOurs(sid) {
		return reasonOtherServer
	}
	h.offers.forget(r.mac)
	addr, ok := ip4(r.pkt.ClientIPAddr)
	if !ok {
		return reasonNoAddress
	}
	if err := h.api.Release(ctx, &dhcpv1.ReleaseRequest{Mac: r.mac, Address: addr.String()}); err != nil {
		h.apiError(ctx, r, "Release", err)
		return reasonAPIError
	}
	return ""
}

func (h *Handler) decline(ctx context.Context, r *request) string {
	if sid, ok := optIP4(r.pkt, dhcpv4.OptionServerIdentifier); ok && !r.isOurs(sid) {
		return reasonOtherServer
	}
	h.offers.forget(r.mac)
	addr, ok := optIP4(r.pkt, dhcpv4.OptionRequestedIPAddress)
	if !ok {
		return reasonNoAddress
	}
	if err := h.api.Decline(ctx, &dhcpv1.DeclineRequest{Mac: r.mac, Address: addr.String()}); err != nil {
		h.apiError(ctx, r, "Decline", err)
		return reasonAPIError
	}
	return ""
}

func (h *Handler) inform(ctx context.Context, r *request) (*dhcpv4.DHCPv4, string) {
	resp, err := h.api.Inform(ctx, &dhcpv1.InformRequest{Mac: r.mac, Origin: r.origin()})
	if err != nil {
		h.apiError(ctx, r, "Inform", err)
		return nil, reasonAPIError
	}
	// RFC 2131 4.3.5: no yiaddr and no lease time.
	reply := h.newReply(r, dhcpv4.MessageTypeAck)
	reply.ClientIPAddr = r.pkt.ClientIPAddr
	addNetworkOptions(reply, resp.GetOptions())
	h.addBoot(reply, r)
	return reply, ""
}

// newReply starts a reply to r of type mt: the header fields RFC 2131
// table 3 copies from the request, the server identifier, and the echoed
// client identifier (RFC 6842) and relay agent information (RFC 3046).
func (h *Handler) newReply(r *request, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	reply := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        r.pkt.HWType,
		TransactionID: r.pkt.TransactionID,
		Flags:         r.pkt.Flags,
		GatewayIPAddr: r.pkt.GatewayIPAddr,
		ClientHWAddr:  r.pkt.ClientHWAddr,
		Options:       make(dhcpv4.Options, 16),
	}
	reply.UpdateOption(dhcpv4.OptMessageType(mt))
	reply.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(r.serverID().AsSlice())))
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionClientIdentifier, dhcpv4.OptionRelayAgentInformation} {
		if v := r.pkt.Options.Get(code); v != nil {
			reply.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	return reply
}

// fillLease writes the leased address, the lease times, the host name, the
// segment's options and the boot file into an OFFER or ACK.
func (h *Handler) fillLease(reply *dhcpv4.DHCPv4, r *request, l lease) {
	reply.YourIPAddr = net.IP(l.addr.AsSlice())
	d := min(l.duration, time.Duration(0xfffffffe)*time.Second) // 0xffffffff means infinite
	d = d.Truncate(time.Second)
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(d))
	reply.UpdateOption(dhcpv4.OptRenewTimeValue(d / 2))
	reply.UpdateOption(dhcpv4.OptRebindingTimeValue(d / 8 * 7))
	if l.hostname != "" {
		reply.UpdateOption(dhcpv4.OptHostName(l.hostname))
	}
	addNetworkOptions(reply, l.options)
	h.addBoot(reply, r)
}

func (h *Handler) addBoot(reply *dhcpv4.DHCPv4, r *request) {
	if b, ok := h.boot.choose(r.pkt, r.mac, r.own); ok {
		h.boot.apply(reply, b, r.own)
	}
}

// addNetworkOptions writes a segment's options; it leaves out those that
// are unset or do not parse.
func addNetworkOptions(reply *dhcpv4.DHCPv4, o *dhcpv1.NetworkOptions) {
	if p := o.GetPrefixLength(); p >= 1 && p <= 32 {
		reply.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(int(p), 32)))
	}
	if gw, err := netip.ParseAddr(o.GetGateway()); err == nil && gw.Is4() {
		reply.UpdateOption(dhcpv4.OptRouter(net.IP(gw.AsSlice())))
	}
	if ips := parseIPv4s(o.GetDnsServers()); len(ips) > 0 {
		reply.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	if d := o.GetDomain(); d != "" {
		reply.UpdateOption(dhcpv4.OptDomainName(d))
	}
	if mtu := o.GetMtu(); mtu >= 68 && mtu <= 0xffff {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(mtu))))
	}
	if ips := parseIPv4s(o.GetNtpServers()); len(ips) > 0 {
		reply.UpdateOption(dhcpv4.OptNTPServers(ips...))
	}
}

// destination is where a reply goes (RFC 2131 4.1): to the relay agent
// for a relayed request; else to ciaddr when the client has one, and by
// broadcast otherwise and for every NAK. A relayed NAK gets the broadcast
// bit, so that the relay agent broadcasts it.
func (h *Handler) destination(r *request, reply *dhcpv4.DHCPv4) *net.UDPAddr {
	nak := reply.MessageType() == dhcpv4.MessageTypeNak
	if r.relayed() {
		if nak {
			reply.SetBroadcast()
		}
		return &net.UDPAddr{IP: net.IP(r.giaddr.AsSlice()), Port: h.serverPort}
	}
	if ci, ok := ip4(r.pkt.ClientIPAddr); ok && !nak {
		return &net.UDPAddr{IP: net.IP(ci.AsSlice()), Port: h.clientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: h.clientPort}
}

// apiError counts a failed API call and logs it, at most once per code
// every 10 s.
func (h *Handler) apiError(ctx context.Context, r *request, call string, err error) {
	code, level, msg := codeInvalidResponse, slog.LevelError, "the Carbide API gave an unusable answer"
	if !errors.Is(err, errInvalidResponse) {
		c := connect.CodeOf(err)
		if errors.Is(err, context.DeadlineExceeded) {
			c = connect.CodeDeadlineExceeded
		}
		code = c.String()
		switch c {
		case connect.CodeNotFound:
			level, msg = slog.LevelWarn, "no segment for this origin: create one whose prefix holds the address, or add the relay address to one"
		case connect.CodeResourceExhausted:
			level, msg = slog.LevelWarn, "the segment's address pool is full, or the API enrols no more new machines from this relay for now, or the API is overloaded (see the error)"
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			msg = "the Carbide API is unreachable or slow; clients get no answer until it is back"
		default:
			msg = "the Carbide API call failed"
		}
	}
	h.metrics.apiErrors.WithLabelValues(code).Inc()
	ok, suppressed := h.throttle.allow("api:"+code, time.Now())
	if !ok {
		return
	}
	o := r.origin()
	h.logger.LogAttrs(ctx, level, msg,
		slog.String("call", call), slog.String("code", code), slog.String("error", err.Error()),
		slog.String("interface", r.iface.Name), slog.String("mac", r.mac), slog.String("request", r.typ),
		slog.String("relay_address", o.GetRelayAddress()), slog.String("link_selection", o.GetLinkSelection()),
		slog.String("local_address", o.GetLocalAddress()), slog.Int("suppressed", suppressed))
}

// drop counts a packet that gets no reply, and logs it at debug level.
func (h *Handler) drop(ctx context.Context, reason string, iface Interface, pkt *dhcpv4.DHCPv4, attrs ...slog.Attr) {
	h.metrics.drops.WithLabelValues(reason).Inc()
	if !h.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs = append(attrs, slog.String("reason", reason), slog.String("interface", iface.Name))
	if pkt != nil {
		attrs = append(attrs, slog.String("mac", pkt.ClientHWAddr.String()), slog.String("xid", pkt.TransactionID.String()))
	}
	h.logger.LogAttrs(ctx, slog.LevelDebug, "dropped a packet", attrs...)
}

// countSent counts a reply that was sent.
func (h *Handler) countSent(reply *dhcpv4.DHCPv4) {
	h.metrics.replies.WithLabelValues(replyType(reply)).Inc()
}

func replyType(reply *dhcpv4.DHCPv4) string {
	switch reply.MessageType() {
	case dhcpv4.MessageTypeOffer:
		return "offer"
	case dhcpv4.MessageTypeAck:
		return "ack"
	case dhcpv4.MessageTypeNak:
		return "nak"
	}
	return "other"
}

// clientHostname is option 12 as the API takes it: valid UTF-8 of at most
// 255 bytes, without trailing NULs.
func clientHostname(pkt *dhcpv4.DHCPv4) string {
	s := strings.TrimRight(string(pkt.Options.Get(dhcpv4.OptionHostName)), "\x00")
	s = strings.ToValidUTF8(s, "")
	if len(s) > 255 {
		s = strings.ToValidUTF8(s[:255], "")
	}
	return s
}

// ip4 returns ip as an IPv4 address, with ok false for anything else and
// for 0.0.0.0.
func ip4(ip []byte) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	a = a.Unmap()
	if !ok || !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// optIP4 returns option code of pkt as a non-zero IPv4 address.
func optIP4(pkt *dhcpv4.DHCPv4, code dhcpv4.OptionCode) (netip.Addr, bool) {
	return ip4(pkt.Options.Get(code))
}

func parseIPv4s(ss []string) []net.IP {
	var ips []net.IP
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			ips = append(ips, net.IP(a.AsSlice()))
		}
	}
	return ips
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
