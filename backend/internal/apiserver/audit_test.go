package apiserver

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Procedures the audit tests look for.
const (
	createSegmentRPC = networkv1connect.SegmentServiceCreateSegmentProcedure
	createMachineRPC = machinev1connect.MachineServiceCreateMachineProcedure
	updateMachineRPC = machinev1connect.MachineServiceUpdateMachineProcedure
	deleteMachineRPC = machinev1connect.MachineServiceDeleteMachineProcedure
)

// userID is the principal of the development PKI's certificate for a user
// role (admin, operator, viewer).
func userID(role principal.Role) string {
	return pki.UserID(pki.DefaultTrustDomain, role, "bootstrap")
}

// window is the span of wall-clock time in which calls were made.
type window struct{ start, end time.Time }

// startWindow opens a window now. Stored times are truncated to the
// microsecond, so the window starts at the microsecond.
func startWindow() *window {
	return &window{start: time.Now().Truncate(time.Microsecond)}
}

// close ends the window now.
func (w *window) close() { w.end = time.Now() }

// listAudit lists the audit records a request selects, following
// next_page_token to the end; it fails t if a page is larger than asked.
func listAudit(t testing.TB, c clients, req *auditv1.ListAuditRecordsRequest) []*auditv1.AuditRecord {
	t.Helper()
	var out []*auditv1.AuditRecord
	for range 1000 {
		resp, err := c.Audit.ListAuditRecords(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("ListAuditRecords(%v): %v", req, err)
		}
		if req.GetPageSize() > 0 && len(resp.Msg.GetRecords()) > int(req.GetPageSize()) {
			t.Fatalf("ListAuditRecords returned %d records, more than page_size %d", len(resp.Msg.GetRecords()), req.GetPageSize())
		}
		out = append(out, resp.Msg.GetRecords()...)
		if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
			return out
		}
	}
	t.Fatal("ListAuditRecords never returned an empty next_page_token")
	return nil
}

// onlyAuditRecord returns the one record a request selects, failing t if
// there is not exactly one.
func onlyAuditRecord(t testing.TB, e *env, req *auditv1.ListAuditRecordsRequest) *auditv1.AuditRecord {
	t.Helper()
	rs := listAudit(t, e.clients, req)
	if len(rs) != 1 {
		t.Fatalf("ListAuditRecords(%v) returned %d records, want 1:\n%v", req, len(rs), rs)
	}
	return rs[0]
}

// checkAuditRecord compares got with want on every field but id, time,
// peer and resource_ids; it checks that the time lies in w, that the peer
// is a loopback address and port, and that resource_ids holds ids.
func checkAuditRecord(t testing.TB, got, want *auditv1.AuditRecord, w *window, ids ...string) {
	t.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&auditv1.AuditRecord{}, "id", "time", "peer", "resource_ids")); diff != "" {
		t.Errorf("audit record of %s (-want +got):\n%s", want.GetProcedure(), diff)
	}
	if got.GetId() <= 0 {
		t.Errorf("audit record of %s has id %d, want a positive one", want.GetProcedure(), got.GetId())
	}
	if at := got.GetTime().AsTime(); got.GetTime() == nil || at.Before(w.start) || at.After(w.end) {
		t.Errorf("audit record of %s has time %v, want between %v and %v", want.GetProcedure(), got.GetTime(), w.start, w.end)
	}
	if ap, err := netip.ParseAddrPort(got.GetPeer()); err != nil || !ap.Addr().IsLoopback() {
		t.Errorf("audit record of %s has peer %q, want the test client's loopback address and port", want.GetProcedure(), got.GetPeer())
	}
	for _, id := range ids {
		if !slices.Contains(got.GetResourceIds(), id) {
			t.Errorf("audit record of %s has resource_ids %v, want them to include %s", want.GetProcedure(), got.GetResourceIds(), id)
		}
	}
}

// messageOf is the message of a Connect error, failing t for any other
// error.
func messageOf(t testing.TB, err error) string {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %v is not a Connect error", err)
	}
	return cerr.Message()
}

func TestAuditRecordsSuccessfulCall(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		w := startWindow()
		seg := createSegment(t, e, rack1())
		w.close()

		got := onlyAuditRecord(t, e, &auditv1.ListAuditRecordsRequest{})
		checkAuditRecord(t, got, &auditv1.AuditRecord{
			Principal:  adminID,
			Roles:      []string{string(principal.RoleAdmin)},
			AuthMethod: string(principal.MethodCertificate),
			Procedure:  createSegmentRPC,
			Code:       "ok",
		}, w, seg.GetId())
	})
}

func TestAuditRecordsMachineChanges(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		operator := e.as(t, "operator")
		w := startWindow()
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
		if _, err := operator.Machines.UpdateMachine(t.Context(), connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine: &machinev1.Machine{Id: m.GetId(), Hostname: "node-1"}, UpdateMask: mask("hostname"),
		})); err != nil {
			t.Fatalf("UpdateMachine as operator: %v", err)
		}
		setMaintenance(t, e, m.GetId(), true)
		if _, err := e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: m.GetId()})); err != nil {
			t.Fatalf("DeleteMachine: %v", err)
		}
		w.close()

		admin := func(procedure string) *auditv1.AuditRecord {
			return &auditv1.AuditRecord{
				Principal: adminID, Roles: []string{string(principal.RoleAdmin)},
				AuthMethod: string(principal.MethodCertificate), Procedure: procedure, Code: "ok",
			}
		}
		want := []*auditv1.AuditRecord{ // newest first
			admin(deleteMachineRPC),
			admin(updateMachineRPC),
			{
				Principal: userID(principal.RoleOperator), Roles: []string{string(principal.RoleOperator)},
				AuthMethod: string(principal.MethodCertificate), Procedure: updateMachineRPC, Code: "ok",
			},
			admin(createMachineRPC),
		}
		got := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{ResourceId: m.GetId()})
		if len(got) != len(want) {
			t.Fatalf("ListAuditRecords(resource_id=%s) returned %d records, want %d:\n%v", m.GetId(), len(got), len(want), got)
		}
		for i := range want {
			checkAuditRecord(t, got[i], want[i], w, m.GetId())
		}
	})
}

func TestAuditRecordsFailedCalls(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		unknown := uuid.NewString()
		tests := map[string]struct {
			call func(t *testing.T) error
			want *auditv1.AuditRecord
			ids  []string
		}{
			"invalid prefix": {
				call: func(t *testing.T) error {
					_, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{
						Segment: withSegment(func(s *networkv1.Segment) { s.Prefix = "10.9.0.1/24" }),
					}))
					return err
				},
				want: &auditv1.AuditRecord{Procedure: createSegmentRPC, Code: "invalid_argument"},
			},
			"unknown machine": {
				call: func(t *testing.T) error {
					_, err := e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: unknown}))
					return err
				},
				want: &auditv1.AuditRecord{Procedure: deleteMachineRPC, Code: "not_found"},
				ids:  []string{unknown},
			},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w := startWindow()
				err := tc.call(t)
				w.close()
				if codeOf(err) != tc.want.GetCode() {
					t.Fatalf("call returned %v (code %s), want code %s", err, codeOf(err), tc.want.GetCode())
				}
				tc.want.Principal = adminID
				tc.want.Roles = []string{string(principal.RoleAdmin)}
				tc.want.AuthMethod = string(principal.MethodCertificate)
				tc.want.Error = messageOf(t, err)
				if tc.want.GetError() == "" {
					t.Fatalf("the error %v has no message to record", err)
				}
				got := onlyAuditRecord(t, e, &auditv1.ListAuditRecordsRequest{Procedure: tc.want.GetProcedure()})
				checkAuditRecord(t, got, tc.want, w, tc.ids...)
			})
		}
	})
}

func TestAuditRecordsRejectedCalls(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
		createSegmentAs := func(t *testing.T, c clients) error {
			_, err := c.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: rack1()}))
			return err
		}
		certUser := func(role principal.Role, procedure, code string) *auditv1.AuditRecord {
			return &auditv1.AuditRecord{
				Principal: userID(role), Roles: []string{string(role)},
				AuthMethod: string(principal.MethodCertificate), Procedure: procedure, Code: code,
			}
		}
		tests := map[string]struct {
			c    clients
			call func(t *testing.T, c clients) error
			want *auditv1.AuditRecord
			ids  []string
		}{
			"viewer creates a segment": {
				c:    e.as(t, "viewer"),
				call: createSegmentAs,
				want: certUser(principal.RoleViewer, createSegmentRPC, "permission_denied"),
			},
			"operator deletes a machine": {
				c: e.as(t, "operator"),
				call: func(t *testing.T, c clients) error {
					_, err := c.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: m.GetId()}))
					return err
				},
				want: certUser(principal.RoleOperator, deleteMachineRPC, "permission_denied"),
				ids:  []string{m.GetId()},
			},
			"no certificate": {
				c:    e.clientsOver(e.HTTP),
				call: createSegmentAs,
				want: &auditv1.AuditRecord{Principal: principal.Anonymous, Procedure: createSegmentRPC, Code: "unauthenticated"},
			},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w := startWindow()
				err := tc.call(t, tc.c)
				w.close()
				if codeOf(err) != tc.want.GetCode() {
					t.Fatalf("call returned %v (code %s), want code %s", err, codeOf(err), tc.want.GetCode())
				}
				tc.want.Error = messageOf(t, err)
				got := onlyAuditRecord(t, e, &auditv1.ListAuditRecordsRequest{Principal: tc.want.GetPrincipal()})
				checkAuditRecord(t, got, tc.want, w, tc.ids...)
			})
		}
	})
}

func TestAuditSkipsReadOnlyCalls(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
		before := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{})
		if len(before) != 2 {
			t.Fatalf("the two creates left %d audit records, want 2:\n%v", len(before), before)
		}

		viewer, anonymous := e.as(t, "viewer"), e.clientsOver(e.HTTP)
		reads := map[string]struct {
			call func(t *testing.T) error
			code connect.Code // 0 for success
		}{
			"GetSegment": {call: func(t *testing.T) error {
				_, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: seg.GetId()}))
				return err
			}},
			"ListSegments": {call: func(t *testing.T) error {
				_, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{}))
				return err
			}},
			"GetMachine": {call: func(t *testing.T) error {
				_, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: m.GetId()}))
				return err
			}},
			"ListMachines": {call: func(t *testing.T) error {
				_, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{}))
				return err
			}},
			"ListMachines as viewer": {call: func(t *testing.T) error {
				_, err := viewer.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{}))
				return err
			}},
			"ListLeases": {call: func(t *testing.T) error {
				_, err := e.Address.ListLeases(t.Context(), connect.NewRequest(&networkv1.ListLeasesRequest{SegmentId: seg.GetId()}))
				return err
			}},
			"ListAuditRecords": {call: func(t *testing.T) error {
				_, err := e.Audit.ListAuditRecords(t.Context(), connect.NewRequest(&auditv1.ListAuditRecordsRequest{}))
				return err
			}},
			"Watch": {call: func(t *testing.T) error {
				// The snapshot of the segment and the machine, then the
				// synced marker.
				w := openWatch(t, e, &watchv1.WatchRequest{})
				for range 3 {
					if w.next(t).GetType() == syncedEv {
						return nil
					}
				}
				return errors.New("Watch sent no synced event after a snapshot of two resources")
			}},
			"denied ListAuditRecords": {code: connect.CodePermissionDenied, call: func(t *testing.T) error {
				_, err := viewer.Audit.ListAuditRecords(t.Context(), connect.NewRequest(&auditv1.ListAuditRecordsRequest{}))
				return err
			}},
			"unauthenticated GetMachine": {code: connect.CodeUnauthenticated, call: func(t *testing.T) error {
				_, err := anonymous.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: m.GetId()}))
				return err
			}},
		}
		// Subtests of a group finish before the group returns, so every
		// read has been served when the log is read again.
		t.Run("reads", func(t *testing.T) {
			for name, tc := range reads {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					err := tc.call(t)
					want := "ok"
					if tc.code != 0 {
						want = tc.code.String()
					}
					if got := codeOf(err); got != want {
						t.Fatalf("call returned %v (code %s), want code %s", err, got, want)
					}
				})
			}
		})

		after := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{})
		if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
			t.Errorf("read-only calls changed the audit log (-before +after):\n%s", diff)
		}
	})
}

// auditLog makes a known sequence of calls and returns their records,
// oldest first, as the unfiltered list reports them.
type auditLog struct {
	records  []*auditv1.AuditRecord // oldest first
	segment  string                 // id of the first segment created
	machine  string                 // id of the machine created, updated and deleted
	viewerID string
}

func newAuditLog(t *testing.T, e *env) *auditLog {
	t.Helper()
	l := &auditLog{viewerID: userID(principal.RoleViewer)}
	l.segment = createSegment(t, e, rack1()).GetId()
	createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24"})
	l.machine = createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}}).GetId()
	setMaintenance(t, e, l.machine, true)
	if _, err := e.as(t, "viewer").Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{
		Segment: &networkv1.Segment{Name: "rack3", Prefix: "10.3.0.0/24"},
	})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("CreateSegment as viewer: %v, want PermissionDenied", err)
	}
	if _, err := e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: l.machine})); err != nil {
		t.Fatalf("DeleteMachine: %v", err)
	}
	if _, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{
		Segment: &networkv1.Segment{Name: "rack4", Prefix: "10.4.0.1/24"},
	})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("CreateSegment with host bits in the prefix: %v, want InvalidArgument", err)
	}

	all := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{PageSize: 1000})
	wantProcedures := []string{ // oldest first
		createSegmentRPC, createSegmentRPC, createMachineRPC, updateMachineRPC,
		createSegmentRPC, deleteMachineRPC, createSegmentRPC,
	}
	var gotProcedures []string
	for _, r := range slices.Backward(all) {
		l.records = append(l.records, r)
		gotProcedures = append(gotProcedures, r.GetProcedure())
	}
	if diff := cmp.Diff(wantProcedures, gotProcedures); diff != "" {
		t.Fatalf("procedures of the audit log, oldest first (-want +got):\n%s", diff)
	}
	return l
}

// newest returns the records at the given positions of the log (oldest
// is 0), newest first.
func (l *auditLog) newest(positions ...int) []*auditv1.AuditRecord {
	out := []*auditv1.AuditRecord{}
	for _, p := range slices.Backward(slices.Sorted(slices.Values(positions))) {
		out = append(out, l.records[p])
	}
	return out
}

// where returns the records of the log that keep selects, newest first.
func (l *auditLog) where(keep func(r *auditv1.AuditRecord) bool) []*auditv1.AuditRecord {
	out := []*auditv1.AuditRecord{}
	for _, r := range slices.Backward(l.records) {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// at is the time of the record at position p.
func (l *auditLog) at(p int) *timestamppb.Timestamp { return l.records[p].GetTime() }

func TestListAuditRecordsNewestFirst(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		l := newAuditLog(t, e)
		for i := 1; i < len(l.records); i++ {
			older, newer := l.records[i-1], l.records[i]
			if newer.GetId() <= older.GetId() || newer.GetTime().AsTime().Before(older.GetTime().AsTime()) {
				t.Errorf("record %d (%v) is listed before record %d (%v), want newest first",
					older.GetId(), older.GetTime().AsTime(), newer.GetId(), newer.GetTime().AsTime())
			}
		}
		// The default page holds the whole log, with no next page.
		resp, err := e.Audit.ListAuditRecords(t.Context(), connect.NewRequest(&auditv1.ListAuditRecordsRequest{}))
		if err != nil {
			t.Fatalf("ListAuditRecords: %v", err)
		}
		if diff := cmp.Diff(l.newest(0, 1, 2, 3, 4, 5, 6), resp.Msg.GetRecords(), protocmp.Transform()); diff != "" {
			t.Errorf("default page (-want +got):\n%s", diff)
		}
		if resp.Msg.GetNextPageToken() != "" {
			t.Errorf("default page of the whole log has next_page_token %q, want none", resp.Msg.GetNextPageToken())
		}
	})
}

func TestListAuditRecordsFilters(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		l := newAuditLog(t, e)
		// Record 2 is CreateMachine, 4 the viewer's denied CreateSegment.
		since, until := l.at(2), l.at(5)
		tests := map[string]struct {
			req  *auditv1.ListAuditRecordsRequest
			want []*auditv1.AuditRecord
		}{
			"principal": {
				&auditv1.ListAuditRecordsRequest{Principal: l.viewerID},
				l.newest(4),
			},
			"admin": {
				&auditv1.ListAuditRecordsRequest{Principal: adminID},
				l.newest(0, 1, 2, 3, 5, 6),
			},
			"unknown principal": {
				&auditv1.ListAuditRecordsRequest{Principal: "spiffe://carbide.local/user/admin/nobody"},
				l.newest(),
			},
			"procedure": {
				&auditv1.ListAuditRecordsRequest{Procedure: createSegmentRPC},
				l.newest(0, 1, 4, 6),
			},
			"procedure and principal": {
				&auditv1.ListAuditRecordsRequest{Procedure: createSegmentRPC, Principal: adminID},
				l.newest(0, 1, 6),
			},
			"machine id": {
				&auditv1.ListAuditRecordsRequest{ResourceId: l.machine},
				l.newest(2, 3, 5),
			},
			"segment id": {
				&auditv1.ListAuditRecordsRequest{ResourceId: l.segment},
				l.newest(0),
			},
			"part of an id": {
				&auditv1.ListAuditRecordsRequest{ResourceId: l.machine[:8]},
				l.newest(),
			},
			"unknown id": {
				&auditv1.ListAuditRecordsRequest{ResourceId: uuid.NewString()},
				l.newest(),
			},
			"since is inclusive": {
				&auditv1.ListAuditRecordsRequest{Since: since},
				l.where(func(r *auditv1.AuditRecord) bool { return !r.GetTime().AsTime().Before(since.AsTime()) }),
			},
			"until is exclusive": {
				&auditv1.ListAuditRecordsRequest{Until: until},
				l.where(func(r *auditv1.AuditRecord) bool { return r.GetTime().AsTime().Before(until.AsTime()) }),
			},
			"since and until": {
				&auditv1.ListAuditRecordsRequest{Since: since, Until: until},
				l.where(func(r *auditv1.AuditRecord) bool {
					return !r.GetTime().AsTime().Before(since.AsTime()) && r.GetTime().AsTime().Before(until.AsTime())
				}),
			},
			"since, until and principal": {
				&auditv1.ListAuditRecordsRequest{Since: since, Until: until, Principal: adminID},
				l.where(func(r *auditv1.AuditRecord) bool {
					return r.GetPrincipal() == adminID &&
						!r.GetTime().AsTime().Before(since.AsTime()) && r.GetTime().AsTime().Before(until.AsTime())
				}),
			},
			"since after the last call": {
				&auditv1.ListAuditRecordsRequest{Since: timestamppb.New(l.at(6).AsTime().Add(time.Microsecond))},
				l.newest(),
			},
			"until before the first call": {
				&auditv1.ListAuditRecordsRequest{Until: l.at(0)},
				l.newest(),
			},
		}
		for _, name := range []string{"since is inclusive", "until is exclusive", "since and until"} {
			if n := len(tests[name].want); n == 0 || n == len(l.records) {
				t.Fatalf("case %q selects %d of %d records; the calls were too close in time to test it", name, n, len(l.records))
			}
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				got := listAudit(t, e.clients, tc.req)
				if diff := cmp.Diff(tc.want, got, protocmp.Transform(), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("ListAuditRecords(%v) (-want +got):\n%s", tc.req, diff)
				}
			})
		}
	})
}

func TestListAuditRecordsPages(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		l := newAuditLog(t, e)
		tests := map[string]struct {
			req  *auditv1.ListAuditRecordsRequest
			want []*auditv1.AuditRecord
		}{
			"whole log": {
				&auditv1.ListAuditRecordsRequest{PageSize: 2},
				l.newest(0, 1, 2, 3, 4, 5, 6),
			},
			"one record a page": {
				&auditv1.ListAuditRecordsRequest{PageSize: 1},
				l.newest(0, 1, 2, 3, 4, 5, 6),
			},
			"filtered": {
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Principal: adminID},
				l.newest(0, 1, 2, 3, 5, 6),
			},
			"filtered by resource": {
				&auditv1.ListAuditRecordsRequest{PageSize: 2, ResourceId: l.machine},
				l.newest(2, 3, 5),
			},
			"filtered by time": {
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Since: l.at(1), Until: l.at(6)},
				l.where(func(r *auditv1.AuditRecord) bool {
					return !r.GetTime().AsTime().Before(l.at(1).AsTime()) && r.GetTime().AsTime().Before(l.at(6).AsTime())
				}),
			},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				got := listAudit(t, e.clients, tc.req)
				seen := map[int64]bool{}
				for _, r := range got {
					if seen[r.GetId()] {
						t.Errorf("record %d is listed twice", r.GetId())
					}
					seen[r.GetId()] = true
				}
				if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
					t.Errorf("pages of %v (-want +got):\n%s", tc.req, diff)
				}
			})
		}

		t.Run("exact last page", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Audit.ListAuditRecords(t.Context(), connect.NewRequest(&auditv1.ListAuditRecordsRequest{
				PageSize: int32(len(l.records)),
			}))
			if err != nil {
				t.Fatalf("ListAuditRecords: %v", err)
			}
			if n := len(resp.Msg.GetRecords()); n != len(l.records) || resp.Msg.GetNextPageToken() != "" {
				t.Errorf("a page as large as the log returned %d records and next_page_token %q, want %d and none",
					n, resp.Msg.GetNextPageToken(), len(l.records))
			}
		})

		t.Run("page size may change", func(t *testing.T) {
			t.Parallel()
			first, err := e.Audit.ListAuditRecords(t.Context(), connect.NewRequest(&auditv1.ListAuditRecordsRequest{PageSize: 2}))
			if err != nil {
				t.Fatalf("ListAuditRecords: %v", err)
			}
			rest := listAudit(t, e.clients, &auditv1.ListAuditRecordsRequest{PageSize: 3, PageToken: first.Msg.GetNextPageToken()})
			got := append(first.Msg.GetRecords(), rest...)
			if diff := cmp.Diff(l.newest(0, 1, 2, 3, 4, 5, 6), got, protocmp.Transform()); diff != "" {
				t.Errorf("pages of 2, then 3 (-want +got):\n%s", diff)
			}
		})
	})
}

func TestListAuditRecordsBadRequests(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		l := newAuditLog(t, e)
		// firstToken is the next_page_token of the first page of req.
		firstToken := func(t *testing.T, req *auditv1.ListAuditRecordsRequest) string {
			t.Helper()
			resp, err := e.Audit.ListAuditRecords(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatalf("ListAuditRecords(%v): %v", req, err)
			}
			if resp.Msg.GetNextPageToken() == "" {
				t.Fatalf("ListAuditRecords(%v) returned no next_page_token", req)
			}
			return resp.Msg.GetNextPageToken()
		}
		list := func(c clients, req *auditv1.ListAuditRecordsRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := c.Audit.ListAuditRecords(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		// reuse lists with the token of a first page of from, but the
		// filters of to.
		reuse := func(from, to *auditv1.ListAuditRecordsRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				to.PageToken = firstToken(t, from)
				return list(e.clients, to)(t)
			}
		}
		invalid := connect.CodeInvalidArgument
		runBadRequests(t, map[string]badRequest{
			"token reused with a principal": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 2},
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Principal: adminID}), invalid, "page_token"},
			"token reused with a procedure": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 2},
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Procedure: createSegmentRPC}), invalid, "page_token"},
			"token reused with a resource id": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 1, ResourceId: l.machine},
				&auditv1.ListAuditRecordsRequest{PageSize: 1, ResourceId: l.segment}), invalid, "page_token"},
			"token reused with since": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 2},
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Since: l.at(0)}), invalid, "page_token"},
			"token reused with another until": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Until: l.at(6)},
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Until: l.at(5)}), invalid, "page_token"},
			"token reused without filters": {reuse(
				&auditv1.ListAuditRecordsRequest{PageSize: 2, Principal: adminID},
				&auditv1.ListAuditRecordsRequest{PageSize: 2}), invalid, "page_token"},
			"garbage token": {list(e.clients, &auditv1.ListAuditRecordsRequest{PageToken: "not-a-token"}),
				invalid, "page_token"},
			"page_size too large": {list(e.clients, &auditv1.ListAuditRecordsRequest{PageSize: 1001}),
				invalid, "page_size"},
			"negative page_size": {list(e.clients, &auditv1.ListAuditRecordsRequest{PageSize: -1}),
				invalid, "page_size"},
			"viewer": {list(e.as(t, "viewer"), &auditv1.ListAuditRecordsRequest{}),
				connect.CodePermissionDenied, auditv1connect.AuditServiceListAuditRecordsProcedure},
			"operator": {list(e.as(t, "operator"), &auditv1.ListAuditRecordsRequest{}),
				connect.CodePermissionDenied, auditv1connect.AuditServiceListAuditRecordsProcedure},
			"no certificate": {list(e.clientsOver(e.HTTP), &auditv1.ListAuditRecordsRequest{}),
				connect.CodeUnauthenticated, "credentials"},
		})
	})
}
