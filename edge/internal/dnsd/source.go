// package dnsd (edge/internal/dnsd), file source.go, owned by dns-core; dns-xfr may copy it
// verbatim into its branch to compile against, dns-core's copy wins at merge.
package dnsd

import "github.com/miekg/dns"

// Diff is one change of a zone: from serial From to serial To, the records removed and added
// (neither holds the SOA).
type Diff struct {
	From, To uint32
	Removed  []dns.RR
	Added    []dns.RR
}

// ZoneSource is what zone transfers read.
type ZoneSource interface {
	// Zone finds the zone that holds name (an FQDN, any case): its origin (lower-case FQDN)
	// or ok=false when no zone holds it.
	Zone(name string) (origin string, ok bool)
	// Snapshot returns the zone's records at one serial: the SOA first, then every other record
	// (NS included), for AXFR. ok=false if there is no such zone.
	Snapshot(origin string) (soa *dns.SOA, rrs []dns.RR, ok bool)
	// Changes returns the diffs that lead from serial from to the current serial, oldest first,
	// together with the current SOA; ok=false when the journal no longer reaches back to from
	// (the caller then falls back to AXFR). from == current serial: no diffs, ok=true.
	Changes(origin string, from uint32) (soa *dns.SOA, diffs []Diff, ok bool)
	// Subscribe calls fn (from its own goroutine, never concurrently) after a zone's serial changed.
	Subscribe(fn func(origin string, serial uint32))
}
