package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"

	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/hook"
	"github.com/carbide-dev/carbide/ent/lease"
)

// AddressNum is the number of an IPv4 address, as leases.address_num holds
// it: the four bytes read as one unsigned big-endian number, so that numbers
// sort as addresses do.
func AddressNum(a netip.Addr) int64 {
	b := a.As4()
	return int64(binary.BigEndian.Uint32(b[:]))
}

// setAddressNum is a hook on every lease write through ent: whenever it sets
// address, it sets address_num to match. Queries written in SQL set both.
func setAddressNum(next ent.Mutator) ent.Mutator {
	return hook.LeaseFunc(func(ctx context.Context, m *ent.LeaseMutation) (ent.Value, error) {
		if addr, ok := m.Address(); ok {
			a, err := netip.ParseAddr(addr)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("lease address %q is not an IPv4 address", addr)
			}
			m.SetAddressNum(AddressNum(a))
		}
		return next.Mutate(ctx, m)
	})
}

// clearExpiryNoted is a hook on every lease write through ent: a write
// that sets expire_time (a new lease, a renewal, a hold for an instance, a
// release) clears expiry_noted, so that the lease's next expiry is noted
// again (ipam.NoteExpiries), unless the write sets expiry_noted itself.
// Queries written in SQL clear it themselves.
func clearExpiryNoted(next ent.Mutator) ent.Mutator {
	return hook.LeaseFunc(func(ctx context.Context, m *ent.LeaseMutation) (ent.Value, error) {
		if _, ok := m.ExpireTime(); ok {
			if _, set := m.ExpiryNoted(); !set {
				m.SetExpiryNoted(false)
			}
		}
		return next.Mutate(ctx, m)
	})
}

// fillAddressNums sets address_num on the leases written before the column
// existed (their migration left it 0; 0.0.0.0 is never leased): on
// PostgreSQL with one UPDATE, on the embedded store in batches. Once done
// it costs one query that finds nothing.
func fillAddressNums(ctx context.Context, client *ent.Client, dialectName string) error {
	if dialectName == dialect.Postgres {
		if _, err := client.ExecContext(ctx,
			`UPDATE leases SET address_num = address::inet - '0.0.0.0'::inet WHERE address_num = 0`); err != nil {
			return fmt.Errorf("set address_num of older leases: %w", err)
		}
		return nil
	}
	for {
		ls, err := client.Lease.Query().Where(lease.AddressNum(0)).
			Select(lease.FieldID, lease.FieldAddress).Limit(1000).All(ctx)
		if err != nil {
			return fmt.Errorf("read leases without address_num: %w", err)
		}
		if len(ls) == 0 {
			return nil
		}
		for _, l := range ls {
			// The hook computes address_num from the address.
			if err := client.Lease.UpdateOneID(l.ID).SetAddress(l.Address).Exec(ctx); err != nil {
				return fmt.Errorf("set address_num of lease %d: %w", l.ID, err)
			}
		}
	}
}
