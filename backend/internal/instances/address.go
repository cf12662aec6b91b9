package instances

import (
	"context"
	"fmt"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/google/uuid"
)

// holdAddress holds, in tx, the lease of machine id's boot interface for
// an instance, and returns its address: the interface whose lease on its
// segment is unexpired, the most recently renewed one if several are (the
// interface the machine last booted from); "" when none is. The lease
// then expires at ipam.HeldUntil, which no DHCP renewal, release or
// decline changes, until ReleaseAddress gives it back.
func holdAddress(ctx context.Context, tx *ent.Tx, id uuid.UUID) (string, error) {
	nics, err := tx.NIC.Query().Where(nic.MachineID(id), nic.SegmentIDNotNil()).All(ctx)
	if err != nil {
		return "", fmt.Errorf("read interfaces: %w", err)
	}
	if len(nics) == 0 {
		return "", nil
	}
	segmentOf := make(map[string]uuid.UUID, len(nics))
	macs := make([]string, len(nics))
	for i, n := range nics {
		macs[i], segmentOf[n.MAC] = n.MAC, *n.SegmentID
	}
	leases, err := tx.Lease.Query().Where(lease.MACIn(macs...), lease.ExpireTimeGT(store.Now())).
		Order(ent.Desc(lease.FieldRenewTime), ent.Desc(lease.FieldID)).All(ctx)
	if err != nil {
		return "", fmt.Errorf("read leases: %w", err)
	}
	for _, l := range leases {
		if segmentOf[l.MAC] != l.SegmentID {
			continue // a lease on a segment the interface has left
		}
		if err := tx.Lease.UpdateOneID(l.ID).SetExpireTime(ipam.HeldUntil).Exec(ctx); err != nil {
			return "", fmt.Errorf("hold lease of %s: %w", l.MAC, err)
		}
		return l.Address, nil
	}
	return "", nil
}

// ReleaseAddress gives back, in tx, the address held for inst since its
// creation: the lease expires one lease time of its segment from now, as
// after a DHCP renewal, and a renewal may extend it again. The lifecycle
// controller calls it when an instance becomes Released or Failed. It
// changes only a lease still held (ipam.HeldUntil) on the instance's
// address, of one of its machine's interfaces, so calling it again, or
// after the address went to another instance, changes nothing.
func ReleaseAddress(ctx context.Context, tx *ent.Tx, inst *ent.Instance) error {
	if inst.Address == "" {
		return nil
	}
	q := tx.Lease.Query().Where(lease.Address(inst.Address), lease.ExpireTimeGTE(ipam.HeldUntil))
	if inst.MachineID != nil {
		macs, err := tx.NIC.Query().Where(nic.MachineID(*inst.MachineID)).Select(nic.FieldMAC).Strings(ctx)
		if err != nil {
			return fmt.Errorf("read interfaces: %w", err)
		}
		// A machine deleted since (its interfaces with it) leaves the
		// address to find by itself.
		if len(macs) > 0 {
			q = q.Where(lease.MACIn(macs...))
		}
	}
	held, err := q.WithSegment().All(ctx)
	if err != nil {
		return fmt.Errorf("read held lease: %w", err)
	}
	now := store.Now()
	for _, l := range held {
		expire := now.Add(time.Duration(l.Edges.Segment.LeaseSeconds) * time.Second)
		if err := tx.Lease.UpdateOneID(l.ID).SetExpireTime(expire).Exec(ctx); err != nil {
			return fmt.Errorf("give back address %s of instance %s: %w", l.Address, inst.ID, err)
		}
	}
	return nil
}
