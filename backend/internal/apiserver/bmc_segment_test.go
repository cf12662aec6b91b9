package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

const (
	testRackPassword = "Rack-Default-pw-7731"
	testPodPassword  = "Pod-Default-pw-2290"
)

// setBMC sets a machine's BMC as an admin; username and password may be
// empty.
func setBMC(t testing.TB, e *env, machineID, address, username, password string) *bmcv1.BMC {
	t.Helper()
	resp, err := e.BMC.SetBMC(context.Background(), connect.NewRequest(&bmcv1.SetBMCRequest{
		MachineId: machineID, Address: address, Protocol: bmcv1.Protocol_PROTOCOL_IPMI,
		Username: username, Password: password}))
	if err != nil {
		t.Fatalf("SetBMC(%s): %v", address, err)
	}
	return resp.Msg.GetBmc()
}

func setSegmentCredentials(t testing.TB, c clients, segmentID, username, password string) *bmcv1.SegmentCredentials {
	t.Helper()
	resp, err := c.BMC.SetSegmentCredentials(context.Background(), connect.NewRequest(&bmcv1.SetSegmentCredentialsRequest{
		SegmentId: segmentID, Username: username, Password: password}))
	if err != nil {
		t.Fatalf("SetSegmentCredentials: %v", err)
	}
	return resp.Msg.GetCredentials()
}

func getBMC(t testing.TB, e *env, machineID string) *bmcv1.BMC {
	t.Helper()
	resp, err := e.BMC.GetBMC(context.Background(), connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: machineID}))
	if err != nil {
		t.Fatalf("GetBMC: %v", err)
	}
	return resp.Msg.GetBmc()
}

// TestBMCSegmentCredentials: a BMC without credentials of its own uses the
// defaults of the segment whose prefix holds its address, the most
// specific one if several do; its own credentials win; one with neither
// fails its operation with an error that says what to set, and the
// others run. No response, log line, audit record or column holds a
// default password in plain text.
func TestBMCSegmentCredentials(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testsecret.Register(t, testRackPassword, testPodPassword, testBMCPassword)
			var logs lockedBuffer
			e := newEnvWith(t, kind, "connect", envOptions{logs: &logs})
			ctx := context.Background()
			var texts []string // every response, for the password check
			keep := func(m fmt.Stringer) { texts = append(texts, m.String()) }

			rack := createSegment(t, e, &networkv1.Segment{Name: "rack", Prefix: "10.20.0.0/24"})
			// The API keeps segments from overlapping; the rule for
			// several prefixes holding an address is checked with a
			// second segment written straight to the store.
			pod, err := e.Store.Client.Segment.Create().SetName("pod").SetPrefix("10.20.0.0/26").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			set := setSegmentCredentials(t, e.clients, rack.GetId(), "rackadmin", testRackPassword)
			if set.GetUsername() != "rackadmin" || !set.GetHasPassword() || set.GetSegmentId() != rack.GetId() || set.GetCreateTime() == nil {
				t.Errorf("SetSegmentCredentials returned %v", set)
			}
			keep(set)
			keep(setSegmentCredentials(t, e.clients, pod.ID.String(), "podadmin", testPodPassword))

			machine := func(i int) string {
				return createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(7000 + i)}}).GetId()
			}
			inRack, inPod, own, none, named := machine(1), machine(2), machine(3), machine(4), machine(5)
			for _, b := range []*bmcv1.BMC{
				setBMC(t, e, inRack, "10.20.0.100", "", ""),
				setBMC(t, e, inPod, "10.20.0.10", "", ""),
				setBMC(t, e, own, "10.20.0.11", "admin", testBMCPassword),
				setBMC(t, e, none, "10.30.0.5", "", ""),
				setBMC(t, e, named, "bmc-5.example.net", "", ""),
			} {
				keep(b)
			}
			wantSegment := map[string]string{inRack: rack.GetId(), inPod: pod.ID.String(), own: "", none: "", named: ""}
			for id, seg := range wantSegment {
				if got := getBMC(t, e, id).GetCredentialsSegmentId(); got != seg {
					t.Errorf("GetBMC(%s).credentials_segment_id = %q, want %q", id, got, seg)
				}
			}
			list, err := e.BMC.ListBMCs(ctx, connect.NewRequest(&bmcv1.ListBMCsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			keep(list.Msg)
			for _, b := range list.Msg.GetBmcs() {
				if b.GetCredentialsSegmentId() != wantSegment[b.GetMachineId()] {
					t.Errorf("ListBMCs: %s uses segment %q, want %q", b.GetMachineId(), b.GetCredentialsSegmentId(), wantSegment[b.GetMachineId()])
				}
			}

			// One power-on each: the three with credentials go to the
			// daemon, the two without fail at once, saying what to set.
			ops := map[string]*bmcv1.Operation{}
			for id := range wantSegment {
				ops[id] = requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
			}
			key := newDaemonKey(t)
			daemon := e.as(t, "bmc")
			work := claim(t, daemon, "w1", key, 10, 0)
			type cred struct{ user, password string }
			want := map[string]cred{
				inRack: {"rackadmin", testRackPassword},
				inPod:  {"podadmin", testPodPassword},
				own:    {"admin", testBMCPassword},
			}
			if len(work) != len(want) {
				t.Fatalf("claimed %d machines, want %d: %v", len(work), len(want), work)
			}
			for _, w := range work {
				c, ok := want[w.GetMachineId()]
				if !ok {
					t.Errorf("claimed machine %s, which has no credentials", w.GetMachineId())
					continue
				}
				if u := w.GetTarget().GetUsername(); u != c.user {
					t.Errorf("machine %s: username %q, want %q", w.GetMachineId(), u, c.user)
				}
				if pw := key.open(t, w.GetMachineId(), w.GetTarget().GetSealedPassword()); pw != c.password {
					t.Errorf("machine %s: opened another password than its credentials' (%d bytes)", w.GetMachineId(), len(pw))
				}
				if _, err := bmcReport(daemon, "w1", w, bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_ON); err != nil {
					t.Fatal(err)
				}
			}
			for id, fix := range map[string]string{none: "SetSegmentCredentials", named: "IP address"} {
				got, err := e.BMC.GetOperation(ctx, connect.NewRequest(&bmcv1.GetOperationRequest{Id: ops[id].GetId()}))
				if err != nil {
					t.Fatal(err)
				}
				op := got.Msg.GetOperation()
				if op.GetState() != bmcv1.OperationState_OPERATION_STATE_FAILED ||
					!strings.Contains(op.GetError(), "no credentials") || !strings.Contains(op.GetError(), "SetBMC") ||
					!strings.Contains(op.GetError(), fix) {
					t.Errorf("operation on a BMC without credentials: %v %q, want failed saying to set them (%s)", op.GetState(), op.GetError(), fix)
				}
			}
			// A poll of a BMC without credentials records why, and
			// the BMC waits for its next poll like the others.
			if w := claim(t, daemon, "w1", key, 10, 3600); len(w) != 0 {
				t.Errorf("poll claim handed out %v; only BMCs without credentials were due", w)
			}
			if b := getBMC(t, e, none); !strings.Contains(b.GetPowerError(), "SetSegmentCredentials") || b.GetPowerStateTime() == nil {
				t.Errorf("BMC without credentials after a poll: %v, want the error that says what to set", b)
			}
			if w := claim(t, daemon, "w1", key, 10, 3600); len(w) != 0 {
				t.Errorf("second poll claim handed out %v", w)
			}

			// Users read a segment's credentials, never the password;
			// only admins change them.
			got, err := e.as(t, "viewer").BMC.GetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.GetSegmentCredentialsRequest{SegmentId: rack.GetId()}))
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Msg.GetCredentials(); c.GetUsername() != "rackadmin" || !c.GetHasPassword() {
				t.Errorf("GetSegmentCredentials: %v", c)
			}
			keep(got.Msg)
			_, err = e.as(t, "operator").BMC.SetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.SetSegmentCredentialsRequest{
				SegmentId: rack.GetId(), Username: "x", Password: "operator-pw-123"}))
			wantError(t, err, connect.CodePermissionDenied, "")
			_, err = e.as(t, "operator").BMC.DeleteSegmentCredentials(ctx, connect.NewRequest(&bmcv1.DeleteSegmentCredentialsRequest{SegmentId: rack.GetId()}))
			wantError(t, err, connect.CodePermissionDenied, "")
			_, err = e.BMC.SetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.SetSegmentCredentialsRequest{
				SegmentId: "6b1d0e3c-2b7a-4d38-9a51-0c1b2f7e9d11", Username: "x", Password: "some-pw-123"}))
			wantError(t, err, connect.CodeNotFound, "segment_id")
			_, err = e.BMC.SetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.SetSegmentCredentialsRequest{
				SegmentId: rack.GetId(), Username: "x"}))
			wantError(t, err, connect.CodeInvalidArgument, "password")
			// A password needs a username.
			_, err = e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
				MachineId: none, Address: "10.30.0.5", Password: "lonely-pw-123"}))
			wantError(t, err, connect.CodeInvalidArgument, "username")

			// A BMC set again without a username drops its own
			// credentials and uses its segment's.
			if b := setBMC(t, e, own, "10.20.0.11", "", ""); b.GetHasPassword() || b.GetUsername() != "" || b.GetCredentialsSegmentId() != pod.ID.String() {
				t.Errorf("BMC set without credentials: %v, want no password and the pod segment's", b)
			}
			// Credentials go with their segment: the BMCs of the pod
			// fall back to the rack's.
			if _, err := e.Segments.DeleteSegment(ctx, connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: pod.ID.String()})); err != nil {
				t.Fatal(err)
			}
			if seg := getBMC(t, e, inPod).GetCredentialsSegmentId(); seg != rack.GetId() {
				t.Errorf("after the pod segment was deleted, its BMC uses segment %q, want the rack's", seg)
			}
			if _, err := e.BMC.DeleteSegmentCredentials(ctx, connect.NewRequest(&bmcv1.DeleteSegmentCredentialsRequest{SegmentId: rack.GetId()})); err != nil {
				t.Fatal(err)
			}
			if _, err := e.BMC.DeleteSegmentCredentials(ctx, connect.NewRequest(&bmcv1.DeleteSegmentCredentialsRequest{SegmentId: rack.GetId()})); err != nil {
				t.Errorf("deleting credentials that are gone: %v", err)
			}
			_, err = e.BMC.GetSegmentCredentials(ctx, connect.NewRequest(&bmcv1.GetSegmentCredentialsRequest{SegmentId: rack.GetId()}))
			wantError(t, err, connect.CodeNotFound, "SetSegmentCredentials")
			if seg := getBMC(t, e, inRack).GetCredentialsSegmentId(); seg != "" {
				t.Errorf("after the rack's credentials were deleted its BMC uses segment %q", seg)
			}

			texts = append(texts, logs.String())
			for _, proc := range []string{"SetSegmentCredentials", "DeleteSegmentCredentials", "SetBMC"} {
				rs := auditRecords(t, e, "/carbide.bmc.v1.BMCService/"+proc)
				if len(rs) == 0 {
					t.Errorf("%s calls are not audited", proc)
				}
				for _, r := range rs {
					texts = append(texts, fmt.Sprintf("%+v", r))
				}
			}
			for i, s := range texts {
				for _, pw := range []string{testRackPassword, testPodPassword, testBMCPassword} {
					if strings.Contains(s, pw) {
						t.Errorf("text %d holds a password in plain text", i)
					}
				}
			}
			rows, err := e.Store.Client.SegmentCredentials.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows { // none left; the check below covers the rows a set leaves
				t.Errorf("segment credentials of %s left after their deletion", r.SegmentID)
			}
			sealedRow := setSegmentCredentials(t, e.clients, rack.GetId(), "rackadmin", testRackPassword)
			if !sealedRow.GetHasPassword() {
				t.Error("has_password is false after a password was set")
			}
			rows, err = e.Store.Client.SegmentCredentials.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows of segment credentials, want 1", len(rows))
			}
			if r := rows[0]; bytes.Contains(r.PasswordSealed, []byte(testRackPassword)) || r.PasswordKeyID == "" || len(r.PasswordSealed) == 0 {
				t.Errorf("stored default password is not sealed (key id %q)", r.PasswordKeyID)
			}
		})
	}
}
