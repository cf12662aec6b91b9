package apiserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent/change"
	"github.com/carbide-dev/carbide/ent/lease"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAuditSkipsHealthChecks checks that anonymous health probes leave no
// audit record, and are counted instead.
func TestAuditSkipsHealthChecks(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		for range 3 {
			resp, err := e.HTTP.Post(e.URL+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "SERVING") {
				t.Fatalf("health check answered %s: %s", resp.Status, body)
			}
		}
		if got := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{}); len(got) != 0 {
			t.Errorf("three health checks left %d audit records, want none:\n%v", len(got), got)
		}
		metrics := scrape(t, e)
		want := `carbide_audit_calls_not_recorded_total{code="ok",procedure="/grpc.health.v1.Health/Check"} 3`
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
		want = `carbide_audit_calls_not_recorded_total{code="ok",procedure="/carbide.audit.v1.AuditService/ListAuditRecords"} 1`
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	})
}

// refuseAuditRecords makes the database refuse to write audit records
// until the returned function is called.
func refuseAuditRecords(t *testing.T, e *env) (allow func()) {
	t.Helper()
	db := e.Store.DB()
	stmts, undo := []string{
		`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'audit records refused by the test'); END`,
	}, []string{`DROP TRIGGER refuse_audit`}
	if e.Store.Dialect == dialect.Postgres {
		stmts = []string{
			`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit records refused by the test'; END $$`,
			`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION refuse_audit()`,
		}
		undo = []string{`DROP TRIGGER refuse_audit ON audit_records`, `DROP FUNCTION refuse_audit()`}
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return func() {
		for _, s := range undo {
			if _, err := db.ExecContext(t.Context(), s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
}

// TestAuditRecordCommitsWithItsChange checks that a change and its audit
// record commit together: a change whose record cannot be written is
// rolled back and fails, and a call that fails inside its transaction is
// still recorded.
func TestAuditRecordCommitsWithItsChange(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		allow := refuseAuditRecords(t, e)
		_, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: rack1()}))
		if got := connect.CodeOf(err); err == nil || got != connect.CodeInternal {
			t.Errorf("CreateSegment while audit records are refused returned %v (code %s), want an internal error", err, codeOf(err))
		}
		segs, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(segs.Msg.GetSegments()); n != 0 {
			t.Errorf("CreateSegment whose audit record was refused left %d segments, want none", n)
		}
		allow()

		// An update that the handler rejects inside its transaction,
		// with the segment locked and read: a gateway outside the prefix.
		seg := createSegment(t, e, rack1())
		_, err = e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{
			Segment: &networkv1.Segment{Id: seg.GetId(), Gateway: "10.9.9.1"}, UpdateMask: mask("gateway")}))
		if err == nil {
			t.Fatal("moving rack1's gateway out of its prefix succeeded")
		}
		got := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{ResourceId: seg.GetId()})
		var calls []string
		for _, r := range got {
			calls = append(calls, r.GetProcedure()+" "+r.GetCode())
		}
		want := []string{
			networkv1connect.SegmentServiceUpdateSegmentProcedure + " " + codeOf(err),
			createSegmentRPC + " ok",
		}
		if strings.Join(calls, "\n") != strings.Join(want, "\n") {
			t.Errorf("records of rack1, newest first:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
		}
	})
}

// TestPruneDeletesOldRowsInBatches checks that the change log and the
// audit log keep what is younger than their retention and lose the rest,
// in statements of at most one batch each.
func TestPruneDeletesOldRowsInBatches(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		now := store.Now()
		c := e.Store.Client
		for i := range 7 {
			age := time.Duration(i) * 24 * time.Hour // 0 to 6 days old
			if err := c.AuditRecord.Create().SetTime(now.Add(-age)).SetPrincipal("test").SetProcedure("/test").SetCode("ok").Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Change.Create().SetTime(now.Add(-age)).SetKind(change.KindMachine).SetType(change.TypeCreated).
				SetResourceID("m").SetPayload([]byte{}).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		statements := countDeleteStatements(t, e)

		reg := prometheus.NewRegistry()
		p := newPruner(e.Store, Config{ChangeRetention: 36 * time.Hour, AuditRetention: 60 * time.Hour, PruneBatch: 2}, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		p.once(ctx, now)

		// Kept: changes 0 and 1 day old, audit records up to 2 days old.
		if n := c.Change.Query().CountX(ctx); n != 2 {
			t.Errorf("change log keeps %d entries, want the 2 younger than 36h", n)
		}
		if n := c.AuditRecord.Query().CountX(ctx); n != 3 {
			t.Errorf("audit log keeps %d records, want the 3 younger than 60h", n)
		}
		if got := testutil.ToFloat64(p.pruned.WithLabelValues("changes")); got != 5 {
			t.Errorf("carbide_pruned_rows_total{log=changes} = %v, want 5", got)
		}
		if got := testutil.ToFloat64(p.pruned.WithLabelValues("audit")); got != 4 {
			t.Errorf("carbide_pruned_rows_total{log=audit} = %v, want 4", got)
		}
		if statements != nil {
			for table, sizes := range statements() {
				for _, n := range sizes {
					if n > 2 {
						t.Errorf("one statement deleted %d rows of %s, more than the batch of 2 (statements: %v)", n, table, sizes)
					}
				}
			}
		}
	})
}

// countDeleteStatements records, on PostgreSQL, how many rows each DELETE
// statement removes from the audit log and the change log; it returns the
// counts by table. On the embedded store, which has no statement
// triggers, it returns nil.
func countDeleteStatements(t *testing.T, e *env) func() map[string][]int {
	t.Helper()
	if e.Store.Dialect != dialect.Postgres {
		return nil
	}
	db := e.Store.DB()
	for _, s := range []string{
		`CREATE TABLE deletes (tbl text, n int)`,
		`CREATE FUNCTION count_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO deletes SELECT TG_TABLE_NAME, count(*) FROM old_rows; RETURN NULL; END $$`,
		`CREATE TRIGGER count_deletes AFTER DELETE ON audit_records REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_deletes()`,
		`CREATE TRIGGER count_deletes AFTER DELETE ON changes REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_deletes()`,
	} {
		if _, err := db.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return func() map[string][]int {
		rows, err := db.QueryContext(context.Background(), `SELECT tbl, n FROM deletes`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string][]int{}
		for rows.Next() {
			var tbl string
			var n int
			if err := rows.Scan(&tbl, &n); err != nil {
				t.Fatal(err)
			}
			out[tbl] = append(out[tbl], n)
		}
		if len(out["audit_records"]) < 2 || len(out["changes"]) < 3 {
			t.Errorf("pruning took DELETE statements %v, want several per table", out)
		}
		return out
	}
}

// TestConfigRejectsBadRetention checks that the retention settings are
// checked with the rest of the configuration.
func TestConfigRejectsBadRetention(t *testing.T) {
	t.Parallel()
	cfg := Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), AuditRetention: -time.Hour, PruneBatch: -1}
	err := cfg.Validate()
	for _, want := range []string{"prune-batch: must be 0", "durations must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
}

// TestAuditRecordCommitsWithLeaseAndBoot checks the DHCP and boot writes
// that the audit log records commit with their record: refused records
// refuse an enrolment and the start of a boot, and a written one names
// the machine, once. A renewal is lease traffic, which
// carbide_dhcp_lease_writes_total counts instead: it goes ahead while
// records are refused, and leaves none.
func TestAuditRecordCommitsWithLeaseAndBoot(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		_, _, c := dhcpSegments(t, e)
		mac, newMAC := "52:54:00:ad:00:01", "52:54:00:ad:00:02"
		origin := &dhcpv1.Origin{LocalAddress: "10.1.0.1"}
		req := &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Extend: true}
		first := dhcpLease(t, c, req)
		expiry := func() time.Time {
			t.Helper()
			l, err := e.Store.Client.Lease.Query().Where(lease.MAC(mac)).Only(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return l.ExpireTime
		}
		bootID := func() string {
			t.Helper()
			m, err := e.Store.Client.Machine.Get(t.Context(), googleUUID(t, first.GetMachineId()))
			if err != nil {
				t.Fatal(err)
			}
			if m.BootID == nil {
				return ""
			}
			return m.BootID.String()
		}
		machineCount := func() int {
			t.Helper()
			n, err := e.Store.Client.Machine.Query().Count(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		leased, booted, machinesBefore := expiry(), bootID(), machineCount()
		time.Sleep(10 * time.Millisecond) // a renewal now moves the expiry

		allow := refuseAuditRecords(t, e)
		if _, err := c.DHCP.Lease(t.Context(), connect.NewRequest(&dhcpv1.LeaseRequest{Mac: newMAC, Origin: origin})); connect.CodeOf(err) != connect.CodeInternal {
			t.Errorf("enrolment while audit records are refused: %v, want an internal error", err)
		}
		if n := machineCount(); n != machinesBefore {
			t.Errorf("enrolment whose audit record was refused left %d machines, want %d", n, machinesBefore)
		}
		if _, err := c.DHCP.Lease(t.Context(), connect.NewRequest(req)); err != nil {
			t.Errorf("renewal while audit records are refused: %v, want it to go ahead unaudited", err)
		}
		if got := expiry(); !got.After(leased) {
			t.Errorf("renewal left the expiry at %s", got)
		}
		_, err := e.as(t, "pxe").Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{
			Mac: mac, ClientAddress: first.GetAddress(), StartBoot: true}))
		if connect.CodeOf(err) != connect.CodeInternal {
			t.Errorf("boot start while audit records are refused: %v, want an internal error", err)
		}
		if got := bootID(); got != booted {
			t.Errorf("boot start whose audit record was refused recorded boot %q", got)
		}
		allow()

		enrolled := dhcpLease(t, c, &dhcpv1.LeaseRequest{Mac: newMAC, Origin: origin})
		dhcpLease(t, c, req)
		startBoot(t, e, mac, first.GetAddress())
		if bootID() == booted {
			t.Error("the boot start recorded no boot")
		}
		for procedure, want := range map[string][][]string{
			// The two enrolments; no renewal.
			dhcpv1connect.DHCPServiceLeaseProcedure:         {{first.GetMachineId()}, {enrolled.GetMachineId()}},
			bootv1connect.BootServiceGetBootConfigProcedure: {{first.GetMachineId()}},
		} {
			var ok [][]string
			for _, r := range auditRecords(t, e, procedure) {
				if r.Code == "ok" {
					ok = append(ok, r.ResourceIds)
				}
			}
			if !cmp.Equal(ok, want) {
				t.Errorf("ok records of %s name %v, want %v", procedure, ok, want)
			}
		}
	})
}
