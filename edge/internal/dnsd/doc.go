// Package dnsd is Carbide's authoritative DNS server (carbide-dns). It
// keeps every name in memory, fed by one Watch stream of the Carbide API
// (machines, segments, instances): a snapshot, then each change as it
// commits. Each segment's domain is a forward zone holding its machines'
// and instances' A/AAAA records and its static records; each segment
// prefix gives reverse zones with their PTRs (octet-aligned, split at the
// next octet, RFC 2317 names past /24, nibble-aligned for IPv6). Every
// zone has the SOA and NS set of the flags, and its serial is the API
// revision of the last change that touched it, so replicas that applied
// the same changes serve the same serial.
//
// The Store applies a change to one machine or instance in the time of
// its own records, and journals each zone's diffs for IXFR; it implements
// ZoneSource for package xfr. The Handler answers on UDP and TCP through
// miekg/dns, authoritatively, with EDNS0, truncation, NXDOMAIN/NODATA with
// the SOA, CNAME chasing within the zones, REFUSED outside them, minimal
// ANY (RFC 8482) and response rate limiting; plain UDP queries are
// answered from packed answers cached per question (fast.go). When the
// stream breaks, the daemon keeps answering from memory and resumes from
// the last revision it applied.
//
// Metrics (see docs/dns.md) are served on --metrics-listen, with /healthz
// answering 503 until the first snapshot is in memory.
package dnsd
