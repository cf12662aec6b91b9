// Package xfr serves carbide-dns zones to secondary servers (BIND, Knot):
// full zone transfers (AXFR, RFC 5936), incremental ones from the zone's
// change journal (IXFR, RFC 1995), and NOTIFY (RFC 1996) to the configured
// secondaries after every change, all of it TSIG-authenticated (RFC 8945)
// when keys are configured. It reads zones through [dnsd.ZoneSource] and
// keeps no state of its own beyond the NOTIFYs in flight.
//
// # Who may transfer
//
// A request from an address outside Config.AllowTransfer (default: the
// loopback addresses) is REFUSED. When Config.TSIGSecrets holds keys,
// every transfer must also be signed with one of them: an unsigned
// request, one signed with an unknown key or algorithm (BADKEY), a wrong
// MAC (BADSIG) or a time outside the fudge (BADTIME) gets NOTAUTH with
// that TSIG error (RFC 8945 5.2), and is counted. Secrets are never
// logged; key names are.
//
// # AXFR
//
// Over TCP only (RFC 5936 4.2: AXFR over UDP is not defined; FORMERR):
// the SOA, every record of one [dnsd.ZoneSource.Snapshot], the SOA again,
// packed many records per message into compressed messages of at most
// about 16 KiB. When the request was signed, every message is signed, the
// later ones over the MAC of the one before (RFC 8945 5.3.1).
//
// # IXFR
//
//   - The client's serial is the current one or newer (RFC 1982 serial
//     arithmetic): a single SOA (RFC 1995 2: "the same or newer version
//     number ... is replied to with a single SOA record"). A secondary that
//     is ahead of this replica keeps its data until this replica catches up.
//   - The journal reaches back to the client's serial: the changes since,
//     condensed into one (RFC 1995 4): the current SOA, the SOA at the
//     client's serial, the records removed, the current SOA, the records
//     added, the current SOA again. A record added and removed again
//     meanwhile is in neither list.
//   - The journal does not reach back: the whole zone, AXFR-style (RFC
//     1995 4, "the entire zone is returned").
//   - Over UDP: a single SOA of the current version, which tells a client
//     that is behind to retry over TCP (RFC 1995 2).
//
// # NOTIFY
//
// [Transfers.Run] subscribes to the source and, for every zone that
// changed, sends each Config.NotifyTargets a NOTIFY (opcode NOTIFY, AA,
// the zone's SOA as question and answer) over UDP, signed with
// Config.NotifyKey when it is set. A target that does not answer is tried
// again after 1, 2, 4 and 8 s (5 tries). Bursts are coalesced per zone and
// target: while a NOTIFY is in flight, or within a second of the last one,
// later changes only mark the zone as changed again, and one more NOTIFY
// with the latest SOA follows; a zone that changes 1000 times in a second
// causes two or three NOTIFYs, not 1000.
//
// carbide-dns is only ever a primary: [Transfers.ServeNotify] answers an
// incoming NOTIFY with REFUSED for a zone it serves and NOTAUTH for any
// other, as BIND does for a zone it has no secondary of.
//
// # Metrics
//
//   - carbide_dns_transfers_total{type,result}: type axfr or ixfr; result
//     full, incremental, up_to_date, udp_soa, refused, tsig_missing,
//     tsig_bad, not_auth, malformed or failed (see the result* constants);
//   - carbide_dns_transfer_seconds{type}: time to send a transfer that
//     carried records;
//   - carbide_dns_notifies_total{result}: NOTIFYs sent: acked, rejected
//     (the target answered with an error), unanswered (after every try).
package xfr
