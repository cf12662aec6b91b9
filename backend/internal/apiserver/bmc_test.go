package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

const testBMCPassword = "Sup3r-Secret-BMC-pw"

// daemonKey is a BMC daemon's key pair, to which the API seals passwords.
type daemonKey struct{ priv *ecdh.PrivateKey }

func newDaemonKey(t testing.TB) daemonKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return daemonKey{k}
}

func (k daemonKey) public() []byte { return k.priv.PublicKey().Bytes() }

// open opens a password the API sealed to k for machine id, as carbide-bmc
// does.
func (k daemonKey) open(t testing.TB, machineID string, sealed []byte) string {
	t.Helper()
	priv, err := hpke.NewDHKEMPrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(priv, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("carbide bmc password "+machineID), sealed)
	if err != nil {
		t.Fatalf("open sealed password: %v", err)
	}
	return string(pt)
}

func bmcMachine(t testing.TB, e *env, i int) string {
	t.Helper()
	m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(9000 + i)}})
	if _, err := e.BMC.SetBMC(context.Background(), connect.NewRequest(&bmcv1.SetBMCRequest{
		MachineId: m.GetId(), Address: fmt.Sprintf("10.9.0.%d", i+1), Protocol: bmcv1.Protocol_PROTOCOL_IPMI,
		Username: "admin", Password: testBMCPassword,
	})); err != nil {
		t.Fatalf("SetBMC: %v", err)
	}
	return m.GetId()
}

func requestOp(t testing.TB, c clients, machineID string, typ bmcv1.OperationType, boot *bmcv1.Boot) *bmcv1.Operation {
	t.Helper()
	resp, err := c.BMC.RequestOperation(context.Background(), connect.NewRequest(&bmcv1.RequestOperationRequest{
		MachineId: machineID, Type: typ, Boot: boot}))
	if err != nil {
		t.Fatalf("RequestOperation: %v", err)
	}
	return resp.Msg.GetOperation()
}

func claim(t testing.TB, c clients, worker string, key daemonKey, max int32, poll uint32) []*bmcv1.Work {
	t.Helper()
	resp, err := c.BMC.Claim(context.Background(), connect.NewRequest(&bmcv1.ClaimRequest{
		Worker: worker, PublicKey: key.public(), MaxMachines: max, PollIntervalSeconds: poll}))
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return resp.Msg.GetWork()
}

func bmcReport(c clients, worker string, w *bmcv1.Work, result bmcv1.ReportRequest_Result, msg string, power bmcv1.PowerState) (*bmcv1.Operation, error) {
	req := &bmcv1.ReportRequest{Worker: worker, Lease: &bmcv1.LeaseRef{MachineId: w.GetMachineId(), Lease: w.GetLease()},
		PowerState: power, Error: msg}
	if w.GetOperation() != nil {
		req.OperationId = w.GetOperation().GetId()
		req.Result = result
	}
	resp, err := c.BMC.Report(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetOperation(), nil
}

// TestBMCPasswordIsWriteOnly: no response, log line, audit record or
// column holds the password in plain text; the daemon that claims the
// machine opens it.
func TestBMCPasswordIsWriteOnly(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			e := newEnvWith(t, kind, "connect", envOptions{logs: &logs})
			ctx := context.Background()
			m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
			set, err := e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
				MachineId: m.GetId(), Address: "bmc-1.example.net", Port: 623, Protocol: bmcv1.Protocol_PROTOCOL_IPMI,
				Username: "admin", Password: testBMCPassword}))
			if err != nil {
				t.Fatal(err)
			}
			if !set.Msg.GetBmc().GetHasPassword() {
				t.Error("has_password is false after a password was set")
			}
			got, err := e.BMC.GetBMC(ctx, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: m.GetId()}))
			if err != nil {
				t.Fatal(err)
			}
			list, err := e.BMC.ListBMCs(ctx, connect.NewRequest(&bmcv1.ListBMCsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			// Changing the address keeps the stored password.
			if _, err := e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
				MachineId: m.GetId(), Address: "10.0.0.9", Protocol: bmcv1.Protocol_PROTOCOL_REDFISH, Username: "root"})); err != nil {
				t.Fatal(err)
			}
			key := newDaemonKey(t)
			work := claim(t, e.as(t, "bmc"), "w1", key, 10, 60)
			if len(work) != 1 {
				t.Fatalf("claim: %d machines, want 1", len(work))
			}
			if pw := key.open(t, m.GetId(), work[0].GetTarget().GetSealedPassword()); pw != testBMCPassword {
				t.Errorf("opened password %q, want the one set", pw)
			}
			if tg := work[0].GetTarget(); tg.GetAddress() != "10.0.0.9" || tg.GetUsername() != "root" || tg.GetProtocol() != bmcv1.Protocol_PROTOCOL_REDFISH {
				t.Errorf("target %v, want the BMC as last set", tg)
			}
			// Another key cannot open what was sealed to this one.
			other := newDaemonKey(t)
			otherPriv, _ := hpke.NewDHKEMPrivateKey(other.priv)
			if _, err := hpke.Open(otherPriv, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("carbide bmc password "+m.GetId()), work[0].GetTarget().GetSealedPassword()); err == nil {
				t.Error("another daemon's key opened the sealed password")
			}

			texts := []string{got.Msg.String(), list.Msg.String(), set.Msg.String(), logs.String()}
			for _, r := range auditRecords(t, e, "/carbide.bmc.v1.BMCService/SetBMC") {
				texts = append(texts, fmt.Sprintf("%+v", r))
			}
			for i, s := range texts {
				if strings.Contains(s, testBMCPassword) {
					t.Errorf("text %d holds the password in plain text", i)
				}
			}
			rows, err := e.Store.Client.BMC.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				if r.PasswordSealed == nil || bytes.Contains(*r.PasswordSealed, []byte(testBMCPassword)) || r.PasswordKeyID == "" {
					t.Errorf("stored password is not sealed (key id %q)", r.PasswordKeyID)
				}
			}
			if len(auditRecords(t, e, "/carbide.bmc.v1.BMCService/SetBMC")) != 2 {
				t.Error("SetBMC calls are not audited")
			}
		})
	}
}

// TestBMCOperationsRunInOrderUnderLeases: a machine's operations go one at
// a time, oldest first, to the daemon holding its lease; a second daemon
// gets nothing for that machine meanwhile; the report records the result
// and the power state.
func TestBMCOperationsRunInOrderUnderLeases(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		id := bmcMachine(t, e, 0)
		ops := e.as(t, "operator")
		boot := requestOp(t, ops, id, bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE,
			&bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE, Efi: true})
		on := requestOp(t, ops, id, bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
		if boot.GetState() != bmcv1.OperationState_OPERATION_STATE_PENDING || boot.GetRequester() == "" {
			t.Fatalf("new operation %v, want pending with its requester", boot)
		}
		daemon := e.as(t, "bmc")
		k1, k2 := newDaemonKey(t), newDaemonKey(t)
		w := claim(t, daemon, "w1", k1, 10, 0)
		if len(w) != 1 || w[0].GetOperation().GetId() != boot.GetId() {
			t.Fatalf("first claim: %v, want the boot device operation", w)
		}
		if op := w[0].GetOperation(); op.GetState() != bmcv1.OperationState_OPERATION_STATE_RUNNING || op.GetAttempts() != 1 || op.GetWorker() != "w1" {
			t.Errorf("claimed operation %v, want running, attempt 1, worker w1", op)
		}
		if w2 := claim(t, daemon, "w2", k2, 10, 60); len(w2) != 0 {
			t.Fatalf("second daemon claimed %v while w1 holds the machine", w2)
		}
		op, err := bmcReport(daemon, "w1", w[0], bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_OFF)
		if err != nil {
			t.Fatal(err)
		}
		if op.GetState() != bmcv1.OperationState_OPERATION_STATE_SUCCEEDED || op.GetEndTime() == nil {
			t.Errorf("reported operation %v, want succeeded with an end time", op)
		}
		w = claim(t, daemon, "w2", k2, 10, 0)
		if len(w) != 1 || w[0].GetOperation().GetId() != on.GetId() {
			t.Fatalf("claim after the report: %v, want the power-on", w)
		}
		if _, err := bmcReport(daemon, "w2", w[0], bmcv1.ReportRequest_RESULT_FAILED, "BMC refused", bmcv1.PowerState_POWER_STATE_OFF); err != nil {
			t.Fatal(err)
		}
		got, err := e.BMC.GetOperation(context.Background(), connect.NewRequest(&bmcv1.GetOperationRequest{Id: on.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if g := got.Msg.GetOperation(); g.GetState() != bmcv1.OperationState_OPERATION_STATE_FAILED || g.GetError() != "BMC refused" {
			t.Errorf("failed operation reads %v", g)
		}
		b, err := e.BMC.GetBMC(context.Background(), connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if b.Msg.GetBmc().GetPowerState() != bmcv1.PowerState_POWER_STATE_OFF || b.Msg.GetBmc().GetPowerStateTime() == nil {
			t.Errorf("BMC after reports: %v, want power off with the time seen", b.Msg.GetBmc())
		}
		// Nothing waits: a claim with polling takes the machine for a
		// poll only once its last sighting is older than the interval.
		if w := claim(t, daemon, "w1", k1, 10, 3600); len(w) != 0 {
			t.Errorf("claim right after a report: %v, want nothing due", w)
		}
		list, err := e.BMC.ListOperations(context.Background(), connect.NewRequest(&bmcv1.ListOperationsRequest{
			MachineId: id, PageSize: 1}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Msg.GetOperations()) != 1 || list.Msg.GetOperations()[0].GetId() != on.GetId() || list.Msg.GetNextPageToken() == "" {
			t.Fatalf("first page %v, want the newest operation and a next page", list.Msg)
		}
		next, err := e.BMC.ListOperations(context.Background(), connect.NewRequest(&bmcv1.ListOperationsRequest{
			MachineId: id, PageSize: 1, PageToken: list.Msg.GetNextPageToken()}))
		if err != nil {
			t.Fatal(err)
		}
		if len(next.Msg.GetOperations()) != 1 || next.Msg.GetOperations()[0].GetId() != boot.GetId() {
			t.Errorf("second page %v, want the boot operation", next.Msg)
		}
		failed, err := e.BMC.ListOperations(context.Background(), connect.NewRequest(&bmcv1.ListOperationsRequest{
			States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_FAILED}}))
		if err != nil {
			t.Fatal(err)
		}
		if len(failed.Msg.GetOperations()) != 1 {
			t.Errorf("failed operations: %d, want 1", len(failed.Msg.GetOperations()))
		}
	})
}

// TestBMCLeaseTakeover: a daemon that stops renewing loses the machine
// when its lease expires; another daemon takes the running operation
// over, and the first one's late report is refused.
func TestBMCLeaseTakeover(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, kind, "connect", envOptions{configure: func(c *Config) { c.BMCLease = time.Second }})
			id := bmcMachine(t, e, 0)
			op := requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_CYCLE, nil)
			daemon := e.as(t, "bmc")
			k := newDaemonKey(t)
			w1 := claim(t, daemon, "w1", k, 1, 0)
			if len(w1) != 1 {
				t.Fatalf("claim: %v", w1)
			}
			renew := func(worker string, w *bmcv1.Work) []*bmcv1.LeaseRef {
				resp, err := daemon.BMC.Renew(context.Background(), connect.NewRequest(&bmcv1.RenewRequest{
					Worker: worker, Leases: []*bmcv1.LeaseRef{{MachineId: w.GetMachineId(), Lease: w.GetLease()}}}))
				if err != nil {
					t.Fatal(err)
				}
				return resp.Msg.GetLost()
			}
			if lost := renew("w1", w1[0]); len(lost) != 0 {
				t.Fatalf("renewing a held lease lost %v", lost)
			}
			if w := claim(t, daemon, "w2", k, 1, 0); len(w) != 0 {
				t.Fatalf("w2 claimed %v while w1's renewed lease runs", w)
			}
			time.Sleep(1500 * time.Millisecond) // w1 dies: no renewal
			w2 := claim(t, daemon, "w2", k, 1, 0)
			if len(w2) != 1 || w2[0].GetOperation().GetId() != op.GetId() {
				t.Fatalf("w2 after the expiry claimed %v, want the running operation", w2)
			}
			if w2[0].GetLease() <= w1[0].GetLease() {
				t.Errorf("takeover token %d, want more than %d", w2[0].GetLease(), w1[0].GetLease())
			}
			if a := w2[0].GetOperation().GetAttempts(); a != 2 {
				t.Errorf("attempts after the takeover %d, want 2", a)
			}
			if lost := renew("w1", w1[0]); len(lost) != 1 {
				t.Errorf("w1 renewing after the takeover: lost %v, want its lease", lost)
			}
			_, err := bmcReport(daemon, "w1", w1[0], bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_ON)
			wantError(t, err, connect.CodeFailedPrecondition, "")
			if _, err := bmcReport(daemon, "w2", w2[0], bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_ON); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBMCClaimsNeverShareAMachine: daemons claiming at once over the same
// machines never hold one machine together.
func TestBMCClaimsNeverShareAMachine(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		const machines = 10
		for i := range machines {
			id := bmcMachine(t, e, i)
			requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
		}
		daemon := e.as(t, "bmc")
		k := newDaemonKey(t)
		var mu sync.Mutex
		holders := map[string]string{}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for d := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				worker := fmt.Sprintf("w%d", d)
				resp, err := daemon.BMC.Claim(context.Background(), connect.NewRequest(&bmcv1.ClaimRequest{
					Worker: worker, PublicKey: k.public(), MaxMachines: 4}))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, w := range resp.Msg.GetWork() {
					if h, ok := holders[w.GetMachineId()]; ok {
						errs <- fmt.Errorf("machine %s granted to %s and %s", w.GetMachineId(), h, worker)
					}
					holders[w.GetMachineId()] = worker
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if len(holders) != machines {
			t.Errorf("%d machines claimed by 4 daemons of 4 each, want %d", len(holders), machines)
		}
	})
}

// TestBMCRequestsAndCancels: idempotent requests, cancelling, and the
// errors that say what to fix.
func TestBMCRequestsAndCancels(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := bmcMachine(t, e, 0)
		req := &bmcv1.RequestOperationRequest{MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, RequestId: "off-1"}
		a, err := e.BMC.RequestOperation(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.BMC.RequestOperation(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if a.Msg.GetOperation().GetId() != b.Msg.GetOperation().GetId() {
			t.Error("a repeated request_id queued a second operation")
		}
		_, err = e.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON, RequestId: "off-1"}))
		wantError(t, err, connect.CodeAlreadyExists, "request_id")

		c, err := e.BMC.CancelOperation(ctx, connect.NewRequest(&bmcv1.CancelOperationRequest{Id: a.Msg.GetOperation().GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if c.Msg.GetOperation().GetState() != bmcv1.OperationState_OPERATION_STATE_CANCELLED {
			t.Errorf("cancelled operation is %v", c.Msg.GetOperation().GetState())
		}
		if w := claim(t, e.as(t, "bmc"), "w1", newDaemonKey(t), 10, 0); len(w) != 0 {
			t.Errorf("claimed %v: a cancelled operation must not run", w)
		}
		on := requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
		claim(t, e.as(t, "bmc"), "w1", newDaemonKey(t), 10, 0)
		_, err = e.BMC.CancelOperation(ctx, connect.NewRequest(&bmcv1.CancelOperationRequest{Id: on.GetId()}))
		wantError(t, err, connect.CodeFailedPrecondition, "")

		bare := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(77)}})
		_, err = e.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: bare.GetId(), Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON}))
		wantError(t, err, connect.CodeFailedPrecondition, "")
		_, err = e.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE}))
		wantError(t, err, connect.CodeInvalidArgument, "")
		_, err = e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
			MachineId: "6b1d0e3c-2b7a-4d38-9a51-0c1b2f7e9d11", Address: "10.0.0.1", Username: "admin"}))
		wantError(t, err, connect.CodeNotFound, "machine_id")
		_, err = e.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
			MachineId: id, Address: "not an address!", Username: "admin"}))
		wantError(t, err, connect.CodeInvalidArgument, "address")

		// Who may do what.
		_, err = e.as(t, "operator").BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{
			MachineId: id, Address: "10.0.0.1", Username: "admin"}))
		wantError(t, err, connect.CodePermissionDenied, "")
		_, err = e.as(t, "viewer").BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON}))
		wantError(t, err, connect.CodePermissionDenied, "")
		_, err = e.as(t, "bmc").BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON}))
		wantError(t, err, connect.CodePermissionDenied, "")
		_, err = e.as(t, "operator").BMC.Claim(ctx, connect.NewRequest(&bmcv1.ClaimRequest{
			Worker: "x", PublicKey: newDaemonKey(t).public(), MaxMachines: 1}))
		wantError(t, err, connect.CodePermissionDenied, "")
	})
}

// TestBMCWatch: operations and power-state changes reach Watch.
func TestBMCWatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := e.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{
			watchv1.ResourceKind_RESOURCE_KIND_BMC, watchv1.ResourceKind_RESOURCE_KIND_BMC_OPERATION}}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Receive() || stream.Msg().GetType() != watchv1.EventType_EVENT_TYPE_SYNCED {
			t.Fatalf("first event %v, %v: want the end of an empty snapshot", stream.Msg(), stream.Err())
		}
		id := bmcMachine(t, e, 0)
		op := requestOp(t, e.clients, id, bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil)
		daemon := e.as(t, "bmc")
		w := claim(t, daemon, "w1", newDaemonKey(t), 1, 0)
		if _, err := bmcReport(daemon, "w1", w[0], bmcv1.ReportRequest_RESULT_SUCCEEDED, "", bmcv1.PowerState_POWER_STATE_ON); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"CREATED BMC " + id,
			"CREATED BMC_OPERATION PENDING",
			"UPDATED BMC_OPERATION RUNNING",
			"UPDATED BMC_OPERATION SUCCEEDED",
			"UPDATED BMC ON",
		}
		var got []string
		for len(got) < len(want) && stream.Receive() {
			ev := stream.Msg()
			typ := strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_")
			kind := strings.TrimPrefix(ev.GetKind().String(), "RESOURCE_KIND_")
			switch {
			case ev.GetOperation() != nil:
				if ev.GetOperation().GetId() != op.GetId() {
					t.Errorf("event of operation %s, want %s", ev.GetOperation().GetId(), op.GetId())
				}
				got = append(got, typ+" "+kind+" "+strings.TrimPrefix(ev.GetOperation().GetState().String(), "OPERATION_STATE_"))
			case ev.GetBmc() != nil && typ == "CREATED":
				got = append(got, typ+" "+kind+" "+ev.GetBmc().GetMachineId())
				if ev.GetBmc().GetHasPassword() != true {
					t.Error("BMC event says no password is stored")
				}
			case ev.GetBmc() != nil:
				got = append(got, typ+" "+kind+" "+strings.TrimPrefix(ev.GetBmc().GetPowerState().String(), "POWER_STATE_"))
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// TestBMCPasswordsSurviveKeyRotation: after a new key is put first in the
// keyring, the start-up reseal moves every stored password under it (the
// BMCs' own and the segments' defaults), and the passwords still open,
// also once the old key is gone.
func TestBMCPasswordsSurviveKeyRotation(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		ids := []string{bmcMachine(t, e, 0), bmcMachine(t, e, 1)}
		rack := createSegment(t, e, &networkv1.Segment{Name: "rack", Prefix: "10.20.0.0/24"})
		setSegmentCredentials(t, e.clients, rack.GetId(), "rackadmin", testRackPassword)
		byDefault := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(7100)}}).GetId()
		setBMC(t, e, byDefault, "10.20.0.7", "", "")
		ids = append(ids, byDefault)
		devKey, err := os.ReadFile(filepath.Join(e.PKI, secrets.DevKeyringFile))
		if err != nil {
			t.Fatal(err)
		}
		line, err := secrets.GenerateKeyLine("rotated")
		if err != nil {
			t.Fatal(err)
		}
		testsecret.Register(t, strings.Fields(line)[1])
		rotated, err := secrets.ParseKeyring("test", []byte(line+"\n"+string(devKey)))
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.NewTextHandler(testOutput(t), nil))
		resealed, left, err := bmc.NewService(e.Store, rotated, 0, logger).Reseal(context.Background())
		if err != nil || resealed != 3 || left != 0 {
			t.Fatalf("reseal: %d resealed, %d left, %v; want 3, 0", resealed, left, err)
		}
		// Only the new key from now on: every password still opens.
		onlyNew, err := secrets.ParseKeyring("test", []byte(line+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		svc := bmc.NewService(e.Store, onlyNew, 0, logger)
		key := newDaemonKey(t)
		resp, err := svc.Claim(context.Background(), connect.NewRequest(&bmcv1.ClaimRequest{Worker: "w1", PublicKey: key.public(), MaxMachines: 10, PollIntervalSeconds: 1}))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Msg.GetWork()) != len(ids) {
			t.Fatalf("claimed %d machines, want %d", len(resp.Msg.GetWork()), len(ids))
		}
		for _, w := range resp.Msg.GetWork() {
			want := testBMCPassword
			if w.GetMachineId() == byDefault {
				want = testRackPassword
			}
			if pw := key.open(t, w.GetMachineId(), w.GetTarget().GetSealedPassword()); pw != want {
				t.Errorf("machine %s: password %q after the rotation", w.GetMachineId(), pw)
			}
		}
	})
}
