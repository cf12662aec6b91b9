package dhcp

import (
	"context"
	"fmt"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/google/uuid"
)

// EnrolReason is the reason of the first state of a machine DHCP enrolled.
const EnrolReason = "enrolled by DHCP"

// RetentionProcedure is the procedure of the audit records of machines
// that PruneDiscovered removed; RetentionPrincipal is who they name.
const (
	RetentionProcedure = "carbide-api/remove-stale-discovered-machines"
	RetentionPrincipal = "carbide-api"
)

// staleDiscoveredQuery selects up to $2 machines that DHCP enrolled and
// nothing else ever touched: still discovered, with no inventory, unchanged
// since $1, having held leases of which none expires at $1 or later.
const staleDiscoveredQuery = `SELECT m.id FROM machines AS m
	WHERE m.state = 'discovered' AND m.inventory IS NULL AND m.state_time < $1 AND m.update_time < $1
		AND EXISTS (SELECT 1 FROM transitions AS t
			WHERE t.machine_id = m.id AND t.from_state IS NULL AND t.reason = '` + EnrolReason + `')
		AND NOT EXISTS (SELECT 1 FROM nics AS n JOIN leases AS l ON l.mac = n.mac
			WHERE n.machine_id = m.id AND l.expire_time >= $1)
	LIMIT $2`

// PruneDiscovered removes, in transactions of at most batch machines, the
// machines DHCP enrolled that stayed discovered with no inventory, and
// whose leases all expired, before the given time: what a flood of
// made-up MACs leaves behind. With each machine go its interfaces, its
// state history and its expired leases. Each transaction records a
// Deleted change per machine, for Watch, and one audit record naming them
// (RetentionProcedure). It returns how many machines it removed.
func PruneDiscovered(ctx context.Context, st *store.Store, before time.Time, batch int) (int, error) {
	removed := 0
	for {
		n, err := pruneBatch(ctx, st, before.UTC(), batch)
		removed += n
		if err != nil || n < batch {
			return removed, err
		}
	}
}

func pruneBatch(ctx context.Context, st *store.Store, before time.Time, batch int) (int, error) {
	var ids []uuid.UUID
	err := st.InTx(ctx, func(tx *ent.Tx) error {
		rows, err := tx.QueryContext(ctx, st.SQL(staleDiscoveredQuery), before, batch)
		if err != nil {
			return fmt.Errorf("find stale discovered machines: %w", err)
		}
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("find stale discovered machines: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find stale discovered machines: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		// Locked, the machines' snapshots recorded below show every
		// change recorded before.
		if err := machines.Lock(ctx, st, tx, ids...); err != nil {
			return err
		}
		last, err := machines.Load(ctx, tx.Client(), ids...)
		if err != nil {
			return err
		}
		macs, err := tx.NIC.Query().Where(nic.MachineIDIn(ids...)).Select(nic.FieldMAC).Strings(ctx)
		if err != nil {
			return fmt.Errorf("read interfaces: %w", err)
		}
		if _, err := tx.Lease.Delete().Where(lease.MACIn(macs...), lease.ExpireTimeLT(before)).Exec(ctx); err != nil {
			return fmt.Errorf("delete expired leases: %w", err)
		}
		// Interfaces and state history go with the machine (ON DELETE CASCADE).
		if _, err := tx.Machine.Delete().Where(machine.IDIn(ids...)).Exec(ctx); err != nil {
			return fmt.Errorf("delete machines: %w", err)
		}
		names := make([]string, len(ids))
		changed := make([]store.Changed, len(last))
		for i, m := range last {
			changed[i] = store.Changed{ID: m.GetId(), Resource: m}
		}
		for i, id := range ids {
			names[i] = id.String()
		}
		if err := tx.AuditRecord.Create().
			SetTime(store.Now()).SetPrincipal(RetentionPrincipal).SetProcedure(RetentionProcedure).
			SetResourceIds(names).SetCode("ok").Exec(ctx); err != nil {
			return fmt.Errorf("write audit record: %w", err)
		}
		return st.RecordChanges(ctx, tx, store.KindMachine, store.Deleted, changed)
	})
	if err != nil {
		return 0, err
	}
	return len(ids), nil
}
