package dnsd

import (
	"github.com/miekg/dns"
)

// Diff is one change of a zone: from serial From to serial To, the records
// removed and added (neither holds the SOA).
type Diff struct {
	From, To uint32
	Removed  []dns.RR
	Added    []dns.RR
}

// ZoneSource is what zone transfers read.
type ZoneSource interface {
	// Zone finds the zone that holds name (an FQDN, any case): its origin
	// (lower-case FQDN) or ok=false when no zone holds it.
	Zone(name string) (origin string, ok bool)
	// Snapshot returns the zone's records at one serial: the SOA first,
	// then every other record (NS included), for AXFR. ok=false if there
	// is no such zone.
	Snapshot(origin string) (soa *dns.SOA, rrs []dns.RR, ok bool)
	// Changes returns the diffs that lead from serial from to the current
	// serial, oldest first, together with the current SOA; ok=false when
	// the journal no longer reaches back to from (the caller then falls
	// back to AXFR). from == current serial: no diffs, ok=true.
	Changes(origin string, from uint32) (soa *dns.SOA, diffs []Diff, ok bool)
	// Subscribe calls fn (from its own goroutine, never concurrently)
	// after a zone's serial changed.
	Subscribe(fn func(origin string, serial uint32))
}

var _ ZoneSource = (*Store)(nil)

// Zone implements ZoneSource.
func (s *Store) Zone(name string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if z := s.zoneOf(fqdn(name)); z != nil {
		return z.origin, true
	}
	return "", false
}

// Snapshot implements ZoneSource. The records are shared with the store
// and must not be changed.
func (s *Store) Snapshot(origin string) (*dns.SOA, []dns.RR, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	z := s.zones[fqdn(origin)]
	if z == nil {
		return nil, nil, false
	}
	return copySOA(z.soa), z.all(), true
}

// Changes implements ZoneSource.
func (s *Store) Changes(origin string, from uint32) (*dns.SOA, []Diff, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	z := s.zones[fqdn(origin)]
	if z == nil {
		return nil, nil, false
	}
	soa := copySOA(z.soa)
	if from == z.soa.Serial {
		return soa, nil, true
	}
	for i, d := range z.journal {
		if d.From == from {
			return soa, append([]Diff(nil), z.journal[i:]...), true
		}
	}
	return soa, nil, false
}

// Subscribe implements ZoneSource: fn runs on its own goroutine for the
// life of the process. Up to 1024 serial changes wait for a slow
// subscriber; past that, changes are not told to it until it catches up.
func (s *Store) Subscribe(fn func(origin string, serial uint32)) {
	ch := make(chan serialChange, 1024)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	go func() {
		for c := range ch {
			fn(c.origin, c.serial)
		}
	}()
}
