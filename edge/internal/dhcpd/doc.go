// Package dhcpd is Carbide's DHCPv4 daemon: a stateless edge process that
// answers DHCP clients and relay agents on behalf of the Carbide API, which
// makes every lease decision (carbide.dhcp.v1.DHCPService). Any number of
// replicas, behind any number of relays, give the same answers, because
// none of them keeps a lease table.
//
// # Listening
//
// [Config.Run] opens one UDP socket on port 67 per configured interface,
// bound to that device (SO_BINDTODEVICE), and serves each in its own
// goroutine of an errgroup, together with the Prometheus metrics endpoint.
// Each interface's IPv4 address (the first one, read at start) is the
// origin of the requests that arrive on it unrelayed, and the server
// identifier (option 54) of the replies sent on it unless --server-id names
// another. Each packet is handled in its own goroutine, at most
// --max-in-flight at once per interface; more are dropped and counted.
//
// # Origin: which segment a request belongs to
//
// A request that was not relayed (giaddr 0) carries origin.local_address,
// the daemon's address on the receiving interface, and, for a DHCPREQUEST
// or DHCPINFORM from a client that has an address (ciaddr), that address
// as origin.link_selection: a client behind a relay renews by unicast
// straight to the daemon (RFC 2131 4.4.5), so its own address, not the
// daemon's, names its link, as in ISC dhcpd and Kea. (Believing ciaddr is
// no weaker than believing giaddr, which any sender can set.) A relayed
// request carries origin.relay_address = giaddr and, from the relay agent
// information option 82 (RFC 3046), sub-options 1 (circuit id), 2 (remote
// id) and 5 (link selection, RFC 3527). The API prefers the link-selection
// address, then the relay address, then the local address. Option 82 of an
// unrelayed request is not trusted for the origin (a client could pick its
// own segment with it), but it is echoed like any other.
//
// # Messages (RFC 2131)
//
//   - DHCPDISCOVER: Lease with offer (with option 50 as the requested
//     address, if any) and DHCPOFFER. For a new client the API writes
//     nothing: it answers with a tentative offer, an address it holds for
//     the client for a few seconds (RFC 2131 4.3.1). The daemon remembers
//     its offers for 10 s.
//   - DHCPREQUEST: when option 54 is present (SELECTING) and names another
//     server, the request is ignored silently. Otherwise the requested
//     address is option 50 (SELECTING, INIT-REBOOT) or ciaddr
//     (RENEWING, REBINDING), and Lease is called with it: DHCPACK when the
//     API leases that address, DHCPNAK when it leases another one (RFC
//     2131 4.3.2; for a tentative offer, when another client took the
//     address meanwhile through another API replica). The one REQUEST
//     that makes no call accepts this daemon's offer of a lease the
//     client holds already: it is acknowledged from the offer.
//   - DHCPRELEASE: Release(ciaddr); no reply.
//   - DHCPDECLINE: Decline(option 50); no reply.
//   - DHCPINFORM: Inform and a DHCPACK with the network options (and
//     the boot file, if any) but no yiaddr and no lease times.
//
// RELEASE and DECLINE that name another server in option 54 are ignored
// too. When the API has no segment for the origin (NotFound), a full pool
// or a new MAC it will not enrol yet because its relay enrolled too many
// at once (ResourceExhausted), or any other failure, the daemon sends
// nothing, counts the drop, and logs at most once per code every 10 s:
// the client retries, and an INIT-REBOOT client on a network the API does
// not know stays silent as RFC 2131 4.3.2 asks.
//
// # Replies
//
// Offers and acks carry server identifier (54), subnet mask (1), router
// (3), DNS servers (6), domain (15), host name (12) when the machine has
// one, interface MTU (26), NTP servers (42), lease time (51), T1 (58, half
// the lease) and T2 (59, seven eighths). The client identifier (61, RFC
// 6842) and option 82 are echoed. A relay that sends the server identifier
// override sub-option (82.11, RFC 5107) gets that address as option 54, and
// accepts it in the client's later requests. A NAK carries only the message
// type, server identifier, a message (56) and the echoed options.
//
// Replies to a relay go unicast to giaddr:67 (a relayed NAK with the
// broadcast bit set). Other replies follow RFC 2131 4.1: to ciaddr:68 when
// the client has one, else (and for every NAK) broadcast to
// 255.255.255.255:68 on the receiving interface. Unicasting to yiaddr
// before the client has configured it would need a raw socket to write the
// ARP entry, which this daemon does not use. The relay source port
// sub-option (82.19, RFC 8357) is not supported: replies to relays always
// go to port 67.
//
// # Network boot (RFC 4578, UEFI HTTP boot, iPXE)
//
// A client that sends no client architecture (option 93) gets no boot file.
// Otherwise, by the first architecture it lists:
//
//   - a client with user class (77) "iPXE": the HTTP URL of its
//     per-machine script, --ipxe-script-url with {mac} replaced by its MAC
//     (lower-case, colon-separated; default
//     http://<server-id>:8080/ipxe/{mac}), and option 175 with sub-option
//     176 (no-pxedhcp) = 1 so that iPXE does not wait for proxy offers;
//   - 0, x86 BIOS: --bios-file (undionly.kpxe);
//   - 7 or 9, x86-64 UEFI: --efi-x64-file (snponly.efi);
//   - 11, arm64 UEFI: --efi-arm64-file, and nothing when it is not set;
//   - 16, x86-64 UEFI HTTP boot, with vendor class (60) starting with
//     "HTTPClient": --http-boot-url, and option 60 "HTTPClient" echoed;
//   - any other: nothing.
//
// Whenever a boot file is sent, siaddr (next server) and option 66 are
// --tftp-server (default: the daemon's own address on the interface, or
// --server-id), and option 67 and the file field hold the boot file. A
// boot file longer than the 127 bytes of the file field travels in option
// 67 alone.
//
// # Robustness
//
// A packet that does not parse, is not a BOOTREQUEST, has no message type,
// a message type a server does not take, or a hardware address that is
// not 6-byte Ethernet is dropped and counted, never fatal. Every API call
// has a deadline (--api-timeout, 2 s); a failed call is counted by its
// Connect code and logged at most once per code every 10 s (with the
// number of messages suppressed). The daemon logs no credentials: it only
// ever holds the file names of its certificate and key.
//
// # Metrics
//
// On --metrics-listen (127.0.0.1:9167; /metrics, and /healthz):
//
//   - carbide_dhcp_requests_total{type}: well-formed requests by message
//     type (discover, request, decline, release, inform);
//   - carbide_dhcp_replies_total{type}: replies sent (offer, ack, nak);
//   - carbide_dhcp_drops_total{reason}: packets that got no reply where
//     one was due, or that were discarded, by reason (see the reason*
//     constants);
//   - carbide_dhcp_api_errors_total{code}: failed API calls by Connect
//     code (not_found, resource_exhausted, unavailable,
//     deadline_exceeded, ..., or invalid_response for an unusable
//     answer);
//   - carbide_dhcp_handle_seconds{type}: time to handle a request,
//     including the API call;
//   - carbide_dhcp_offer_leases_total: REQUESTs accepting a tentative
//     offer, leased through the API; carbide_dhcp_offer_acks_total:
//     REQUESTs accepting an offer of a lease the client held, answered
//     without a call.
//
// # Testing
//
// The API is reached through the small [LeaseAPI] interface, so
// [Handler.Handle] (a parsed packet in, a reply and its destination out)
// and [Handler.HandlePacket] (raw bytes in, the path the socket loop
// takes) run without sockets against a fake.
package dhcpd
