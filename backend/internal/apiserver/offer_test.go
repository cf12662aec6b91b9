package apiserver

import (
	"database/sql"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/dhcp"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// rowCounts is what the database holds that an offer must not write.
type rowCounts struct {
	machines, nics, leases, machineChanges, leaseAudits, batchAudits int
}

func countRows(t *testing.T, e *env) rowCounts {
	t.Helper()
	ctx := t.Context()
	return rowCounts{
		machines:       e.Store.Client.Machine.Query().CountX(ctx),
		nics:           e.Store.Client.NIC.Query().CountX(ctx),
		leases:         e.Store.Client.Lease.Query().CountX(ctx),
		machineChanges: e.Store.Client.Change.Query().Where(change.KindEQ(change.KindMachine)).CountX(ctx),
		leaseAudits:    len(auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseProcedure)),
		batchAudits:    len(auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseBatchProcedure)),
	}
}

// writeStatements is the SQL condition on pg_stat_statements' query that
// matches every statement that writes.
const writeStatements = `query ~* '\m(insert|update|delete)\M'`

// offerSegment creates a segment for the daemon's own link 10.40.0.1 with
// the given range, and returns its id, an origin on it and DHCP clients.
func offerSegment(t *testing.T, e *env, start, end string) (string, *dhcpv1.Origin, clients) {
	t.Helper()
	seg := createSegment(t, e, &networkv1.Segment{
		Name: "offers", Prefix: "10.40.0.0/24", Gateway: "10.40.0.1",
		Ranges: []*networkv1.AddressRange{{Start: start, End: end}},
	})
	return seg.GetId(), &dhcpv1.Origin{LocalAddress: "10.40.0.1"}, e.as(t, "dhcp")
}

// An offer for a MAC that belongs to no machine writes nothing: no
// machine, interface, lease, change-log entry or audit record, and on
// PostgreSQL no statement that writes at all. The MAC asking again is
// offered the same address. The REQUEST that follows (a Lease without
// offer for the offered address) enrols the machine and leases it exactly
// that address.
func TestDHCPOfferWritesNothing(t *testing.T) {
	t.Parallel()
	forEachStoreWithStatements(t, func(t *testing.T, e *env, stats *sql.DB) {
		segID, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
		mac := testMAC(0x4001)
		before := countRows(t, e)
		resetStatements(t, stats)

		offer := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, ClientHostname: "node-a", Offer: true})
		a, err := netip.ParseAddr(offer.GetAddress())
		if err != nil || a.Less(netip.MustParseAddr("10.40.0.10")) || netip.MustParseAddr("10.40.0.200").Less(a) {
			t.Fatalf("offered %q, want an address of 10.40.0.10-10.40.0.200", offer.GetAddress())
		}
		if !offer.GetTentative() || offer.GetMachineId() != "" || offer.GetHostname() != "node-a" ||
			offer.GetLeaseDuration().AsDuration() != time.Hour || offer.GetOptions().GetSegmentId() != segID {
			t.Errorf("offer = %v, want a tentative offer for an hour, without a machine, with the client's host name and the segment's options", offer)
		}
		again := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, ClientHostname: "node-a", Offer: true})
		if again.GetAddress() != offer.GetAddress() || !again.GetTentative() {
			t.Errorf("second offer = %s (tentative %v), want %s again", again.GetAddress(), again.GetTentative(), offer.GetAddress())
		}
		if after := countRows(t, e); after != before {
			t.Errorf("rows after two offers: %+v, want them unchanged: %+v", after, before)
		}
		if stats != nil {
			if n, _ := statementTotals(t, stats, writeStatements); n != 0 {
				t.Errorf("%d statements that write ran for two offers, want none", n)
			}
		}
		if got := metricValue(t, e, `carbide_dhcp_held_offers_total{segment="offers"}`); got != 2 {
			t.Errorf("carbide_dhcp_held_offers_total = %v, want 2", got)
		}

		l := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, ClientHostname: "node-a", RequestedAddress: offer.GetAddress()})
		if l.GetAddress() != offer.GetAddress() || l.GetTentative() || l.GetMachineId() == "" || l.GetHostname() != "node-a" {
			t.Fatalf("REQUEST for the offered %s: %v, want it leased to a new machine", offer.GetAddress(), l)
		}
		want := before
		want.machines++
		want.nics++
		want.leases++
		want.machineChanges++
		want.leaseAudits++
		if after := countRows(t, e); after != want {
			t.Errorf("rows after the REQUEST: %+v, want %+v", after, want)
		}
		m := getMachine(t, e, l.GetMachineId())
		if m.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED || len(m.GetInterfaces()) != 1 ||
			m.GetInterfaces()[0].GetAddress() != offer.GetAddress() {
			t.Errorf("enrolled machine = %v", m)
		}
	})
}

// Two MACs are never offered the same address by one API process, in
// single calls or in a batch, even when one asks for the address the
// other was offered; each REQUEST then leases its MAC exactly what it was
// offered, in one batch.
func TestDHCPOffersNeverShareAnAddress(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.15") // six addresses
		offered := make(map[string]string)                             // MAC -> address
		check := func(mac string, resp *dhcpv1.LeaseResponse) {
			t.Helper()
			if !resp.GetTentative() {
				t.Fatalf("offer to %s = %v, want a tentative offer", mac, resp)
			}
			for other, a := range offered {
				if a == resp.GetAddress() && other != mac {
					t.Fatalf("%s and %s were both offered %s", other, mac, a)
				}
			}
			offered[mac] = resp.GetAddress()
		}
		for i := range 3 {
			mac := testMAC(0x4100 + i)
			check(mac, dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true}))
		}
		mac := testMAC(0x4103)
		check(mac, dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true, RequestedAddress: offered[testMAC(0x4100)]}))
		var reqs []*dhcpv1.LeaseRequest
		for _, i := range []int{0x4104, 0x4105, 0x4104} {
			reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: testMAC(i), Origin: origin, Offer: true})
		}
		results := dhcpLeaseBatch(t, c, reqs...)
		for k, r := range results[:2] {
			if r.GetLease() == nil {
				t.Fatalf("batch offer to %s: %v", reqs[k].GetMac(), r.GetError())
			}
			check(reqs[k].GetMac(), r.GetLease())
		}
		if got := results[2].GetLease().GetAddress(); got != offered[testMAC(0x4104)] {
			t.Errorf("a MAC's second offer in a batch: %s, want its first %s", got, offered[testMAC(0x4104)])
		}
		if len(offered) != 6 {
			t.Fatalf("%d MACs offered an address, want 6", len(offered))
		}

		reqs = reqs[:0]
		for mac, a := range offered {
			reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, RequestedAddress: a})
		}
		for k, r := range dhcpLeaseBatch(t, c, reqs...) {
			if r.GetLease().GetAddress() != reqs[k].GetRequestedAddress() || r.GetLease().GetTentative() || r.GetLease().GetMachineId() == "" {
				t.Errorf("REQUEST of %s for its offered %s: %v", reqs[k].GetMac(), reqs[k].GetRequestedAddress(), r)
			}
		}
		if n := e.Store.Client.Lease.Query().CountX(t.Context()); n != 6 {
			t.Errorf("%d leases after six REQUESTs, want 6", n)
		}
	})
}

// An offered address that another MAC leases before the REQUEST comes
// (through AddressService here, which knows nothing of offers, as another
// replica would not; see TestDHCPOfferAcrossReplicas) is not leased twice: the REQUEST leases its
// MAC another address, which makes the daemon answer the client with a
// NAK, and the MAC's next DISCOVER is offered a free address.
func TestDHCPOfferTakenMeanwhile(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		segID, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
		mac, thief := testMAC(0x4200), testMAC(0x4201)
		offer := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true})
		if !offer.GetTentative() {
			t.Fatalf("offer = %v, want a tentative one", offer)
		}
		// The DHCP path of this process leases another MAC that asks for
		// the held address another one while others are free.
		asks := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(0x4203), Origin: origin, RequestedAddress: offer.GetAddress()})
		if asks.GetAddress() == offer.GetAddress() {
			t.Errorf("a lease for another MAC took %s, held for the offer", offer.GetAddress())
		}
		taken := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: segID, Mac: thief, RequestedAddress: offer.GetAddress()})
		if taken.GetAddress() != offer.GetAddress() {
			t.Fatalf("AllocateAddress for the offered %s leased %s", offer.GetAddress(), taken.GetAddress())
		}
		l := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, RequestedAddress: offer.GetAddress()})
		if l.GetAddress() == offer.GetAddress() || l.GetTentative() {
			t.Fatalf("REQUEST for the offered %s, leased to %s meanwhile: %v; want another address leased", offer.GetAddress(), thief, l)
		}
		owners := e.Store.Client.Lease.Query().Where(lease.Address(offer.GetAddress())).AllX(t.Context())
		if len(owners) != 1 || owners[0].MAC != thief {
			t.Errorf("leases of %s: %v, want %s's only", offer.GetAddress(), owners, thief)
		}

		other := testMAC(0x4202)
		next := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: other, Origin: origin, Offer: true, RequestedAddress: offer.GetAddress()})
		if a := next.GetAddress(); a == offer.GetAddress() || a == l.GetAddress() || a == asks.GetAddress() || !next.GetTentative() {
			t.Errorf("offer asking for a leased address: %v, want a free one", next)
		}
	})
}

// Two API replicas on one database may offer one address to two MACs:
// their holds are their own. The database decides at the REQUESTs: the
// first leases the address, the second gets another one (and its client
// a NAK).
func TestDHCPOfferAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	e1 := newEnvWith(t, "postgres", "connect", envOptions{databaseURL: url})
	e2 := newEnvWith(t, "postgres", "connect", envOptions{databaseURL: url})
	_, origin, c1 := offerSegment(t, e1, "10.40.0.10", "10.40.0.200")
	c2 := e2.as(t, "dhcp")
	a, b := testMAC(0x4300), testMAC(0x4301)
	offerA := dhcpLease(t, c1, &dhcpv1.LeaseRequest{Mac: a, Origin: origin, Offer: true})
	offerB := dhcpLease(t, c2, &dhcpv1.LeaseRequest{Mac: b, Origin: origin, Offer: true, RequestedAddress: offerA.GetAddress()})
	if offerB.GetAddress() != offerA.GetAddress() || !offerA.GetTentative() || !offerB.GetTentative() {
		t.Fatalf("offers: %v by one replica, %v by the other; want the same address, tentative, from both", offerA, offerB)
	}
	leaseB := dhcpLease(t, c2, &dhcpv1.LeaseRequest{Mac: b, Origin: origin, RequestedAddress: offerB.GetAddress()})
	if leaseB.GetAddress() != offerB.GetAddress() {
		t.Fatalf("first REQUEST: %s, want the offered %s", leaseB.GetAddress(), offerB.GetAddress())
	}
	leaseA := dhcpLease(t, c1, &dhcpv1.LeaseRequest{Mac: a, Origin: origin, RequestedAddress: offerA.GetAddress()})
	if leaseA.GetAddress() == offerA.GetAddress() {
		t.Fatalf("second REQUEST leased %s too, which the first one leased", leaseA.GetAddress())
	}
	if n := e1.Store.Client.Lease.Query().Where(lease.Address(offerA.GetAddress())).CountX(t.Context()); n != 1 {
		t.Errorf("%d leases of %s, want 1", n, offerA.GetAddress())
	}
}

// A MAC that holds an unexpired lease is offered it as it is stored, not
// tentatively, with nothing written; once the lease is due to be renewed
// (or has expired), the offer of its address is tentative and writes
// nothing, and the REQUEST renews it.
func TestDHCPOfferOfHeldLease(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		segID, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
		mac := testMAC(0x4400)
		held := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin})
		stored := func() (renew, expire time.Time) {
			l := e.Store.Client.Lease.Query().Where(lease.MAC(mac)).OnlyX(t.Context())
			return l.RenewTime, l.ExpireTime
		}
		before := countRows(t, e)

		offer := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true})
		if offer.GetAddress() != held.GetAddress() || offer.GetTentative() || offer.GetMachineId() != held.GetMachineId() ||
			offer.GetLeaseDuration().AsDuration() > time.Hour {
			t.Errorf("offer to a MAC holding %s: %v, want its lease as stored, not tentative", held.GetAddress(), offer)
		}

		// Renewed more than a quarter of the lease time ago.
		renewed := time.Now().Add(-30 * time.Minute).UTC()
		e.Store.Client.Lease.Update().Where(lease.MAC(mac)).SetRenewTime(renewed).ExecX(t.Context())
		r0, x0 := stored()
		offer = dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true})
		if offer.GetAddress() != held.GetAddress() || !offer.GetTentative() || offer.GetMachineId() != held.GetMachineId() {
			t.Errorf("offer to a MAC whose lease is due to be renewed: %v, want %s, tentative", offer, held.GetAddress())
		}
		if r, x := stored(); !r.Equal(r0) || !x.Equal(x0) {
			t.Errorf("the offer changed the lease: renewed %s, expires %s", r, x)
		}
		if after := countRows(t, e); after != before {
			t.Errorf("rows after offers: %+v, want %+v", after, before)
		}
		l := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, RequestedAddress: offer.GetAddress()})
		if r, _ := stored(); l.GetAddress() != held.GetAddress() || l.GetTentative() || !r.After(r0) {
			t.Errorf("REQUEST: %v, renewed %s; want %s renewed", l, r, held.GetAddress())
		}

		// Expired: a lease would take the address again.
		expireLease(t, e, segID, mac, time.Now().Add(-time.Minute))
		offer = dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Offer: true})
		if offer.GetAddress() != held.GetAddress() || !offer.GetTentative() {
			t.Errorf("offer to a MAC whose lease expired: %v, want %s, tentative", offer, held.GetAddress())
		}
		if _, x := stored(); x.After(time.Now()) {
			t.Errorf("the offer extended the expired lease to %s", x)
		}
		l = dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, RequestedAddress: offer.GetAddress()})
		if _, x := stored(); l.GetAddress() != held.GetAddress() || !x.After(time.Now()) {
			t.Errorf("REQUEST after expiry: %v, expires %s; want %s leased again", l, x, held.GetAddress())
		}
	})
}

// A batch answers offers mixed with other requests as single calls would:
// a new MAC's offer writes nothing, a new MAC without offer is enrolled, a
// held lease is handed out, a known machine without a lease is offered an
// address with its machine id, and the REQUEST for an earlier offer
// leases it.
func TestDHCPLeaseBatchWithOffers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
		newOffer, newLease, holder, known, requesting := testMAC(0x4500), testMAC(0x4501), testMAC(0x4502), testMAC(0x4503), testMAC(0x4504)
		held := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: holder, Origin: origin})
		k := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{known}})
		earlier := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: requesting, Origin: origin, Offer: true})
		before := countRows(t, e)

		res := dhcpLeaseBatch(t, c,
			&dhcpv1.LeaseRequest{Mac: newOffer, Origin: origin, Offer: true},
			&dhcpv1.LeaseRequest{Mac: newLease, Origin: origin},
			&dhcpv1.LeaseRequest{Mac: holder, Origin: origin, Offer: true},
			&dhcpv1.LeaseRequest{Mac: known, Origin: origin, Offer: true},
			&dhcpv1.LeaseRequest{Mac: requesting, Origin: origin, RequestedAddress: earlier.GetAddress()},
		)
		for i, r := range res {
			if r.GetLease() == nil {
				t.Fatalf("result %d: %v", i, r.GetError())
			}
		}
		if l := res[0].GetLease(); !l.GetTentative() || l.GetMachineId() != "" {
			t.Errorf("new MAC's offer: %v, want tentative without a machine", l)
		}
		if l := res[1].GetLease(); l.GetTentative() || l.GetMachineId() == "" {
			t.Errorf("new MAC's lease: %v, want it enrolled and leased", l)
		}
		if l := res[2].GetLease(); l.GetTentative() || l.GetAddress() != held.GetAddress() {
			t.Errorf("offer to a MAC holding %s: %v, want its lease, not tentative", held.GetAddress(), l)
		}
		if l := res[3].GetLease(); !l.GetTentative() || l.GetMachineId() != k.GetId() {
			t.Errorf("known machine's offer: %v, want tentative with machine %s", l, k.GetId())
		}
		if l := res[4].GetLease(); l.GetTentative() || l.GetAddress() != earlier.GetAddress() || l.GetMachineId() == "" {
			t.Errorf("REQUEST for the earlier offer of %s: %v, want it leased to a new machine", earlier.GetAddress(), l)
		}
		addrs := map[string]bool{}
		for _, r := range res {
			addrs[r.GetLease().GetAddress()] = true
		}
		if len(addrs) != len(res) {
			t.Errorf("the batch's answers share addresses: %v", res)
		}
		want := before
		want.machines += 2
		want.nics += 2
		want.leases += 2
		want.machineChanges += 2
		want.batchAudits++
		if after := countRows(t, e); after != want {
			t.Errorf("rows after the batch: %+v, want %+v (two enrolments, in one audited call)", after, want)
		}
		if n := e.Store.Client.NIC.Query().Where(nic.MAC(newOffer)).CountX(t.Context()); n != 0 {
			t.Errorf("the offered new MAC has %d interfaces, want none", n)
		}
		if n := e.Store.Client.Lease.Query().Where(lease.MAC(known)).CountX(t.Context()); n != 0 {
			t.Errorf("the offered known machine has %d leases, want none", n)
		}
	})
}

// The enrolment limit counts enrolments, which happen at the REQUEST:
// offers take nothing from it, so two new MACs are offered addresses with
// room for one, and the second REQUEST is refused. Once the relay has
// used up its limit, a new MAC is not offered an address either.
func TestDHCPOfferEnrolmentLimit(t *testing.T) {
	t.Parallel()
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, kind, "connect", envOptions{configure: func(c *Config) {
				c.Enrol = dhcp.EnrolLimit{Rate: 0.0001, Burst: 1}
			}})
			_, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
			var offers []*dhcpv1.LeaseResponse
			for i := range 2 {
				offers = append(offers, dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(0x4600 + i), Origin: origin, Offer: true}))
			}
			dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(0x4600), Origin: origin, RequestedAddress: offers[0].GetAddress()})
			_, err := c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{
				Mac: testMAC(0x4601), Origin: origin, RequestedAddress: offers[1].GetAddress()}))
			wantError(t, err, connect.CodeResourceExhausted, "--enrol-rate")
			_, err = c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: testMAC(0x4602), Origin: origin, Offer: true}))
			wantError(t, err, connect.CodeResourceExhausted, "--enrol-rate")
			if n := e.Store.Client.Machine.Query().CountX(t.Context()); n != 1 {
				t.Errorf("%d machines, want 1", n)
			}
			if got := metricValue(t, e, `carbide_enrolments_refused_total{segment="offers"}`); got != 2 {
				t.Errorf("carbide_enrolments_refused_total = %v, want 2 (a REQUEST and an offer)", got)
			}
		})
	}
}

// A MAC with a reservation is offered its reserved address, also when an
// expired lease of another MAC still holds it (the REQUEST reclaims it);
// while another MAC's unexpired lease holds it, the offer fails as the
// lease would.
func TestDHCPOfferOfReservation(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		segID, origin, c := offerSegment(t, e, "10.40.0.10", "10.40.0.200")
		old, owner := testMAC(0x4700), testMAC(0x4701)
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: segID, Mac: old, RequestedAddress: "10.40.0.11"})
		release(t, e, segID, old)
		if _, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
			Segment:    &networkv1.Segment{Id: segID, Reservations: []*networkv1.Reservation{{Mac: owner, Address: "10.40.0.11"}}},
			UpdateMask: mask("reservations"),
		})); err != nil {
			t.Fatalf("reserve 10.40.0.11: %v", err)
		}

		// The old holder's lease is back in force: no offer.
		expireLease(t, e, segID, old, time.Now().Add(time.Hour))
		_, err := c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: owner, Origin: origin, Offer: true}))
		wantError(t, err, connect.CodeFailedPrecondition, "reserved")

		expireLease(t, e, segID, old, time.Now().Add(-time.Minute))
		before := countRows(t, e)
		offer := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: owner, Origin: origin, Offer: true})
		if offer.GetAddress() != "10.40.0.11" || !offer.GetTentative() {
			t.Fatalf("offer to the reservation's MAC: %v, want 10.40.0.11, tentative", offer)
		}
		if after := countRows(t, e); after != before {
			t.Errorf("rows after the offer: %+v, want %+v", after, before)
		}
		l := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: owner, Origin: origin, RequestedAddress: offer.GetAddress()})
		if l.GetAddress() != "10.40.0.11" || l.GetTentative() {
			t.Errorf("REQUEST: %v, want 10.40.0.11 leased", l)
		}
	})
}
