package ipam

import (
	"context"
	"fmt"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/google/uuid"
)

// NoteExpiries makes lease expiries visible to watchers. A machine shows
// the addresses of its unexpired leases only, but a lease expires by the
// clock, with no write, so nothing put the machine in the change log and
// a watcher (the DNS daemon) would keep an address that went back to the
// pool. NoteExpiries marks up to limit leases that expired at or before
// now and were not noted yet (expiry_noted, which every write that
// creates or extends a lease clears), and records an Updated change of
// each machine owning one of their MACs, in one transaction. It returns
// how many leases it marked.
//
// Every API replica runs it: on PostgreSQL it skips the leases another
// replica (or a renewal) has locked, so replicas never mark one twice and
// never wait for each other; the embedded store's transactions are serial.
func NoteExpiries(ctx context.Context, st *store.Store, now time.Time, limit int) (int, error) {
	var n int
	err := st.InTx(ctx, func(tx *ent.Tx) error {
		q := tx.Lease.Query().Where(lease.ExpiryNoted(false), lease.ExpireTimeLTE(now)).
			Order(ent.Asc(lease.FieldExpireTime), ent.Asc(lease.FieldID)).Limit(limit)
		if st.Dialect == dialect.Postgres {
			q = q.ForUpdate(entsql.WithLockAction(entsql.SkipLocked))
		}
		expired, err := q.Select(lease.FieldID, lease.FieldMAC).All(ctx)
		if err != nil {
			return fmt.Errorf("read expired leases: %w", err)
		}
		if len(expired) == 0 {
			n = 0
			return nil
		}
		ids := make([]int64, len(expired))
		macs := make([]string, len(expired))
		for i, l := range expired {
			ids[i], macs[i] = l.ID, l.MAC
		}
		// The rows are locked (or the store is serial): the expiry read
		// above still holds.
		if n, err = tx.Lease.Update().Where(lease.IDIn(ids...)).SetExpiryNoted(true).Save(ctx); err != nil {
			return fmt.Errorf("note lease expiries: %w", err)
		}
		owners, err := tx.NIC.Query().Where(nic.MACIn(macs...)).Select(nic.FieldMachineID).All(ctx)
		if err != nil {
			return fmt.Errorf("read interfaces: %w", err)
		}
		seen := map[uuid.UUID]bool{}
		var machineIDs []uuid.UUID
		for _, o := range owners {
			if !seen[o.MachineID] {
				seen[o.MachineID] = true
				machineIDs = append(machineIDs, o.MachineID)
			}
		}
		return machines.RecordChanges(ctx, st, tx, machineIDs, store.Updated)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
