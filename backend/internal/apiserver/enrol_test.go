package apiserver

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/dhcp"
	"github.com/carbide-dev/carbide/ent/auditrecord"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/carbide-dev/carbide/ent/transition"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEnrolmentFloodIsBounded sends LeaseBatch requests for 50,000 random
// MACs from one relay, as a DHCP load test or a faulty switch would. The
// enrolment limit lets the relay enrol its burst and refuses the rest with
// ResourceExhausted (counted in carbide_enrolments_refused_total); another
// relay of the segment still enrols. Once the enrolled machines' leases
// have expired for the retention period, PruneDiscovered removes them with
// their interfaces, history and leases, records a Deleted change for each
// and an audit record naming them, and keeps the machines that sent an
// inventory, hold a lease, or were not enrolled by DHCP.
func TestEnrolmentFloodIsBounded(t *testing.T) {
	t.Parallel()
	const (
		macs  = 50000
		burst = 1000
		// rate is low enough that the test's run time adds no enrolment.
		rate = 0.0001
	)
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, kind, "connect", envOptions{configure: func(c *Config) {
				c.Enrol = dhcp.EnrolLimit{Rate: rate, Burst: burst}
			}})
			ctx := t.Context()
			seg := createSegment(t, e, &networkv1.Segment{
				Name: "flood", Prefix: "10.30.0.0/20", Gateway: "10.30.0.1", RelayAddresses: []string{"192.0.2.77", "192.0.2.78"},
				Ranges: []*networkv1.AddressRange{{Start: "10.30.0.10", End: "10.30.15.250"}},
			})
			c := e.as(t, "dhcp")

			// The flood.
			rng := rand.New(rand.NewPCG(1, 2))
			seen := make(map[string]bool, macs)
			var flood []string
			for len(flood) < macs {
				m := fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256))
				if !seen[m] {
					seen[m] = true
					flood = append(flood, m)
				}
			}
			var enrolled []string // machine ids
			refused := 0
			origin := &dhcpv1.Origin{RelayAddress: "192.0.2.77"}
			for lo := 0; lo < macs; lo += 256 {
				var reqs []*dhcpv1.LeaseRequest
				for _, m := range flood[lo:min(lo+256, macs)] {
					reqs = append(reqs, &dhcpv1.LeaseRequest{Mac: m, Origin: origin})
				}
				resp, err := c.DHCP.LeaseBatch(ctx, connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: reqs}))
				if err != nil {
					t.Fatalf("LeaseBatch: %v", err)
				}
				for i, r := range resp.Msg.GetResults() {
					switch {
					case r.GetLease() != nil:
						enrolled = append(enrolled, r.GetLease().GetMachineId())
					case r.GetError().GetCode() == connect.CodeResourceExhausted.String() &&
						strings.Contains(r.GetError().GetMessage(), "--enrol-rate") && strings.Contains(r.GetError().GetMessage(), "192.0.2.77"):
						refused++
					default:
						t.Fatalf("request for %s: %v, want a lease or resource_exhausted saying which relay and flag", reqs[i].GetMac(), r)
					}
				}
			}
			if len(enrolled) != burst || refused != macs-burst {
				t.Fatalf("flood of %d MACs: %d enrolled, %d refused; want %d enrolled (the burst) and the rest refused", macs, len(enrolled), refused, burst)
			}
			if n := e.Store.Client.Machine.Query().CountX(ctx); n != burst {
				t.Errorf("%d machines after the flood, want %d", n, burst)
			}
			if got, want := metricValue(t, e, `carbide_enrolments_refused_total{segment="flood"}`), float64(macs-burst); got != want {
				t.Errorf("carbide_enrolments_refused_total = %v, want %v", got, want)
			}
			// Only the calls that enrolled someone are audited: refusals
			// are counted, not written.
			if n, want := len(auditRecords(t, e, "/carbide.dhcp.v1.DHCPService/LeaseBatch")), (burst+255)/256; n != want {
				t.Errorf("%d audit records of LeaseBatch, want %d (the calls that enrolled machines)", n, want)
			}
			other := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: "02:00:00:00:99:01", Origin: &dhcpv1.Origin{RelayAddress: "192.0.2.78"}})

			// What must stay: a machine that sent an inventory, one whose
			// lease is still valid, one an operator created.
			inventoried, leased := uuid.MustParse(enrolled[0]), uuid.MustParse(enrolled[1])
			e.Store.Client.Machine.UpdateOneID(inventoried).SetInventory([]byte{0x0a, 0x00}).ExecX(ctx)
			expireLease(t, e, seg.GetId(), machineMAC(t, e, leased), time.Now().Add(5*time.Hour))
			created := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:99:02"}})
			keep := []string{inventoried.String(), leased.String(), created.GetId()}

			// Within the retention period nothing goes.
			if n, err := dhcp.PruneDiscovered(ctx, e.Store, time.Now(), 100); err != nil || n != 0 {
				t.Fatalf("PruneDiscovered before the leases expired: removed %d, %v; want 0", n, err)
			}
			// Leases last an hour: three hours on, an hour's retention has
			// passed. The API's pruner removes them, and counts them.
			p := newPruner(e.Store, Config{DiscoveredRetention: time.Hour}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(testOutput(t), nil)))
			p.once(ctx, time.Now().Add(3*time.Hour))
			n := int(testutil.ToFloat64(p.pruned.WithLabelValues("discovered_machines")))
			removed := slices.DeleteFunc(append(enrolled, other.GetMachineId()), func(id string) bool { return slices.Contains(keep, id) })
			if n != len(removed) {
				t.Errorf("the pruner removed %d machines, want %d", n, len(removed))
			}
			var left []string
			for _, m := range e.Store.Client.Machine.Query().AllX(ctx) {
				left = append(left, m.ID.String())
			}
			slices.Sort(left)
			slices.Sort(keep)
			if !slices.Equal(left, keep) {
				t.Errorf("machines left: %v, want %v", left, keep)
			}
			if n := e.Store.Client.NIC.Query().CountX(ctx); n != 3 {
				t.Errorf("%d interfaces left, want 3 (one per machine kept)", n)
			}
			keptIDs := []uuid.UUID{inventoried, leased, uuid.MustParse(created.GetId())}
			if n := e.Store.Client.Transition.Query().Where(transition.Not(transition.MachineIDIn(keptIDs...))).CountX(ctx); n != 0 {
				t.Errorf("%d state transitions of removed machines left", n)
			}
			if n := e.Store.Client.Lease.Query().CountX(ctx); n != 2 {
				t.Errorf("%d leases left, want 2 (those of the enrolled machines kept)", n)
			}
			var deleted []string
			for _, ch := range e.Store.Client.Change.Query().Where(change.KindEQ(change.KindMachine), change.TypeEQ(change.TypeDeleted)).AllX(ctx) {
				deleted = append(deleted, ch.ResourceID)
			}
			var audited []string
			for _, r := range e.Store.Client.AuditRecord.Query().Where(auditrecord.Procedure(dhcp.RetentionProcedure)).AllX(ctx) {
				if r.Principal != dhcp.RetentionPrincipal || r.Code != "ok" {
					t.Errorf("audit record of a removal: %+v", r)
				}
				audited = append(audited, r.ResourceIds...)
			}
			slices.Sort(removed)
			slices.Sort(deleted)
			slices.Sort(audited)
			if !slices.Equal(deleted, removed) {
				t.Errorf("Deleted changes for %d machines, want one for each of the %d removed", len(deleted), len(removed))
			}
			if !slices.Equal(audited, removed) {
				t.Errorf("audit records name %d machines, want each of the %d removed", len(audited), len(removed))
			}
			if n := e.Store.Client.Machine.Query().Where(machine.StateEQ(machine.StateDiscovered)).CountX(ctx); n != 3 {
				t.Errorf("%d discovered machines left, want 3", n)
			}
		})
	}
}

// machineMAC returns the MAC of a machine's one interface.
func machineMAC(t *testing.T, e *env, id uuid.UUID) string {
	t.Helper()
	ns, err := e.Store.Client.Machine.QueryNics(e.Store.Client.Machine.GetX(t.Context(), id)).All(t.Context())
	if err != nil || len(ns) != 1 {
		t.Fatalf("interfaces of %s: %v, %v", id, ns, err)
	}
	return ns[0].MAC
}
