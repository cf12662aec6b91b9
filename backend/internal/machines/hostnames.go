package machines

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/segment"
	"github.com/google/uuid"
)

// LockDomains takes, until tx ends, one lock per DNS domain (any case), in
// name order so that two transactions locking several cannot deadlock.
// Every check of the names of a domain takes it first: hostnames of
// machines and instances (CheckHostname) and static records
// (SegmentService), so that two writers cannot both find a name free.
func LockDomains(ctx context.Context, st *store.Store, tx *ent.Tx, domains ...string) error {
	sorted := make([]string, 0, len(domains))
	for _, d := range domains {
		if d = strings.ToLower(d); d != "" && !slices.Contains(sorted, d) {
			sorted = append(sorted, d)
		}
	}
	slices.Sort(sorted)
	for _, d := range sorted {
		h := fnv.New64a()
		h.Write([]byte("carbide dns domain " + d))
		if err := st.Lock(ctx, tx, int64(h.Sum64())); err != nil {
			return fmt.Errorf("lock domain %s: %w", d, err)
		}
	}
	return nil
}

// CheckHostname refuses, in tx, a hostname that would give one DNS name
// two holders. The name is for machine m itself (inst is uuid.Nil) or for
// instance inst on machine m. Its domains are those of the segments of
// m's interfaces; in each, no other machine (with an interface on a
// segment of that domain) and no other active (not Released) instance (on
// such a machine) may use hostname, else AlreadyExists names the holder
// and the domain; a static CNAME of that name in the domain is
// FailedPrecondition. The machine and the instances on m itself are not
// other holders: they share its address. It takes the domains' locks
// (LockDomains) first, so concurrent writers of one name are serialised
// until tx commits.
func CheckHostname(ctx context.Context, st *store.Store, tx *ent.Tx, hostname string, m, inst uuid.UUID) error {
	if hostname == "" {
		return nil
	}
	hostname = strings.ToLower(hostname)
	segIDs, err := tx.NIC.Query().Where(nic.MachineID(m), nic.SegmentIDNotNil()).
		Unique(true).Select(nic.FieldSegmentID).All(ctx)
	if err != nil {
		return fmt.Errorf("read interfaces: %w", err)
	}
	if len(segIDs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(segIDs))
	for _, n := range segIDs {
		ids = append(ids, *n.SegmentID)
	}
	own, err := tx.Segment.Query().Where(segment.IDIn(ids...), segment.DomainNEQ("")).
		Select(segment.FieldDomain).Strings(ctx)
	if err != nil {
		return fmt.Errorf("read segments: %w", err)
	}
	if len(own) == 0 {
		return nil
	}
	if err := LockDomains(ctx, st, tx, own...); err != nil {
		return err
	}
	var domains []string
	for _, d := range own {
		if d = strings.ToLower(d); !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	slices.Sort(domains)
	for _, d := range domains {
		segs, err := tx.Segment.Query().Where(segment.DomainEqualFold(d)).All(ctx)
		if err != nil {
			return fmt.Errorf("read segments: %w", err)
		}
		inDomain := make([]uuid.UUID, len(segs))
		for i, s := range segs {
			inDomain[i] = s.ID
			for _, r := range s.DNSRecords {
				if r.Type == "CNAME" && r.Name == hostname {
					return connect.NewError(connect.CodeFailedPrecondition,
						fmt.Errorf("hostname: %s.%s is a CNAME record of segment %q (%s), and a name with a CNAME can have no address; choose another hostname or remove the record",
							hostname, d, s.Name, s.ID))
				}
			}
		}
		other, err := tx.Machine.Query().Where(machine.IDNEQ(m), machine.HostnameEqualFold(hostname),
			machine.HasNicsWith(nic.SegmentIDIn(inDomain...))).First(ctx)
		switch {
		case err == nil:
			return connect.NewError(connect.CodeAlreadyExists,
				fmt.Errorf("hostname: %q is already the hostname of machine %s in domain %s; choose another hostname", hostname, other.ID, d))
		case !ent.IsNotFound(err):
			return fmt.Errorf("read machines: %w", err)
		}
		holder, err := tx.Instance.Query().Where(instance.IDNEQ(inst), instance.StateNEQ(instance.StateReleased),
			instance.HostnameEqualFold(hostname), instance.MachineIDNEQ(m),
			instance.HasMachineWith(machine.HasNicsWith(nic.SegmentIDIn(inDomain...)))).First(ctx)
		switch {
		case err == nil:
			return connect.NewError(connect.CodeAlreadyExists,
				fmt.Errorf("hostname: %q is already the hostname of instance %s in domain %s; choose another hostname", hostname, holder.ID, d))
		case !ent.IsNotFound(err):
			return fmt.Errorf("read instances: %w", err)
		}
	}
	return nil
}
