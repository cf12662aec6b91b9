package segments

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/segment"
	"github.com/google/uuid"
)

// checkDNSClashes refuses a CNAME that shares its name with other data in
// the segment's domain (RFC 1034 section 3.6.2): another record of this
// segment or of another segment with the same domain, or the hostname of
// a machine or active instance there. The caller holds
// store.LockSegments, so two segments cannot add clashing records at once.
func checkDNSClashes(ctx context.Context, st *store.Store, tx *ent.Tx, self uuid.UUID, sp *spec) error {
	if sp.domain == "" || len(sp.dnsRecords) == 0 {
		return nil
	}
	domain := strings.ToLower(sp.domain)
	clash := func(format string, args ...any) error {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("segment.dns_records: "+format, args...))
	}
	cnames := map[string]int{} // name -> index
	for i, r := range sp.dnsRecords {
		if r.Type == typeCNAME {
			cnames[r.Name] = i
		}
	}
	if len(cnames) == 0 {
		return nil
	}
	for i, r := range sp.dnsRecords {
		if j, ok := cnames[r.Name]; ok && j != i {
			return clash("dns_records[%d] is a CNAME for %s, and dns_records[%d] (%s) has the same name; a CNAME cannot share its name with other data",
				j, fqdn(r.Name, domain), i, r.Type)
		}
	}

	// Hostnames of the domain are checked under its lock (see
	// machines.CheckHostname).
	if err := machines.LockDomains(ctx, st, tx, domain); err != nil {
		return err
	}
	// Other segments serving the same domain: their records, and their
	// prefixes for the instances' addresses.
	same, err := tx.Segment.Query().Where(segment.IDNEQ(self), segment.DomainEqualFold(domain)).All(ctx)
	if err != nil {
		return fmt.Errorf("read segments: %w", err)
	}
	segIDs := []uuid.UUID{}
	if self != uuid.Nil {
		segIDs = append(segIDs, self)
	}
	prefixes := []netip.Prefix{sp.prefix}
	for _, o := range same {
		segIDs = append(segIDs, o.ID)
		if p, err := netip.ParsePrefix(o.Prefix); err == nil {
			prefixes = append(prefixes, p)
		}
		for _, r := range o.DNSRecords {
			if _, ok := cnames[r.Name]; ok {
				return clash("the CNAME %s clashes with a %s record of segment %q (%s); a CNAME cannot share its name with other data",
					fqdn(r.Name, domain), r.Type, o.Name, o.ID)
			}
		}
	}

	// Machines with an interface on one of those segments.
	if len(segIDs) > 0 {
		hosts, err := tx.Machine.Query().
			Where(machine.HostnameNEQ(""), machine.HasNicsWith(nic.SegmentIDIn(segIDs...))).
			Select(machine.FieldID, machine.FieldHostname).All(ctx)
		if err != nil {
			return fmt.Errorf("read machines: %w", err)
		}
		for _, m := range hosts {
			if _, ok := cnames[strings.ToLower(m.Hostname)]; ok {
				return clash("the CNAME %s clashes with the hostname of machine %s; a CNAME cannot share its name with an A record",
					fqdn(strings.ToLower(m.Hostname), domain), m.ID)
			}
		}
	}

	// Active instances whose address lies in one of those segments.
	names := make([]string, 0, len(cnames))
	for n := range cnames {
		names = append(names, n)
	}
	insts, err := tx.Instance.Query().
		Where(instance.StateNEQ(instance.StateReleased), instance.AddressNEQ(""), instance.HostnameIn(names...)).
		Select(instance.FieldID, instance.FieldHostname, instance.FieldAddress).All(ctx)
	if err != nil {
		return fmt.Errorf("read instances: %w", err)
	}
	for _, in := range insts {
		a, err := netip.ParseAddr(in.Address)
		if err != nil {
			continue
		}
		for _, p := range prefixes {
			if p.Contains(a) {
				return clash("the CNAME %s clashes with the hostname of instance %s; a CNAME cannot share its name with an A record",
					fqdn(in.Hostname, domain), in.ID)
			}
		}
	}
	return nil
}

// fqdn is a record's relative name in domain, as a message shows it.
func fqdn(name, domain string) string {
	if name == "" {
		return domain + "."
	}
	return name + "." + domain + "."
}
