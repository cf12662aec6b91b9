package dnsd

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Segment is what the daemon needs of a network segment.
type Segment struct {
	ID      string
	Domain  string // lower-case FQDN, "" for none
	Prefix  netip.Prefix
	Records []StaticRecord
}

// StaticRecord is an extra record of a segment (Segment.dns_records in the
// API): a CNAME, TXT or SRV whose Name is relative to the segment's domain
// ("" or "@" for the apex), with TTL 0 meaning the daemon's default and
// Value in presentation format.
type StaticRecord struct {
	Name  string
	Type  string
	TTL   uint32
	Value string
}

// Machine is what the daemon needs of a machine: its hostname and the
// current addresses of its interfaces.
type Machine struct {
	ID         string
	Hostname   string
	Interfaces []Interface
}

// Interface is one leased address of a machine on a segment.
type Interface struct {
	SegmentID string
	Address   netip.Addr
}

// Instance is what the daemon needs of an instance; Active is false once
// it is released (or failed).
type Instance struct {
	ID       string
	Hostname string
	Address  netip.Addr
	Active   bool
}

// ZoneParams are the SOA and NS values every zone shares.
type ZoneParams struct {
	PrimaryNS  string
	Contact    string // SOA RNAME as a DNS name
	NS         []string
	NSAddress  map[string][]netip.Addr
	TTL        uint32
	Refresh    uint32
	Retry      uint32
	Expire     uint32
	Minimum    uint32
	JournalLen int
}

// Store is the daemon's data: the machines, instances and segments the
// Watch stream sent, and the zones derived from them. Each source object
// (a machine, an instance, a segment's static records, the PTR of one
// address, a zone's apex) contributes a set of records; a change to one
// object replaces its contribution, so it costs its own records, not the
// zone's. A change of segments (a domain or prefix), or a new snapshot,
// re-derives everything and journals only what differs.
type Store struct {
	params ZoneParams
	logger *slog.Logger

	mu        sync.RWMutex
	zones     map[string]*zone
	segments  map[string]*Segment
	machines  map[string]*Machine
	instances map[string]*Instance
	// contrib maps a source key (m/<id>, i/<id>, s/<id>, p/<addr>,
	// apex/<zone>) to the records it placed.
	contrib map[string][]dns.RR
	// claims maps an address to the names that want its PTR: key of the
	// source -> name, instances' keys starting with i/.
	claims map[netip.Addr]map[string]string
	// claimAddrs maps a source key to the addresses it claims.
	claimAddrs map[string][]netip.Addr
	// synced is set once the first snapshot is applied; before that,
	// changes only update the inputs.
	synced   bool
	revision int64
	// subscribers are told about serial changes (ZoneSource.Subscribe).
	subs   []chan serialChange
	onZone func(added, removed []string)
	// onChange is called (under the write lock) after a commit changed
	// zones; the metrics use it.
	onChange func(s *Store)
	lastSync time.Time
}

type serialChange struct {
	origin string
	serial uint32
}

// NewStore returns an empty store whose zones use params.
func NewStore(params ZoneParams, logger *slog.Logger) *Store {
	return &Store{
		params:    params,
		logger:    logger,
		zones:     make(map[string]*zone),
		segments:  make(map[string]*Segment),
		machines:  make(map[string]*Machine),
		instances: make(map[string]*Instance),
		contrib:   make(map[string][]dns.RR),
		claims:    make(map[netip.Addr]map[string]string),

		claimAddrs: make(map[string][]netip.Addr),
	}
}

// Synced reports whether the first snapshot is in memory.
func (s *Store) Synced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}

// Revision is the API revision of the last change applied.
func (s *Store) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revision
}

// Snapshot is a complete copy of the inputs, as a Watch snapshot gives it.
type Snapshot struct {
	Revision  int64
	Segments  []*Segment
	Machines  []*Machine
	Instances []*Instance
}

// Load replaces everything with snap: the first sync starts every zone at
// snap.Revision; a later one (the stream started over) journals what
// differs from what was served, at snap.Revision.
func (s *Store) Load(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.segments = make(map[string]*Segment, len(snap.Segments))
	for _, seg := range snap.Segments {
		s.segments[seg.ID] = seg
	}
	s.machines = make(map[string]*Machine, len(snap.Machines))
	for _, m := range snap.Machines {
		s.machines[m.ID] = m
	}
	s.instances = make(map[string]*Instance, len(snap.Instances))
	for _, in := range snap.Instances {
		s.instances[in.ID] = in
	}
	if !s.synced {
		s.rederive()
		s.synced = true
		for _, z := range s.zones {
			z.pending = nil
			z.soa.Serial = uint32(snap.Revision)
			z.gen.Add(1)
		}
		s.revision = snap.Revision
		s.lastSync = time.Now()
		s.changed(nil)
		return
	}
	s.lastSync = time.Now()
	s.begin()
	s.rederive()
	s.commit(snap.Revision)
}

// PutSegment applies a created or updated segment at revision rev.
func (s *Store) PutSegment(rev int64, seg *Segment) {
	s.apply(rev, func() {
		s.segments[seg.ID] = seg
		s.rederive()
	})
}

// DeleteSegment applies a deleted segment.
func (s *Store) DeleteSegment(rev int64, id string) {
	s.apply(rev, func() {
		delete(s.segments, id)
		s.rederive()
	})
}

// PutMachine applies a created or updated machine.
func (s *Store) PutMachine(rev int64, m *Machine) {
	s.apply(rev, func() {
		s.machines[m.ID] = m
		s.deriveMachine(m.ID)
	})
}

// DeleteMachine applies a deleted machine.
func (s *Store) DeleteMachine(rev int64, id string) {
	s.apply(rev, func() {
		delete(s.machines, id)
		s.deriveMachine(id)
	})
}

// PutInstance applies a created or updated instance.
func (s *Store) PutInstance(rev int64, in *Instance) {
	s.apply(rev, func() {
		s.instances[in.ID] = in
		s.deriveInstance(in.ID)
	})
}

// DeleteInstance applies a deleted instance.
func (s *Store) DeleteInstance(rev int64, id string) {
	s.apply(rev, func() {
		delete(s.instances, id)
		s.deriveInstance(id)
	})
}

// apply runs change under the write lock; once synced, the records it
// changes are journalled at rev.
func (s *Store) apply(rev int64, change func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		// Before the snapshot is complete only the inputs change; Load
		// derives the records. The stream does not send changes then,
		// but a test or a replay may.
		change()
		return
	}
	s.begin()
	change()
	s.commit(rev)
}

func (s *Store) begin() {
	for _, z := range s.zones {
		z.pending = make(map[string]*pendingRR)
	}
}

// commit nets out each zone's pending change; a zone that changed gets
// serial rev and a journal entry.
func (s *Store) commit(rev int64) {
	if rev > s.revision {
		s.revision = rev
	}
	var changes []serialChange
	for _, z := range s.zones {
		pending := z.pending
		z.pending = nil
		var d Diff
		for _, p := range pending {
			switch {
			case p.delta < 0:
				d.Removed = append(d.Removed, p.rr)
			case p.delta > 0:
				d.Added = append(d.Added, p.rr)
			}
		}
		if len(d.Removed) == 0 && len(d.Added) == 0 && !z.fresh() {
			continue
		}
		sortRRs(d.Removed)
		sortRRs(d.Added)
		d.From = z.soa.Serial
		d.To = uint32(rev)
		if d.To == d.From {
			// Only a replayed or repeated revision; serials must grow.
			d.To++
		}
		z.soa = copySOA(z.soa)
		z.soa.Serial = d.To
		if z.journalled() {
			z.journal = append(z.journal, d)
			if n := len(z.journal) - s.params.JournalLen; n > 0 {
				z.journal = slices.Delete(z.journal, 0, n)
			}
		}
		z.gen.Add(1)
		changes = append(changes, serialChange{z.origin, d.To})
	}
	s.changed(changes)
}

// fresh and journalled tell a zone created in this change (which starts
// at the change's revision with an empty journal) from one that existed.
func (z *zone) fresh() bool      { return z.soa.Serial == 0 }
func (z *zone) journalled() bool { return z.soa.Serial != 0 }

func (s *Store) changed(changes []serialChange) {
	for _, c := range changes {
		for _, ch := range s.subs {
			select {
			case ch <- c:
			default:
				// A slow subscriber misses a serial; the next one
				// tells it the zone changed again.
			}
		}
	}
	if s.onChange != nil {
		s.onChange(s)
	}
}

func sortRRs(rrs []dns.RR) {
	slices.SortFunc(rrs, func(a, b dns.RR) int { return strings.Compare(a.String(), b.String()) })
}

func copySOA(soa *dns.SOA) *dns.SOA {
	c := *soa
	return &c
}

// zoneOf returns the zone holding name (lower-case FQDN), the deepest one.
func (s *Store) zoneOf(name string) *zone {
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if z := s.zones[name[off:]]; z != nil {
			return z
		}
	}
	return s.zones["."]
}

// setContrib replaces the records of source key with rrs.
func (s *Store) setContrib(key string, rrs []dns.RR) {
	old := s.contrib[key]
	for _, rr := range old {
		if z := s.zoneOf(rr.Header().Name); z != nil {
			z.remove(rr)
		}
	}
	if len(rrs) == 0 {
		delete(s.contrib, key)
		return
	}
	s.contrib[key] = rrs
	for _, rr := range rrs {
		if z := s.zoneOf(rr.Header().Name); z != nil {
			z.add(rr)
		}
	}
}

// rederive recomputes the zone set and every contribution.
func (s *Store) rederive() {
	want := make(map[string]bool)
	for _, seg := range s.segments {
		if seg.Domain != "" {
			want[seg.Domain] = true
		}
		if seg.Prefix.IsValid() {
			for _, z := range reverseZones(seg.Prefix) {
				want[z] = true
			}
		}
	}
	// Take every record away, then change the zone set, then put the
	// records back: a record lands in the zone that holds it now.
	keys := make([]string, 0, len(s.contrib))
	for k := range s.contrib {
		keys = append(keys, k)
	}
	for _, k := range keys {
		s.setContrib(k, nil)
	}
	var added, removed []string
	for origin := range s.zones {
		if !want[origin] {
			s.zones[origin].gen.Add(1)
			delete(s.zones, origin)
			removed = append(removed, origin)
		}
	}
	for origin := range want {
		if s.zones[origin] == nil {
			z := newZone(origin)
			z.soa = s.newSOA(origin)
			if s.synced {
				z.pending = make(map[string]*pendingRR)
			}
			s.zones[origin] = z
			added = append(added, origin)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	if len(added) > 0 || len(removed) > 0 {
		// A new zone inside another takes names from it: every cached
		// answer may be stale.
		for _, z := range s.zones {
			z.gen.Add(1)
		}
	}
	for _, o := range added {
		s.logger.Info("zone added", "zone", o)
	}
	for _, o := range removed {
		s.logger.Info("zone removed", "zone", o)
	}
	for origin := range s.zones {
		s.setContrib("apex/"+origin, s.apexRecords(origin))
	}
	s.setContrib("glue", s.glueRecords())
	for id := range s.segments {
		s.setContrib("s/"+id, s.staticRecords(s.segments[id]))
	}
	s.claims = make(map[netip.Addr]map[string]string)
	s.claimAddrs = make(map[string][]netip.Addr)
	for id := range s.machines {
		s.deriveMachine(id)
	}
	for id := range s.instances {
		s.deriveInstance(id)
	}
}

func (s *Store) newSOA(origin string) *dns.SOA {
	p := s.params
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: p.TTL},
		Ns:      p.PrimaryNS,
		Mbox:    p.Contact,
		Serial:  0,
		Refresh: p.Refresh,
		Retry:   p.Retry,
		Expire:  p.Expire,
		Minttl:  p.Minimum,
	}
}

func (s *Store) apexRecords(origin string) []dns.RR {
	rrs := make([]dns.RR, 0, len(s.params.NS))
	for _, ns := range s.params.NS {
		rrs = append(rrs, &dns.NS{Hdr: s.hdr(origin, dns.TypeNS, 0), Ns: ns})
	}
	return rrs
}

func (s *Store) glueRecords() []dns.RR {
	var rrs []dns.RR
	names := make([]string, 0, len(s.params.NSAddress))
	for n := range s.params.NSAddress {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, a := range s.params.NSAddress[name] {
			rrs = append(rrs, s.addrRR(name, a))
		}
	}
	return rrs
}

func (s *Store) hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	if ttl == 0 {
		ttl = s.params.TTL
	}
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func (s *Store) addrRR(name string, a netip.Addr) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: s.hdr(name, dns.TypeA, 0), A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA, 0), AAAA: a.AsSlice()}
}

// staticRecords turns a segment's static records into RRs; one that does
// not parse is left out and logged.
func (s *Store) staticRecords(seg *Segment) []dns.RR {
	if seg.Domain == "" {
		return nil
	}
	var rrs []dns.RR
	for _, r := range seg.Records {
		owner := seg.Domain
		if n := strings.TrimSuffix(r.Name, "."); n != "" && n != "@" {
			owner = fqdn(n + "." + seg.Domain)
		}
		ttl := r.TTL
		if ttl == 0 {
			ttl = s.params.TTL
		}
		t := strings.ToUpper(r.Type)
		switch t {
		case "CNAME", "TXT", "SRV":
		default:
			s.logger.Warn("static record skipped: type not served", "segment", seg.ID, "name", r.Name, "type", r.Type)
			continue
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", owner, ttl, t, r.Value))
		if err != nil || rr == nil {
			s.logger.Warn("static record skipped: value does not parse", "segment", seg.ID, "name", r.Name, "type", r.Type, "error", err)
			continue
		}
		rr.Header().Name = owner
		if c, ok := rr.(*dns.CNAME); ok {
			c.Target = lower(c.Target)
		}
		rrs = append(rrs, rr)
	}
	return rrs
}

// segmentFor returns the segment whose prefix holds a, the longest.
func (s *Store) segmentFor(a netip.Addr) *Segment {
	var best *Segment
	for _, seg := range s.segments {
		if seg.Prefix.IsValid() && seg.Prefix.Contains(a) && (best == nil || seg.Prefix.Bits() > best.Prefix.Bits() ||
			seg.Prefix.Bits() == best.Prefix.Bits() && seg.ID < best.ID) {
			best = seg
		}
	}
	return best
}

// deriveMachine recomputes the forward records and PTR claims of machine
// id (gone when it was deleted).
func (s *Store) deriveMachine(id string) {
	key := "m/" + id
	var rrs []dns.RR
	claims := map[netip.Addr]string{}
	if m := s.machines[id]; m != nil && m.Hostname != "" {
		for _, ifc := range m.Interfaces {
			seg := s.segments[ifc.SegmentID]
			if seg == nil || seg.Domain == "" || !ifc.Address.IsValid() {
				continue
			}
			name := fqdn(m.Hostname + "." + seg.Domain)
			rrs = append(rrs, s.addrRR(name, ifc.Address))
			claims[ifc.Address] = name
		}
	}
	s.setContrib(key, rrs)
	s.setClaims(key, claims)
}

// deriveInstance recomputes the records of instance id.
func (s *Store) deriveInstance(id string) {
	key := "i/" + id
	var rrs []dns.RR
	claims := map[netip.Addr]string{}
	if in := s.instances[id]; in != nil && in.Active && in.Hostname != "" && in.Address.IsValid() {
		if seg := s.segmentFor(in.Address); seg != nil && seg.Domain != "" {
			name := fqdn(in.Hostname + "." + seg.Domain)
			rrs = append(rrs, s.addrRR(name, in.Address))
			claims[in.Address] = name
		}
	}
	s.setContrib(key, rrs)
	s.setClaims(key, claims)
}

// setClaims replaces the PTR claims of source key and recomputes the PTR
// of every address whose claims changed.
func (s *Store) setClaims(key string, claims map[netip.Addr]string) {
	var touched []netip.Addr
	for _, a := range s.claimAddrs[key] {
		if name, ok := claims[a]; !ok || s.claims[a][key] != name {
			delete(s.claims[a], key)
			if len(s.claims[a]) == 0 {
				delete(s.claims, a)
			}
			touched = append(touched, a)
		}
	}
	addrs := make([]netip.Addr, 0, len(claims))
	for a, name := range claims {
		addrs = append(addrs, a)
		m := s.claims[a]
		if m == nil {
			m = make(map[string]string, 1)
			s.claims[a] = m
		}
		if m[key] != name {
			m[key] = name
			touched = append(touched, a)
		}
	}
	if len(addrs) == 0 {
		delete(s.claimAddrs, key)
	} else {
		s.claimAddrs[key] = addrs
	}
	for _, a := range touched {
		s.derivePTR(a)
	}
}

// derivePTR sets the PTR of a: an active instance's name before a
// machine's, the smallest source key among equals.
func (s *Store) derivePTR(a netip.Addr) {
	key := "p/" + a.String()
	var best, bestName string
	for k, name := range s.claims[a] {
		if best == "" || rankClaim(k, best) < 0 {
			best, bestName = k, name
		}
	}
	seg := s.segmentFor(a)
	if best == "" || seg == nil {
		s.setContrib(key, nil)
		return
	}
	owner := ptrName(a, seg.Prefix)
	s.setContrib(key, []dns.RR{&dns.PTR{Hdr: s.hdr(owner, dns.TypePTR, 0), Ptr: bestName}})
}

func rankClaim(a, b string) int {
	ai, bi := strings.HasPrefix(a, "i/"), strings.HasPrefix(b, "i/")
	if ai != bi {
		if ai {
			return -1
		}
		return 1
	}
	return cmp.Compare(a, b)
}

// note moves the applied revision to rev for a change that touches no
// record.
func (s *Store) note(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revision = max(s.revision, rev)
}

func (s *Store) zoneCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.zones)
}

func (s *Store) recordCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, z := range s.zones {
		n += z.records + 1
	}
	return n
}
