package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// The passwords the agent enrols in these tests (20 characters, as the
// agent makes them).
const (
	testEnrolPassword  = "Ag3ntMadeP4ssw0rdXyZ"
	testEnrolPassword2 = "S3condAg3ntPassw0rdQ"
)

// TestEnrollBMC: an agent enrols its machine's BMC in band; the report
// tells it to while the machine has no credentials or only an agent's;
// the password is sealed, opens for the daemon, and appears in no
// response, log line, audit record, change or column; an operator's
// credentials win over any later enrolment; the agent of one machine
// cannot enrol another's.
func TestEnrollBMC(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testsecret.Register(t, testEnrolPassword)
			testsecret.Register(t, testEnrolPassword2)
			var logs lockedBuffer
			e := newEnvWith(t, kind, map[string]string{"postgres": "grpc", "embedded": "connect"}[kind], envOptions{logs: &logs})
			ctx := context.Background()
			dhcpSegments(t, e)
			b := bootMachine(t, e, "52:54:00:e0:00:01")
			id := b.config.GetMachineId()
			rep, err := report(t, e, b.config.GetAgentToken(), id, fullInventory("5b2c6d1e-0000-4000-8000-0000000000e1"))
			if err != nil {
				t.Fatal(err)
			}
			if !rep.GetEnrollBmc() {
				t.Error("the report of a machine without a BMC does not ask the agent to enrol it")
			}
			agent := agentClients(t, e, rep.GetAgentToken())

			enrol := func(c clients, machineID, password string) (*bmcv1.BMC, error) {
				resp, err := c.Agent.EnrollBMC(ctx, connect.NewRequest(&agentv1.EnrollBMCRequest{
					MachineId: machineID, Address: "198.18.0.23", Mac: "52:54:00:BE:EF:01", Username: "carbide", Password: password}))
				if err != nil {
					return nil, err
				}
				return resp.Msg.GetBmc(), nil
			}
			got, err := enrol(agent, id, testEnrolPassword)
			if err != nil {
				t.Fatalf("EnrollBMC: %v", err)
			}
			if got.GetAddress() != "198.18.0.23" || got.GetMac() != "52:54:00:be:ef:01" || got.GetUsername() != "carbide" ||
				!got.GetHasPassword() || got.GetProtocol() != bmcv1.Protocol_PROTOCOL_IPMI ||
				got.GetCredentialSource() != bmcv1.CredentialSource_CREDENTIAL_SOURCE_AGENT {
				t.Errorf("enrolled BMC = %v", got)
			}
			// The daemon that claims the machine gets the password.
			requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, nil)
			key := newDaemonKey(t)
			daemon := e.as(t, "bmc")
			work := claim(t, daemon, "w1", key, 1, 0)
			if len(work) != 1 {
				t.Fatalf("claim: %d machines, want 1", len(work))
			}
			if pw := key.open(t, id, work[0].GetTarget().GetSealedPassword()); pw != testEnrolPassword {
				t.Error("the daemon opened another password than the one enrolled")
			}
			if tg := work[0].GetTarget(); tg.GetAddress() != "198.18.0.23" || tg.GetUsername() != "carbide" || tg.GetPort() != 0 {
				t.Errorf("target %v, want the enrolled BMC on the default port", tg)
			}
			if _, err := bmcReport(daemon, "w1", work[0], bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_OFF); err != nil {
				t.Fatal(err)
			}

			// Agent credentials: the next report asks again, and a new
			// enrolment replaces them.
			rep2, err := report(t, e, rep.GetAgentToken(), id, fullInventory("5b2c6d1e-0000-4000-8000-0000000000e1"))
			if err != nil {
				t.Fatal(err)
			}
			if !rep2.GetEnrollBmc() {
				t.Error("a machine with an agent's credentials is not asked to enrol again")
			}
			if _, err := enrol(agent, id, testEnrolPassword2); err != nil {
				t.Fatalf("second EnrollBMC: %v", err)
			}

			// The agent of another machine may not enrol this one.
			other := bootMachine(t, e, "52:54:00:e0:00:02")
			if _, err := enrol(agentClients(t, e, other.config.GetAgentToken()), id, testEnrolPassword); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("another machine's agent enrolling this BMC: %v, want permission_denied", err)
			}
			// Nor may an admin: enrolment is the agent's.
			if _, err := enrol(e.clients, id, testEnrolPassword); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("an admin calling EnrollBMC: %v, want permission_denied", err)
			}
			// Bad input is refused before the handler.
			if _, err := agent.Agent.EnrollBMC(ctx, connect.NewRequest(&agentv1.EnrollBMCRequest{
				MachineId: id, Address: "bmc.example.net", Mac: "52:54:00", Username: "", Password: testEnrolPassword + "-too-long"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("malformed enrolment: %v, want invalid_argument", err)
			} else {
				for _, field := range []string{"address", "mac", "username", "password"} {
					if !strings.Contains(err.Error(), field) {
						t.Errorf("the refusal %q does not name %s", err, field)
					}
				}
			}

			// An operator's credentials win: no more enrolment.
			if _, err := e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: "10.9.9.9",
				Protocol: bmcv1.Protocol_PROTOCOL_IPMI, Username: "admin", Password: testBMCPassword})); err != nil {
				t.Fatal(err)
			}
			rep3, err := report(t, e, rep.GetAgentToken(), id, fullInventory("5b2c6d1e-0000-4000-8000-0000000000e1"))
			if err != nil {
				t.Fatal(err)
			}
			if rep3.GetEnrollBmc() {
				t.Error("a machine with an operator's credentials is asked to enrol its BMC")
			}
			_, err = enrol(agent, id, testEnrolPassword)
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "operator") {
				t.Errorf("enrolment over an operator's credentials: %v, want failed_precondition naming the operator", err)
			}
			g, err := e.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: id}))
			if err != nil {
				t.Fatal(err)
			}
			if bm := g.Msg.GetBmc(); bm.GetAddress() != "10.9.9.9" || bm.GetUsername() != "admin" ||
				bm.GetCredentialSource() != bmcv1.CredentialSource_CREDENTIAL_SOURCE_OPERATOR {
				t.Errorf("BMC after a refused enrolment = %v, want the operator's", bm)
			}

			// A token of an earlier boot does not enrol: the other machine,
			// still in discovery, booted again since.
			if again := bootMachine(t, e, "52:54:00:e0:00:02"); again.nonce == "" {
				t.Fatal("the second boot of a discovered machine started no boot")
			}
			if _, err := enrol(agentClients(t, e, other.config.GetAgentToken()), other.config.GetMachineId(), testEnrolPassword); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("enrolment with a token of an earlier boot: %v, want unauthenticated", err)
			}

			// The passwords are nowhere in plain text.
			texts := []string{got.String(), g.Msg.String(), logs.String()}
			for _, r := range auditRecords(t, e, "/carbide.agent.v1.AgentService/EnrollBMC") {
				texts = append(texts, fmt.Sprintf("%+v", r))
			}
			if n := len(auditRecords(t, e, "/carbide.agent.v1.AgentService/EnrollBMC")); n < 3 {
				t.Errorf("%d audit records of EnrollBMC, want every call's", n)
			}
			chs, err := e.Store.Client.Change.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chs {
				texts = append(texts, string(c.Payload))
			}
			rows, err := e.Store.Client.BMC.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				texts = append(texts, fmt.Sprintf("%+v", r))
				if r.PasswordSealed == nil || r.PasswordKeyID == "" {
					t.Errorf("stored password is not sealed (key id %q)", r.PasswordKeyID)
				} else {
					texts = append(texts, string(*r.PasswordSealed))
				}
			}
			for i, s := range texts {
				for _, pw := range []string{testEnrolPassword, testEnrolPassword2} {
					if strings.Contains(s, pw) {
						t.Errorf("text %d holds an enrolled password in plain text", i)
					}
				}
			}
			if !bytes.Contains([]byte(logs.String()), []byte("BMC enrolled in band")) {
				t.Error("the API did not log the enrolment")
			}
		})
	}
}

// TestEnrollBMCWatch: an enrolment reaches Watch as a BMC change whose
// credentials are the agent's.
func TestEnrollBMCWatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		testsecret.Register(t, testEnrolPassword)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dhcpSegments(t, e)
		b := bootMachine(t, e, "52:54:00:e0:00:03")
		stream, err := e.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{watchv1.ResourceKind_RESOURCE_KIND_BMC}}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Receive() || stream.Msg().GetType() != watchv1.EventType_EVENT_TYPE_SYNCED {
			t.Fatalf("first event %v, %v: want the end of an empty snapshot", stream.Msg(), stream.Err())
		}
		if _, err := agentClients(t, e, b.config.GetAgentToken()).Agent.EnrollBMC(ctx, connect.NewRequest(&agentv1.EnrollBMCRequest{
			MachineId: b.config.GetMachineId(), Address: "198.18.0.24", Username: "carbide", Password: testEnrolPassword})); err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() {
			t.Fatalf("no event after the enrolment: %v", stream.Err())
		}
		ev := stream.Msg()
		if ev.GetType() != watchv1.EventType_EVENT_TYPE_CREATED || ev.GetBmc().GetMachineId() != b.config.GetMachineId() ||
			ev.GetBmc().GetCredentialSource() != bmcv1.CredentialSource_CREDENTIAL_SOURCE_AGENT || !ev.GetBmc().GetHasPassword() {
			t.Errorf("event %v, want the enrolled BMC created", ev)
		}
	})
}
