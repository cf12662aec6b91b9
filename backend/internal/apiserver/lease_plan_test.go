package apiserver

import (
	"database/sql"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/uuid"
)

// The lease path looks up each MAC on the unique indexes however the
// tables have grown since its statements were prepared. PostgreSQL plans
// a prepared statement once for all parameters after a few runs (a
// generic plan) and keeps that plan; planned while the tables are empty,
// as in a new database, a join of the MACs with the leases became a scan
// of all the segment's leases per call, and stayed one. Here the first
// calls prepare the statements on nearly empty tables, then the segment
// fills with 20,000 leases, and the calls that follow must each touch
// about as many blocks as lookups of their MACs do (pg_stat_statements'
// shared blocks), not the hundreds a scan of those leases does.
func TestLeaseReadsLookUpEachMAC(t *testing.T) {
	t.Parallel()
	forEachStoreWithStatements(t, func(t *testing.T, e *env, stats *sql.DB) {
		seg := createSegment(t, e, &networkv1.Segment{
			Name: "plans", Prefix: "10.64.0.0/16", Gateway: "10.64.0.1",
			Ranges: []*networkv1.AddressRange{{Start: "10.64.0.10", End: "10.64.255.250"}},
		})
		c := e.as(t, "dhcp")
		origin := &dhcpv1.Origin{LocalAddress: "10.64.0.1"}
		const calls, perCall = 8, 8
		batch := func(round int) []*dhcpv1.LeaseRequest {
			reqs := make([]*dhcpv1.LeaseRequest, perCall)
			for i := range reqs {
				reqs[i] = &dhcpv1.LeaseRequest{Mac: fmt.Sprintf("02:dd:00:00:%02x:%02x", round, i), Origin: origin}
			}
			return reqs
		}
		leased := make(map[string]bool)
		leases := make(map[string]string) // MAC -> address
		for round := range calls {
			reqs := batch(round)
			for k, r := range dhcpLeaseBatch(t, c, reqs...) {
				if r.GetLease() == nil {
					t.Fatalf("LeaseBatch: %v", r.GetError())
				}
				leased[r.GetLease().GetAddress()] = true
				leases[reqs[k].GetMac()] = r.GetLease().GetAddress()
			}
		}
		release := func(mac string) {
			t.Helper()
			if _, err := c.DHCP.Release(t.Context(), connect.NewRequest(&dhcpv1.ReleaseRequest{Mac: mac, Address: leases[mac]})); err != nil {
				t.Fatalf("Release(%s): %v", mac, err)
			}
		}
		for _, r := range batch(calls - 1) {
			release(r.GetMac())
		}

		var addrs []netip.Addr
		for a := netip.MustParseAddr("10.64.64.0"); len(addrs) < 20000; a = a.Next() {
			if !leased[a.String()] {
				addrs = append(addrs, a)
			}
		}
		fillSegment(t, e, uuid.MustParse(seg.GetId()), addrs, 0, time.Now().Add(time.Hour))
		resetStatements(t, stats)

		// The same MACs again: each call reads and writes nothing (but
		// for the released ones, leased again).
		for round := range calls {
			for _, r := range dhcpLeaseBatch(t, c, batch(round)...) {
				if r.GetLease() == nil {
					t.Fatalf("LeaseBatch: %v", r.GetError())
				}
			}
		}
		if stats == nil {
			return
		}
		n, blocks := statementTotals(t, stats, `query ILIKE '%nics AS n%' AND query ILIKE '%leases AS l%'`)
		// A lookup of a MAC in the indexes of nics, machines and leases
		// and in those rows touches about a dozen blocks; 20,000 leases
		// fill more than 200.
		if n != calls {
			t.Fatalf("the read of the lease path ran %d times for %d calls", n, calls)
		}
		if most := int64(perCall * 16); blocks/n > most {
			t.Errorf("the read of the lease path touched %d blocks per call of %d MACs; want at most %d", blocks/n, perCall, most)
		}

		// Releases end each lease by its key, not by a walk of the
		// segment's unexpired leases.
		resetStatements(t, stats)
		for _, r := range batch(0) {
			release(r.GetMac())
		}
		n, blocks = statementTotals(t, stats, `query ILIKE 'UPDATE%leases%'`)
		if n < perCall {
			t.Fatalf("%d updates of leases for %d releases", n, perCall)
		}
		if blocks/n > 32 {
			t.Errorf("updates of leases touched %d blocks each; want at most 32 (a lookup by key)", blocks/n)
		}
	})
}

// resetStatements clears pg_stat_statements; stats nil (the embedded
// store) does nothing.
func resetStatements(t *testing.T, stats *sql.DB) {
	t.Helper()
	if stats == nil {
		return
	}
	if _, err := stats.ExecContext(t.Context(), "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatalf("reset pg_stat_statements: %v", err)
	}
}
