package apiserver

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/ent/bmcoperation"
	"github.com/carbide-dev/carbide/ent/machine"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
)

// tick runs one round of the lifecycle controller.
func tick(t *testing.T, e *env) {
	t.Helper()
	if err := e.Controller.Tick(t.Context()); err != nil {
		t.Fatalf("controller tick: %v", err)
	}
}

// wantStep fails t unless machine id is in state st at step step ("" for
// none).
func wantStep(t *testing.T, e *env, id string, st machinev1.MachineState, step string) *machinev1.Machine {
	t.Helper()
	m := getMachine(t, e, id)
	if m.GetState() != st || m.GetTask().GetStep() != step {
		t.Fatalf("machine is %s at step %q (%s), want %s at step %q", m.GetState(), m.GetTask().GetStep(), m.GetTask().GetMessage(), st, step)
	}
	return m
}

func getInstance(t *testing.T, e *env, id string) *instancev1.Instance {
	t.Helper()
	resp, err := e.Instances.GetInstance(t.Context(), connect.NewRequest(&instancev1.GetInstanceRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetInstance()
}

// readyBooted boots a new machine with mac through discovery to Ready.
func readyBooted(t *testing.T, e *env, mac, hwUUID string) string {
	t.Helper()
	b := bootMachine(t, e, mac)
	rep, err := report(t, e, b.config.GetAgentToken(), b.config.GetMachineId(), fullInventory(hwUUID))
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetMachine().GetState() != machinev1.MachineState_MACHINE_STATE_READY {
		t.Fatalf("the machine is %s after its report, want READY", rep.GetMachine().GetState())
	}
	return b.config.GetMachineId()
}

// agentBoot boots machine mac's agent again and has it report: it
// returns the agent's clients and the instruction the report got.
func agentBoot(t *testing.T, e *env, mac, hwUUID string) (clients, *agentv1.Instruction) {
	t.Helper()
	b := bootMachine(t, e, mac)
	if b.config.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY || b.config.GetAgentToken() == "" {
		t.Fatalf("machine boots %s (token withheld: %q), want the discovery agent", b.config.GetAction(), b.config.GetTokenWithheldReason())
	}
	rep, err := report(t, e, b.config.GetAgentToken(), b.config.GetMachineId(), fullInventory(hwUUID))
	if err != nil {
		t.Fatal(err)
	}
	return agentClients(t, e, b.config.GetAgentToken()), rep.GetInstruction()
}

func complete(t *testing.T, c clients, id, step, failure string) *agentv1.Instruction {
	t.Helper()
	resp, err := c.Agent.CompleteStep(t.Context(), connect.NewRequest(&agentv1.CompleteStepRequest{
		MachineId: id, Step: step, Error: failure, Bytes: 2 << 30, Duration: durationpb.New(20 * time.Second)}))
	if err != nil {
		t.Fatalf("CompleteStep %s: %v", step, err)
	}
	return resp.Msg.GetInstruction()
}

// TestProvisionAndClean takes a machine without a BMC through a whole
// instance, as its agent, carbide-pxe and the installed system call the
// API: installed, booted, phoned home, released, wiped, Ready.
func TestProvisionAndClean(t *testing.T) {
	t.Parallel()
	const (
		mac    = "52:54:00:c0:00:01"
		hwUUID = "5b2c6d1e-0000-4000-8000-0000000000c1"
	)
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		id := readyBooted(t, e, mac, hwUUID)
		img := createImage(t, e, diskImage("debian", "12"))
		inst := createInstance(t, e, onMachine("tenant-1", img.GetId(), id))
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepPowerOn)

		// No BMC: the controller asks for a hand, once.
		tick(t, e)
		m := wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepBootAgent)
		if !strings.Contains(m.GetTask().GetMessage(), "by hand") {
			t.Errorf("the boot_agent step of a machine without a BMC says %q, want it to ask for a power-on by hand", m.GetTask().GetMessage())
		}
		tick(t, e)
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepBootAgent)

		// The agent boots and is told to install.
		agent, in := agentBoot(t, e, mac, hwUUID)
		if in.GetAction() != agentv1.Instruction_ACTION_INSTALL || in.GetStep() != lifecycle.StepWriteImage ||
			in.GetInstall().GetDisk() != "vda" || in.GetInstall().GetDiskSerial() != "disk-1" ||
			in.GetInstall().GetInstanceId() != inst.GetId() ||
			in.GetInstall().GetImage().GetFile().GetUrl() != img.GetDisk().GetFile().GetUrl() {
			t.Fatalf("the agent of a provisioning machine got %v, want an install of the image on vda", in)
		}
		got, err := agent.Agent.GetInstruction(t.Context(), connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: id}))
		if err != nil || got.Msg.GetInstruction().GetAction() != agentv1.Instruction_ACTION_INSTALL {
			t.Fatalf("GetInstruction during the install = %v, %v; want the same install", got, err)
		}

		// Progress of another step is refused; of this one, seen on the
		// instance.
		_, err = agent.Agent.ReportProgress(t.Context(), connect.NewRequest(&agentv1.ReportProgressRequest{
			MachineId: id, Step: lifecycle.StepWipe, Done: 1, Total: 2}))
		wantError(t, err, connect.CodeFailedPrecondition, "not at step wipe")
		if _, err := agent.Agent.ReportProgress(t.Context(), connect.NewRequest(&agentv1.ReportProgressRequest{
			MachineId: id, Step: lifecycle.StepWriteImage, Done: 1 << 30, Total: 2 << 30, Message: "writing"})); err != nil {
			t.Fatal(err)
		}
		if task := getInstance(t, e, inst.GetId()).GetTask(); task.GetStep() != lifecycle.StepWriteImage || task.GetDone() != 1<<30 || task.GetTotal() != 2<<30 {
			t.Errorf("the instance's task = %v, want write_image at 1 of 2 GiB", task)
		}

		// Written: reboot into it, which boots the local disk.
		if in := complete(t, agent, id, lifecycle.StepWriteImage, ""); in.GetAction() != agentv1.Instruction_ACTION_REBOOT {
			t.Fatalf("after the install the agent got %v, want a reboot", in)
		}
		if in := complete(t, agent, id, lifecycle.StepWriteImage, ""); in.GetAction() != agentv1.Instruction_ACTION_REBOOT {
			t.Fatalf("a repeated CompleteStep got %v, want the same reboot", in)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepBootOS)
		lease := leaseOf(t, e, mac)
		pxe := e.as(t, "pxe")
		cfg, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: lease.Address, CloudInit: true}))
		if err != nil {
			t.Fatal(err)
		}
		ci := cfg.Msg.GetCloudInit()
		if cfg.Msg.GetAction() != bootv1.BootAction_BOOT_ACTION_LOCAL_DISK || ci.GetInstanceId() != inst.GetId() || ci.GetHostname() != "tenant-1" ||
			ci.GetAddress() != lease.Address || ci.GetPrefixLength() != 24 || ci.GetGateway() != "10.1.0.1" || !ci.GetPhoneHome() || ci.GetMtu() != 9000 {
			t.Fatalf("the installed machine's boot config = %v, want the local disk and its instance's cloud-init data", cfg.Msg)
		}
		other, err := pxe.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: "10.1.0.250", CloudInit: true}))
		if err != nil || other.Msg.GetCloudInit() != nil {
			t.Fatalf("another address got cloud-init data %v (%v), want none", other.Msg.GetCloudInit(), err)
		}
		_, err = e.Boot.GetBootConfig(t.Context(), connect.NewRequest(&bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: lease.Address, CloudInit: true}))
		wantError(t, err, connect.CodePermissionDenied, "cloud-init")

		// The installed system phones home from its address only.
		phone := func(addr string) error {
			_, err := pxe.Boot.PhoneHome(t.Context(), connect.NewRequest(&bootv1.PhoneHomeRequest{Mac: mac, ClientAddress: addr, InstanceId: inst.GetId()}))
			return err
		}
		wantError(t, phone("10.1.0.250"), connect.CodeFailedPrecondition, "does not hold a lease")
		if err := phone(lease.Address); err != nil {
			t.Fatalf("PhoneHome: %v", err)
		}
		if err := phone(lease.Address); err != nil {
			t.Fatalf("a repeated PhoneHome: %v", err)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_ASSIGNED, "")
		running := getInstance(t, e, inst.GetId())
		if running.GetState() != instancev1.InstanceState_INSTANCE_STATE_RUNNING || running.GetRunningTime() == nil || running.GetTask() != nil {
			t.Fatalf("instance after phone-home = %v, want Running", running)
		}

		// Released: cleaned through the agent, then Ready.
		if _, err := e.Instances.DeleteInstance(t.Context(), connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: inst.GetId()})); err != nil {
			t.Fatal(err)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_CLEANING, lifecycle.StepPowerOn)
		tick(t, e)
		agent, in = agentBoot(t, e, mac, hwUUID)
		if in.GetAction() != agentv1.Instruction_ACTION_WIPE || in.GetWipe().GetMode() != instancev1.WipeMode_WIPE_MODE_QUICK ||
			len(in.GetWipe().GetDisks()) != 1 || in.GetWipe().GetDisks()[0] != "vda" {
			t.Fatalf("the agent of a cleaning machine got %v, want a quick wipe of vda", in)
		}
		if in := complete(t, agent, id, lifecycle.StepWipe, ""); in.GetAction() != agentv1.Instruction_ACTION_POWER_OFF {
			t.Fatalf("after the wipe the agent got %v, want a power-off", in)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_READY, "")
		if got := getInstance(t, e, inst.GetId()); got.GetState() != releasedInst {
			t.Errorf("instance after the wipe is %s, want RELEASED", got.GetState())
		}
		if l := leaseOf(t, e, mac); l.ExpireTime.After(time.Now().Add(24 * time.Hour)) {
			t.Errorf("the released instance's lease still expires at %v", l.ExpireTime)
		}
		hist := transitionsOf(t, e, id, 0)
		var states []string
		for _, h := range hist {
			states = append(states, h.GetToState().String())
		}
		want := "MACHINE_STATE_PROVISIONING MACHINE_STATE_ASSIGNED MACHINE_STATE_CLEANING MACHINE_STATE_READY"
		if !strings.HasSuffix(strings.Join(states, " "), want) {
			t.Errorf("history %v, want it to end with %s", states, want)
		}
	})
}

// TestProvisionFailures: a BMC powers the machine through three queued
// operations; a wrong checksum fails the instance and cleans the machine;
// an agent that never reports times the step out into Failed, and a retry
// brings the machine back to Ready through cleaning.
func TestProvisionFailures(t *testing.T) {
	t.Parallel()
	const (
		mac    = "52:54:00:c0:00:02"
		hwUUID = "5b2c6d1e-0000-4000-8000-0000000000c2"
	)
	forEachStore(t, func(t *testing.T, e *env) {
		dhcpSegments(t, e)
		id := readyBooted(t, e, mac, hwUUID)
		if _, err := e.BMC.SetBMC(t.Context(), connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: id, Address: "10.1.0.9",
			Protocol: bmcv1.Protocol_PROTOCOL_IPMI, Username: "admin", Password: "bmc-pw-c2"})); err != nil {
			t.Fatal(err)
		}
		img := createImage(t, e, diskImage("debian", "12"))

		// The BMC boots it: off, network boot, on — in that order, once.
		bad := createInstance(t, e, onMachine("bad-sum", img.GetId(), id))
		tick(t, e)
		tick(t, e)
		ops, err := e.Store.Client.BMCOperation.Query().Where(bmcoperation.MachineID(uuid.MustParse(id))).
			Order(bmcoperation.ByCreateTime(), bmcoperation.ByID()).All(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, op := range ops {
			kinds = append(kinds, string(op.Type)+":"+string(op.BootDevice))
		}
		if strings.Join(kinds, " ") != "power_off:none set_boot_device:pxe power_on:none" {
			t.Errorf("the controller queued %v, want power_off, set_boot_device pxe, power_on", kinds)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepBootAgent)

		// A wrong checksum: the instance fails, the machine is wiped.
		agent, in := agentBoot(t, e, mac, hwUUID)
		if in.GetAction() != agentv1.Instruction_ACTION_INSTALL {
			t.Fatalf("got %v, want an install", in)
		}
		const sumErr = "the image's SHA-256 is 00ff..., not abab... as the image says"
		if in := complete(t, agent, id, lifecycle.StepWriteImage, sumErr); in.GetAction() != agentv1.Instruction_ACTION_WIPE {
			t.Fatalf("after a failed install the agent got %v, want a wipe", in)
		}
		if got := getInstance(t, e, bad.GetId()); got.GetState() != instancev1.InstanceState_INSTANCE_STATE_FAILED ||
			!strings.Contains(got.GetFailureReason(), sumErr) {
			t.Errorf("instance = %s (%q), want FAILED with the checksum error", got.GetState(), got.GetFailureReason())
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_CLEANING, lifecycle.StepWipe)
		complete(t, agent, id, lifecycle.StepWipe, "")
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_READY, "")

		// An agent that never reports: the step times out into Failed.
		silent := createInstance(t, e, onMachine("silent", img.GetId(), id))
		tick(t, e)
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_PROVISIONING, lifecycle.StepBootAgent)
		if err := e.Store.Client.Machine.UpdateOneID(uuid.MustParse(id)).SetTaskDeadline(time.Now().Add(-time.Second)).Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
		tick(t, e)
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_FAILED, "")
		hist := transitionsOf(t, e, id, 0)
		if last := hist[len(hist)-1].GetReason(); !strings.Contains(last, "step boot_agent did not finish") {
			t.Errorf("the failure's reason is %q, want the step that timed out", last)
		}
		if got := getInstance(t, e, silent.GetId()); got.GetState() != instancev1.InstanceState_INSTANCE_STATE_FAILED ||
			!strings.Contains(got.GetFailureReason(), "boot_agent") {
			t.Errorf("instance = %s (%q), want FAILED naming the step", got.GetState(), got.GetFailureReason())
		}

		// Retried, it is cleaned before it is Ready again.
		if _, err := e.Machines.RetryMachine(t.Context(), connect.NewRequest(&machinev1.RetryMachineRequest{Id: id, Reason: "the BMC cable is back"})); err != nil {
			t.Fatal(err)
		}
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_CLEANING, lifecycle.StepPowerOn)
		tick(t, e)
		agent, in = agentBoot(t, e, mac, hwUUID)
		if in.GetAction() != agentv1.Instruction_ACTION_WIPE {
			t.Fatalf("the retried machine's agent got %v, want a wipe", in)
		}
		complete(t, agent, id, lifecycle.StepWipe, "")
		wantStep(t, e, id, machinev1.MachineState_MACHINE_STATE_READY, "")
		if n, err := e.Store.Client.Machine.Query().Where(machine.TaskStepNotNil()).Count(t.Context()); err != nil || n != 0 {
			t.Errorf("%d machines still have a task (%v)", n, err)
		}
	})
}
