package apiserver

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/auditrecord"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/nic"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"google.golang.org/protobuf/proto"
)

// dhcpSegments creates a segment for the daemon's own link and one behind
// a relay, and returns DHCP clients with the dhcp role's certificate.
func dhcpSegments(t *testing.T, e *env) (local, relayed *networkv1.Segment, c clients) {
	t.Helper()
	local = createSegment(t, e, &networkv1.Segment{
		Name: "local", Prefix: "10.1.0.0/24", Gateway: "10.1.0.1", DnsServers: []string{"10.1.0.2"},
		Domain: "local.example.net", Mtu: 9000, NtpServers: []string{"10.1.0.3"},
		Ranges: []*networkv1.AddressRange{{Start: "10.1.0.100", End: "10.1.0.103"}},
	})
	relayed = createSegment(t, e, &networkv1.Segment{
		Name: "rack9", Prefix: "10.9.0.0/24", Gateway: "10.9.0.1", RelayAddresses: []string{"192.0.2.9"},
		Ranges: []*networkv1.AddressRange{{Start: "10.9.0.10", End: "10.9.0.50"}},
	})
	return local, relayed, e.as(t, "dhcp")
}

// auditRecords returns the audit records of a procedure.
func auditRecords(t *testing.T, e *env, procedure string) []*ent.AuditRecord {
	t.Helper()
	rs, err := e.Store.Client.AuditRecord.Query().Where(auditrecord.Procedure(procedure)).All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func dhcpLease(t *testing.T, c clients, req *dhcpv1.LeaseRequest) *dhcpv1.LeaseResponse {
	t.Helper()
	resp, err := c.DHCP.Lease(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Lease(%s): %v", req.GetMac(), err)
	}
	return resp.Msg
}

func TestDHCPLeaseEnrolsAndRenews(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		local, _, c := dhcpSegments(t, e)
		origin := &dhcpv1.Origin{LocalAddress: "10.1.0.1"}
		first := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: "52:54:00:AA:00:01", Origin: origin, ClientHostname: "node-7"})
		a := netip.MustParseAddr(first.GetAddress())
		if a.Less(netip.MustParseAddr("10.1.0.100")) || netip.MustParseAddr("10.1.0.103").Less(a) {
			t.Errorf("address %s is outside the range 10.1.0.100-10.1.0.103", a)
		}
		o := first.GetOptions()
		if o.GetSegmentId() != local.GetId() || o.GetPrefixLength() != 24 || o.GetGateway() != "10.1.0.1" ||
			o.GetMtu() != 9000 || o.GetDomain() != "local.example.net" || len(o.GetDnsServers()) != 1 || len(o.GetNtpServers()) != 1 {
			t.Errorf("options = %v", o)
		}
		if first.GetLeaseDuration().AsDuration().Hours() != 1 || first.GetHostname() != "node-7" || first.GetMachineId() == "" {
			t.Errorf("lease = %v", first)
		}
		m, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: first.GetMachineId()}))
		if err != nil {
			t.Fatalf("the enrolled machine: %v", err)
		}
		got := m.Msg.GetMachine()
		if got.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED || len(got.GetInterfaces()) != 1 ||
			got.GetInterfaces()[0].GetMac() != "52:54:00:aa:00:01" || got.GetInterfaces()[0].GetAddress() != first.GetAddress() {
			t.Errorf("enrolled machine = %v", got)
		}
		again := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: "52:54:00:aa:00:01", Origin: origin})
		if again.GetAddress() != first.GetAddress() || again.GetMachineId() != first.GetMachineId() {
			t.Errorf("second lease = %s for %s, want %s for %s", again.GetAddress(), again.GetMachineId(), first.GetAddress(), first.GetMachineId())
		}
		if n, _ := e.Store.Client.Machine.Query().Count(context.Background()); n != 1 {
			t.Errorf("%d machines after two requests from one MAC, want 1", n)
		}
	})
}

func TestDHCPSegmentSelection(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		local, relayed, c := dhcpSegments(t, e)
		tests := map[string]struct {
			origin *dhcpv1.Origin
			want   string
		}{
			"own link":                    {&dhcpv1.Origin{LocalAddress: "10.1.0.1"}, local.GetId()},
			"relay listed on the segment": {&dhcpv1.Origin{RelayAddress: "192.0.2.9"}, relayed.GetId()},
			"relay inside the prefix":     {&dhcpv1.Origin{RelayAddress: "10.9.0.1"}, relayed.GetId()},
			"link selection wins":         {&dhcpv1.Origin{RelayAddress: "192.0.2.9", LinkSelection: "10.1.0.1"}, local.GetId()},
		}
		i := 0
		for name, tc := range tests {
			i++
			got := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(i), Origin: tc.origin})
			if got.GetOptions().GetSegmentId() != tc.want {
				t.Errorf("%s: segment %s, want %s", name, got.GetOptions().GetSegmentId(), tc.want)
			}
		}
		_, err := c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: testMAC(99), Origin: &dhcpv1.Origin{RelayAddress: "198.51.100.1"}}))
		wantError(t, err, connect.CodeNotFound, "198.51.100.1")
		_, err = c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: testMAC(99), Origin: &dhcpv1.Origin{}}))
		wantError(t, err, connect.CodeInvalidArgument, "origin")
	})
}

func TestDHCPRecordsRelayAgentIDs(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, _, c := dhcpSegments(t, e)
		pre := createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: "known", Macs: []string{"52:54:00:bb:00:01"}})
		got := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: "52:54:00:bb:00:01",
			Origin: &dhcpv1.Origin{RelayAddress: "192.0.2.9", CircuitId: []byte("eth1/0/7"), RemoteId: []byte("tor-9")}})
		if got.GetMachineId() != pre.GetId() || got.GetHostname() != "known" {
			t.Errorf("lease for a registered MAC: machine %s %q, want %s known", got.GetMachineId(), got.GetHostname(), pre.GetId())
		}
		n, err := e.Store.Client.NIC.Query().Where(nic.MAC("52:54:00:bb:00:01")).Only(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n.CircuitID != "eth1/0/7" || n.RemoteID != "tor-9" {
			t.Errorf("interface relay ids = %q %q", n.CircuitID, n.RemoteID)
		}

		// Recording relay ids changes the machine: it is audited, naming
		// it. Asking again from the same port changes nothing.
		dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: "52:54:00:bb:00:01",
			Origin: &dhcpv1.Origin{RelayAddress: "192.0.2.9", CircuitId: []byte("eth1/0/7"), RemoteId: []byte("tor-9")}})
		recs := auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseProcedure)
		if len(recs) != 1 || !slices.Equal(recs[0].ResourceIds, []string{pre.GetId()}) || recs[0].Code != "ok" {
			var got [][]string
			for _, r := range recs {
				got = append(got, r.ResourceIds)
			}
			t.Errorf("audit records of Lease name %v, want one naming %s (the relay-id change)", got, pre.GetId())
		}
	})
}

// Machines created with CreateMachine that boot for the first time get
// their first leases in one transaction per batch: one INSERT into leases
// (counted by pg_stat_statements on PostgreSQL), their interfaces on the
// segment, a change-log entry each with the new address, and no audit
// record.
func TestDHCPLeaseBatchFirstLeasesOfKnownMachines(t *testing.T) {
	t.Parallel()
	forEachStoreWithStatements(t, func(t *testing.T, e *env, stats *sql.DB) {
		_, relayed, c := dhcpSegments(t, e)
		const n = 6
		origin := &dhcpv1.Origin{RelayAddress: "192.0.2.9"}
		var reqs []*dhcpv1.LeaseRequest
		var ids []string
		for i := range n {
			m := createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: fmt.Sprintf("node-%d", i), Macs: []string{testMAC(200 + i)}})
			ids = append(ids, m.GetId())
			reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: testMAC(200 + i), Origin: origin})
		}
		inserts := func() int64 {
			t.Helper()
			if stats == nil {
				return 0
			}
			calls, _ := statementTotals(t, stats, `query ~* '^\s*INSERT\s+INTO\s+"?leases"?\s'`)
			return calls
		}
		insertsBefore := inserts()
		results := dhcpLeaseBatch(t, c, reqs...)
		if stats != nil {
			if got := inserts() - insertsBefore; got != 1 {
				t.Errorf("%d INSERT statements into leases for the first leases of %d machines, want 1", got, n)
			}
		}
		seen := map[string]bool{}
		for i, r := range results {
			l := r.GetLease()
			if l == nil || l.GetMachineId() != ids[i] || l.GetHostname() != fmt.Sprintf("node-%d", i) || seen[l.GetAddress()] {
				t.Fatalf("request %d: %v, want a lease of its own for machine %s", i, r, ids[i])
			}
			seen[l.GetAddress()] = true
			m, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: ids[i]}))
			if err != nil {
				t.Fatal(err)
			}
			ifs := m.Msg.GetMachine().GetInterfaces()
			if len(ifs) != 1 || ifs[0].GetAddress() != l.GetAddress() || ifs[0].GetSegmentId() != relayed.GetId() {
				t.Errorf("machine %d's interfaces = %v, want %s on %s", i, ifs, l.GetAddress(), relayed.GetId())
			}
			chs, err := e.Store.Client.Change.Query().Where(change.ResourceID(ids[i]), change.TypeEQ(change.TypeUpdated)).All(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var got machinev1.Machine
			if len(chs) != 1 || proto.Unmarshal(chs[0].Payload, &got) != nil || len(got.GetInterfaces()) != 1 || got.GetInterfaces()[0].GetAddress() != l.GetAddress() {
				t.Errorf("machine %d: %d updated changes (%v), want one showing %s", i, len(chs), &got, l.GetAddress())
			}
		}
		if recs := auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseBatchProcedure); len(recs) != 0 {
			t.Errorf("%d audit records of LeaseBatch for first leases of known machines, want none", len(recs))
		}
	})
}

// A batch renews all its leases due for renewal with one UPDATE (counted
// by pg_stat_statements on PostgreSQL), and a batch that only renewed
// leaves no audit record: the renewals are counted in
// carbide_dhcp_lease_writes_total.
func TestDHCPLeaseBatchRenewsInOneStatement(t *testing.T) {
	t.Parallel()
	forEachStoreWithStatements(t, func(t *testing.T, e *env, stats *sql.DB) {
		_, _, c := dhcpSegments(t, e)
		const n = 20
		origin := &dhcpv1.Origin{RelayAddress: "192.0.2.9"}
		var reqs []*dhcpv1.LeaseRequest
		for i := range n {
			reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: testMAC(100 + i), Origin: origin})
		}
		first := dhcpLeaseBatch(t, c, reqs...)
		expiries := func() map[string]time.Time {
			t.Helper()
			ls, err := e.Store.Client.Lease.Query().All(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			m := make(map[string]time.Time)
			for _, l := range ls {
				m[l.MAC] = l.ExpireTime
			}
			return m
		}
		before := expiries()
		recsBefore := len(auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseBatchProcedure))
		updates := func() int64 {
			t.Helper()
			if stats == nil {
				return 0
			}
			calls, _ := statementTotals(t, stats, `query ~* '^\s*UPDATE\s+"?leases"?\s'`)
			return calls
		}
		updatesBefore := updates()
		time.Sleep(10 * time.Millisecond) // a renewal now moves the expiry

		for _, r := range reqs {
			r.Extend = true
		}
		renewed := dhcpLeaseBatch(t, c, reqs...)
		after := expiries()
		for i, r := range renewed {
			mac := reqs[i].GetMac()
			if r.GetLease().GetAddress() != first[i].GetLease().GetAddress() || r.GetLease().GetLeaseDuration().AsDuration() != time.Hour {
				t.Errorf("renewal of %s: %v, want %s for 1h", mac, r, first[i].GetLease().GetAddress())
			}
			if !after[mac].After(before[mac]) {
				t.Errorf("renewal of %s left its expiry at %s", mac, after[mac])
			}
		}
		if stats != nil {
			if got := updates() - updatesBefore; got != 1 {
				t.Errorf("%d UPDATE statements on leases for a batch of %d renewals, want 1", got, n)
			}
		}
		if got := len(auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseBatchProcedure)); got != recsBefore {
			t.Errorf("%d audit records of LeaseBatch after a batch of renewals, want %d", got, recsBefore)
		}
		want := fmt.Sprintf(`carbide_dhcp_lease_writes_total{kind="renew",principal="spiffe://carbide.local/service/dhcp",segment="rack9"} %d`, n)
		if metrics := scrape(t, e); !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	})
}

func TestDHCPReleaseDeclineInform(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		local, _, c := dhcpSegments(t, e)
		origin := &dhcpv1.Origin{LocalAddress: "10.1.0.1"}
		first := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin})

		if _, err := c.DHCP.Release(t.Context(), connect.NewRequest(&dhcpv1.ReleaseRequest{Mac: testMAC(1), Address: first.GetAddress()})); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if _, err := c.DHCP.Release(t.Context(), connect.NewRequest(&dhcpv1.ReleaseRequest{Mac: testMAC(2), Address: "10.1.0.100"})); err != nil {
			t.Errorf("Release of a lease that does not exist: %v", err)
		}
		leases, err := e.Address.ListLeases(t.Context(), connect.NewRequest(&networkv1.ListLeasesRequest{SegmentId: local.GetId()}))
		if err != nil || len(leases.Msg.GetLeases()) != 0 {
			t.Errorf("active leases after release: %v %v", leases.Msg.GetLeases(), err)
		}

		// The client finds its address in use: it must get another, and
		// nobody may get the declined one while it is held back.
		again := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin})
		if _, err := c.DHCP.Decline(t.Context(), connect.NewRequest(&dhcpv1.DeclineRequest{Mac: testMAC(1), Address: again.GetAddress()})); err != nil {
			t.Fatalf("Decline: %v", err)
		}
		seen := map[string]bool{}
		for i := 1; i <= 3; i++ { // the range has 4 addresses, one declined
			got := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(i), Origin: origin})
			if got.GetAddress() == again.GetAddress() {
				t.Errorf("%s got the declined address %s", testMAC(i), got.GetAddress())
			}
			seen[got.GetAddress()] = true
		}
		if len(seen) != 3 {
			t.Errorf("three MACs got %v", seen)
		}
		_, err = c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: testMAC(4), Origin: origin}))
		wantError(t, err, connect.CodeResourceExhausted, "no free address")

		info, err := c.DHCP.Inform(t.Context(), connect.NewRequest(&dhcpv1.InformRequest{Mac: testMAC(5), Origin: origin}))
		if err != nil || info.Msg.GetOptions().GetSegmentId() != local.GetId() || info.Msg.GetOptions().GetGateway() != "10.1.0.1" {
			t.Errorf("Inform = %v, %v", info, err)
		}
	})
}

func TestDHCPConcurrentEnrolment(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, _, c := dhcpSegments(t, e)
		var wg sync.WaitGroup
		addrs := make([]string, 16)
		errs := make([]error, 16)
		for i := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.DHCP.Lease(context.Background(), connect.NewRequest(&dhcpv1.LeaseRequest{
					Mac: "52:54:00:cc:00:01", Origin: &dhcpv1.Origin{RelayAddress: "192.0.2.9"}}))
				errs[i] = err
				if err == nil {
					addrs[i] = resp.Msg.GetAddress()
				}
			}()
		}
		wg.Wait()
		for i := range addrs {
			if errs[i] != nil {
				t.Errorf("request %d: %v", i, errs[i])
			} else if addrs[i] != addrs[0] {
				t.Errorf("request %d got %s, request 0 got %s", i, addrs[i], addrs[0])
			}
		}
		n, err := e.Store.Client.Machine.Query().Where(machine.HasNicsWith(nic.MAC("52:54:00:cc:00:01"))).Count(context.Background())
		if err != nil || n != 1 {
			t.Errorf("%d machines own the MAC after concurrent requests (%v), want 1", n, err)
		}
	})
}

// A lease asked for again soon after it was written is handed out as it
// is stored, with the time it has left, and nothing is written or
// audited; a client renewing (extend) always gets a new expiry, which is
// counted in carbide_dhcp_lease_writes_total rather than audited.
func TestDHCPLeaseReuseAndExtend(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, _, c := dhcpSegments(t, e)
		origin := &dhcpv1.Origin{LocalAddress: "10.1.0.1"}
		first := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin})
		stored := func() time.Time {
			l, err := e.Store.Client.Lease.Query().Where(lease.MAC(testMAC(1))).Only(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return l.RenewTime
		}
		written := stored()
		audits := func() int { return len(auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseProcedure)) }
		before := audits()

		time.Sleep(1100 * time.Millisecond)
		again := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin, RequestedAddress: first.GetAddress()})
		if again.GetAddress() != first.GetAddress() || stored() != written {
			t.Errorf("asked again: %s, renew time %s, want %s and the renew time unchanged (%s)", again.GetAddress(), stored(), first.GetAddress(), written)
		}
		if d := again.GetLeaseDuration().AsDuration(); d >= time.Hour || d < time.Hour-time.Minute {
			t.Errorf("asked again: lease duration %s, want what is left of the hour", d)
		}
		if n := audits(); n != before {
			t.Errorf("%d audit records for Lease after a call that changed nothing, want %d", n, before)
		}

		extended := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin, RequestedAddress: first.GetAddress(), Extend: true})
		if extended.GetAddress() != first.GetAddress() || !stored().After(written) || extended.GetLeaseDuration().AsDuration() != time.Hour {
			t.Errorf("extend: %s for %s, renew time %s; want %s for 1h and a renew time after %s",
				extended.GetAddress(), extended.GetLeaseDuration().AsDuration(), stored(), first.GetAddress(), written)
		}
		if n := audits(); n != before {
			t.Errorf("%d audit records for Lease after an extension, want %d (renewals are counted, not audited)", n, before)
		}
		metrics := scrape(t, e)
		for _, want := range []string{
			`carbide_dhcp_lease_writes_total{kind="enrol",principal="spiffe://carbide.local/service/dhcp",segment="local"} 1`,
			`carbide_dhcp_lease_writes_total{kind="lease",principal="spiffe://carbide.local/service/dhcp",segment="local"} 1`,
			`carbide_dhcp_lease_writes_total{kind="renew",principal="spiffe://carbide.local/service/dhcp",segment="local"} 1`,
		} {
			if !strings.Contains(metrics, want+"\n") {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// A MAC that holds a lease but belongs to no machine (leased with
// AddressService) is enrolled by its first DHCP request and keeps its
// address.
func TestDHCPEnrolsMACWithLease(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		local, _, c := dhcpSegments(t, e)
		held, err := e.Address.AllocateAddress(t.Context(), connect.NewRequest(&networkv1.AllocateAddressRequest{SegmentId: local.GetId(), Mac: testMAC(3)}))
		if err != nil {
			t.Fatalf("AllocateAddress: %v", err)
		}
		got := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(3), Origin: &dhcpv1.Origin{LocalAddress: "10.1.0.1"}})
		if got.GetAddress() != held.Msg.GetLease().GetAddress() || got.GetMachineId() == "" {
			t.Fatalf("Lease = %s for machine %q, want the held %s and a machine", got.GetAddress(), got.GetMachineId(), held.Msg.GetLease().GetAddress())
		}
		m, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: got.GetMachineId()}))
		if err != nil {
			t.Fatal(err)
		}
		ifs := m.Msg.GetMachine().GetInterfaces()
		if len(ifs) != 1 || ifs[0].GetMac() != testMAC(3) || ifs[0].GetAddress() != got.GetAddress() {
			t.Errorf("enrolled machine's interfaces = %v", ifs)
		}
	})
}

func dhcpLeaseBatch(t *testing.T, c clients, reqs ...*dhcpv1.LeaseRequest) []*dhcpv1.LeaseResult {
	t.Helper()
	resp, err := c.DHCP.LeaseBatch(t.Context(), connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: reqs}))
	if err != nil {
		t.Fatalf("LeaseBatch: %v", err)
	}
	if got := len(resp.Msg.GetResults()); got != len(reqs) {
		t.Fatalf("LeaseBatch: %d results for %d requests", got, len(reqs))
	}
	return resp.Msg.GetResults()
}

// A batch gets, for each request, what Lease would give it: new MACs are
// enrolled with distinct addresses, a reservation is honoured, a known
// MAC keeps its address, a MAC asking twice gets one answer, and a
// request no segment matches fails alone. Only enrolments are audited.
func TestDHCPLeaseBatch(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		createSegment(t, e, &networkv1.Segment{
			Name: "batch", Prefix: "10.5.0.0/24", Gateway: "10.5.0.1", RelayAddresses: []string{"192.0.2.5"},
			Ranges:       []*networkv1.AddressRange{{Start: "10.5.0.10", End: "10.5.0.200"}},
			Reservations: []*networkv1.Reservation{{Mac: testMAC(9), Address: "10.5.0.250"}},
		})
		c := e.as(t, "dhcp")
		origin := &dhcpv1.Origin{RelayAddress: "192.0.2.5", CircuitId: []byte("port-1")}
		known := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: testMAC(1), Origin: origin})
		audits := func() []*ent.AuditRecord { return auditRecords(t, e, dhcpv1connect.DHCPServiceLeaseBatchProcedure) }

		reqs := []*dhcpv1.LeaseRequest{
			{Mac: testMAC(1), Origin: origin},
			{Mac: testMAC(2), Origin: origin, ClientHostname: "node-2"},
			{Mac: testMAC(3), Origin: origin, RequestedAddress: "10.5.0.77"},
			{Mac: testMAC(9), Origin: origin},
			{Mac: testMAC(2), Origin: origin},
			{Mac: testMAC(4), Origin: &dhcpv1.Origin{RelayAddress: "198.51.100.1"}},
			{Mac: testMAC(5), Origin: origin},
		}
		results := dhcpLeaseBatch(t, c, reqs...)
		addr := func(i int) string { return results[i].GetLease().GetAddress() }
		for i, r := range results {
			if i != 5 && r.GetLease() == nil {
				t.Fatalf("request %d (%s): %v, want a lease", i, reqs[i].GetMac(), r.GetError())
			}
		}
		if addr(0) != known.GetAddress() || results[0].GetLease().GetMachineId() != known.GetMachineId() {
			t.Errorf("known MAC: %s for %s, want %s for %s", addr(0), results[0].GetLease().GetMachineId(), known.GetAddress(), known.GetMachineId())
		}
		if addr(2) != "10.5.0.77" {
			t.Errorf("MAC asking for the free 10.5.0.77 got %s", addr(2))
		}
		if addr(3) != "10.5.0.250" {
			t.Errorf("reserved MAC got %s, want 10.5.0.250", addr(3))
		}
		if addr(4) != addr(1) || results[4].GetLease().GetMachineId() != results[1].GetLease().GetMachineId() {
			t.Errorf("MAC asking twice got %s and %s", addr(1), addr(4))
		}
		if err := results[5].GetError(); err.GetCode() != "not_found" || !strings.Contains(err.GetMessage(), "198.51.100.1") {
			t.Errorf("request without a segment: %v, want not_found naming 198.51.100.1", results[5])
		}
		seenAddr := map[string]int{}
		for _, i := range []int{0, 1, 2, 3, 6} {
			if j, dup := seenAddr[addr(i)]; dup {
				t.Errorf("requests %d and %d both got %s", j, i, addr(i))
			}
			seenAddr[addr(i)] = i
		}

		// The new machines, as Lease would have enrolled them.
		var enrolled []string
		for _, i := range []int{1, 2, 3, 6} {
			l := results[i].GetLease()
			enrolled = append(enrolled, l.GetMachineId())
			m, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: l.GetMachineId()}))
			if err != nil {
				t.Fatalf("machine of request %d: %v", i, err)
			}
			got := m.Msg.GetMachine()
			ifs := got.GetInterfaces()
			if got.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED || len(ifs) != 1 ||
				ifs[0].GetMac() != reqs[i].GetMac() || ifs[0].GetAddress() != l.GetAddress() || string(ifs[0].GetCircuitId()) != "port-1" {
				t.Errorf("machine of request %d = %v", i, got)
			}
			if i == 1 && got.GetHostname() != "node-2" {
				t.Errorf("machine of request 1 has host name %q, want node-2", got.GetHostname())
			}
			h, err := e.Machines.ListMachineTransitions(t.Context(), connect.NewRequest(&machinev1.ListMachineTransitionsRequest{MachineId: l.GetMachineId()}))
			if err != nil || len(h.Msg.GetTransitions()) != 1 {
				t.Errorf("history of machine %d: %v, %v; want its creation", i, h, err)
			}
		}
		if n, _ := e.Store.Client.Machine.Query().Count(context.Background()); n != 5 {
			t.Errorf("%d machines, want 5", n)
		}
		recs := audits()
		if len(recs) != 1 {
			t.Fatalf("%d audit records for LeaseBatch, want 1", len(recs))
		}
		for _, id := range enrolled {
			if !slices.Contains(recs[0].ResourceIds, id) {
				t.Errorf("audit record names %v, not the enrolled machine %s", recs[0].ResourceIds, id)
			}
		}
		if slices.Contains(recs[0].ResourceIds, known.GetMachineId()) {
			t.Errorf("audit record names %v, with the known machine %s whose lease was not written", recs[0].ResourceIds, known.GetMachineId())
		}

		// Asked again at once: the same leases, and nothing written.
		again := dhcpLeaseBatch(t, c, reqs[0], reqs[1], reqs[2], reqs[3], reqs[6])
		for k, i := range []int{0, 1, 2, 3, 6} {
			if got := again[k].GetLease().GetAddress(); got != addr(i) {
				t.Errorf("asked again, request %d got %s, want %s", i, got, addr(i))
			}
		}
		if n := len(audits()); n != 1 {
			t.Errorf("%d audit records after a batch that changed nothing, want 1", n)
		}
	})
}

// Two replicas sending overlapping batches of the same new MACs at once
// enrol each MAC once and give it one address; when the pool runs out,
// the MACs left over get resource_exhausted.
func TestDHCPLeaseBatchConcurrent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) { leaseBatchesConcurrently(t, e, false) })
}

// The same with machines created with CreateMachine, booting for the first
// time: their first leases are written together, and the batches race for
// the addresses.
func TestDHCPLeaseBatchConcurrentKnownMachines(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) { leaseBatchesConcurrently(t, e, true) })
}

func leaseBatchesConcurrently(t *testing.T, e *env, known bool) {
	createSegment(t, e, &networkv1.Segment{
		Name: "small", Prefix: "10.6.0.0/24", Gateway: "10.6.0.1",
		Ranges: []*networkv1.AddressRange{{Start: "10.6.0.10", End: "10.6.0.21"}},
	})
	c := e.as(t, "dhcp")
	origin := &dhcpv1.Origin{LocalAddress: "10.6.0.1"}
	const macs = 16 // for 12 addresses
	if known {
		for i := range macs {
			createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(i)}})
		}
	}
	batches := make([][]*dhcpv1.LeaseResult, 4)
	var wg sync.WaitGroup
	for b := range batches {
		wg.Go(func() {
			var reqs []*dhcpv1.LeaseRequest
			for i := range macs {
				reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: testMAC((i + 5*b) % macs), Origin: origin})
			}
			resp, err := c.DHCP.LeaseBatch(context.Background(), connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: reqs}))
			if err != nil {
				t.Errorf("batch %d: %v", b, err)
				return
			}
			batches[b] = resp.Msg.GetResults()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	byMAC := map[string]string{}
	exhausted := 0
	for b, results := range batches {
		for k, r := range results {
			mac := testMAC((k + 5*b) % macs)
			if err := r.GetError(); err != nil {
				if err.GetCode() != "resource_exhausted" {
					t.Errorf("batch %d, %s: %v", b, mac, err)
				}
				exhausted++
				continue
			}
			if prev, ok := byMAC[mac]; ok && prev != r.GetLease().GetAddress() {
				t.Errorf("%s got %s and %s", mac, prev, r.GetLease().GetAddress())
			}
			byMAC[mac] = r.GetLease().GetAddress()
		}
	}
	holders := map[string]string{}
	for mac, a := range byMAC {
		if other, ok := holders[a]; ok {
			t.Errorf("%s went to %s and %s", a, other, mac)
		}
		holders[a] = mac
	}
	if len(byMAC) != 12 || exhausted == 0 {
		t.Errorf("%d MACs leased and %d requests refused, want the 12 addresses leased and the rest refused", len(byMAC), exhausted)
	}
	for mac := range byMAC {
		n, err := e.Store.Client.Machine.Query().Where(machine.HasNicsWith(nic.MAC(mac))).Count(context.Background())
		if err != nil || n != 1 {
			t.Errorf("%d machines own %s (%v), want 1", n, mac, err)
		}
	}
	if n, _ := e.Store.Client.Lease.Query().Count(context.Background()); n != 12 {
		t.Errorf("%d leases, want 12", n)
	}
}
