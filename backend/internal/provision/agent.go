package provision

import (
	"context"
	"fmt"
	"time"

	"entgo.io/ent/dialect/sql"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var skipLocked = sql.WithLockAction(sql.SkipLocked)

// waitStep is how long an agent waits before asking again while its
// machine's step is not one it acts on.
const waitStep = 5 * time.Second

// AgentReported starts the agent's step of a provisioning or cleaning
// machine whose agent has just reported its inventory: write_image or
// wipe. m was read, locked, in tx; the caller records m's change. A
// machine at any other step is returned as it is.
func (c *Controller) AgentReported(ctx context.Context, tx *ent.Tx, m *ent.Machine) (*ent.Machine, error) {
	if m.Maintenance || m.TaskStep == nil || (*m.TaskStep != lifecycle.StepPowerOn && *m.TaskStep != lifecycle.StepBootAgent) {
		return m, nil
	}
	inst, _, err := taskInstance(ctx, tx, m)
	if err != nil {
		return nil, err
	}
	var t lifecycle.Task
	switch m.State {
	case machine.StateProvisioning:
		t = lifecycle.Task{Step: lifecycle.StepWriteImage, Timeout: c.timeouts.WriteImage, Message: "the agent writes the image"}
	case machine.StateCleaning:
		t = lifecycle.Task{Step: lifecycle.StepWipe, Timeout: c.timeouts.For(lifecycle.StepWipe, wipeMode(m)),
			Message: fmt.Sprintf("the agent wipes the disks (%s)", wipeMode(m))}
	default:
		return m, nil
	}
	if m, err = lifecycle.StartTask(ctx, tx, m, t); err != nil {
		return nil, err
	}
	c.logger.Info("agent step started", "machine", m.ID, "step", t.Step)
	if inst != nil {
		return m, c.instances.RecordChange(ctx, tx, inst.ID)
	}
	return m, nil
}

// Instruction is what the agent of a provisioning or cleaning machine
// does now; ok is false for a machine in another state.
func (c *Controller) Instruction(ctx context.Context, client *ent.Client, m *ent.Machine) (in *agentv1.Instruction, ok bool, err error) {
	if m.State != machine.StateProvisioning && m.State != machine.StateCleaning {
		return nil, false, nil
	}
	step := ""
	if m.TaskStep != nil {
		step = *m.TaskStep
	}
	wait := &agentv1.Instruction{Action: agentv1.Instruction_ACTION_WAIT, Wait: durationpb.New(waitStep),
		Reason: fmt.Sprintf("the machine is %s at step %q; report the inventory to start the agent's step", m.State, step)}
	switch {
	case step == lifecycle.StepWriteImage && m.State == machine.StateProvisioning:
		install, err := c.install(ctx, client, m)
		if err != nil {
			return nil, true, err
		}
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_INSTALL, Step: step, Install: install,
			Reason: "write the instance's image"}, true, nil
	case step == lifecycle.StepWipe && m.State == machine.StateCleaning:
		mode := instancev1.WipeMode_WIPE_MODE_QUICK
		if wipeMode(m) == machine.TaskWipeModeFull {
			mode = instancev1.WipeMode_WIPE_MODE_FULL
		}
		inv, err := inventory(m)
		if err != nil {
			return nil, true, err
		}
		w := &agentv1.Wipe{Mode: mode}
		for _, d := range inv.GetDisks() {
			w.Disks = append(w.Disks, d.GetName())
		}
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_WIPE, Step: step, Wipe: w,
			Reason: "the machine is being cleaned: wipe its disks"}, true, nil
	case step == lifecycle.StepBootOS && m.State == machine.StateProvisioning:
		return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_REBOOT,
			Reason: "the image is written: reboot into it"}, true, nil
	}
	return wait, true, nil
}

// install is the install instruction of m's instance.
func (c *Controller) install(ctx context.Context, client *ent.Client, m *ent.Machine) (*agentv1.Install, error) {
	if m.TaskInstanceID == nil {
		return nil, failedPrecondition("machine %s is provisioning for no instance", m.ID)
	}
	inst, err := client.Instance.Get(ctx, *m.TaskInstanceID)
	if err != nil {
		return nil, fmt.Errorf("read instance %s: %w", *m.TaskInstanceID, err)
	}
	img, err := image(ctx, client, inst)
	if err != nil {
		return nil, err
	}
	if img.GetDisk() == nil {
		return nil, failedPrecondition("the image of instance %s is not a disk image", inst.ID)
	}
	inv, err := inventory(m)
	if err != nil {
		return nil, err
	}
	disk := installDisk(inv)
	if disk == nil {
		return nil, failedPrecondition("machine %s reported no disk to install on", m.ID)
	}
	return &agentv1.Install{InstanceId: inst.ID.String(), Image: img.GetDisk(), Disk: disk.GetName(), DiskSerial: disk.GetSerial()}, nil
}

// installDisk is the disk an image is written to: the smallest disk of
// at least 1 GiB, the boot disk of most servers; else the largest.
func installDisk(inv *machinev1.Inventory) *machinev1.Disk {
	var best, largest *machinev1.Disk
	for _, d := range inv.GetDisks() {
		if largest == nil || d.GetSizeBytes() > largest.GetSizeBytes() {
			largest = d
		}
		if d.GetSizeBytes() >= 1<<30 && (best == nil || d.GetSizeBytes() < best.GetSizeBytes()) {
			best = d
		}
	}
	if best != nil {
		return best
	}
	return largest
}

func inventory(m *ent.Machine) (*machinev1.Inventory, error) {
	inv := &machinev1.Inventory{}
	if err := proto.Unmarshal(m.Inventory, inv); err != nil {
		return nil, fmt.Errorf("decode the inventory of machine %s: %w", m.ID, err)
	}
	return inv, nil
}

func wipeMode(m *ent.Machine) machine.TaskWipeMode {
	if m.TaskWipeMode == nil {
		return machine.TaskWipeModeQuick
	}
	return *m.TaskWipeMode
}

// Progress records how far the agent's current step is. A report for
// another step is refused, so a late one cannot touch a later step.
func (c *Controller) Progress(ctx context.Context, tx *ent.Tx, m *ent.Machine, step string, done, total int64, message string) error {
	if m.TaskStep == nil || *m.TaskStep != step {
		return failedPrecondition("machine %s is not at step %s (it is %s at step %q); progress of an earlier step is ignored", m.ID, step, m.State, deref(m.TaskStep))
	}
	m, err := tx.Machine.UpdateOne(m).SetTaskDone(done).SetTaskTotal(total).SetTaskMessage(truncate(message, 512)).Save(ctx)
	if err != nil {
		return fmt.Errorf("record the progress of machine %s: %w", m.ID, err)
	}
	inst, _, err := taskInstance(ctx, tx, m)
	if err != nil {
		return err
	}
	return c.record(ctx, tx, m, inst)
}

// Outcome is the end of an agent's step.
type Outcome struct {
	Step string
	// Error is why it failed; empty when it succeeded.
	Error    string
	Bytes    int64
	Duration time.Duration
}

// Complete ends the agent's step with its outcome, inside tx, m read
// locked. A repeated report of a step that already ended changes nothing.
func (c *Controller) Complete(ctx context.Context, tx *ent.Tx, m *ent.Machine, o Outcome) (*ent.Machine, error) {
	if m.TaskStep == nil || *m.TaskStep != o.Step {
		if ended(m, o.Step) {
			return m, nil
		}
		return nil, failedPrecondition("machine %s is not at step %s (it is %s at step %q)", m.ID, o.Step, m.State, deref(m.TaskStep))
	}
	inst, _, err := taskInstance(ctx, tx, m)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("%d MiB in %s", o.Bytes>>20, o.Duration.Round(100*time.Millisecond))
	if secs := o.Duration.Seconds(); secs > 0 {
		what += fmt.Sprintf(" (%.0f MB/s)", float64(o.Bytes)/1e6/secs)
	}
	switch {
	case o.Step == lifecycle.StepWriteImage && o.Error == "":
		c.logger.Info("image written", "machine", m.ID, "written", what)
		m, err = lifecycle.StartTask(ctx, tx, m, lifecycle.Task{Step: lifecycle.StepBootOS, Timeout: c.timeouts.BootOS,
			Message: "image written, " + what + "; waiting for the installed system to phone home"})
	case o.Step == lifecycle.StepWriteImage:
		reason := "writing the image failed: " + o.Error
		c.logger.Warn("image not written; cleaning the machine", "machine", m.ID, "error", o.Error)
		if inst != nil {
			if inst, err = c.endInstance(ctx, tx, inst, instance.StateFailed, reason); err != nil {
				return nil, err
			}
		}
		if m, err = lifecycle.Move(ctx, tx, m, machine.StateCleaning, reason, Actor); err != nil {
			return nil, err
		}
		m, err = lifecycle.StartTask(ctx, tx, m, lifecycle.Task{Step: lifecycle.StepWipe, Timeout: c.timeouts.For(lifecycle.StepWipe, wipeMode(m)),
			Message: fmt.Sprintf("the agent wipes the disks (%s) after a failed install", wipeMode(m))})
	case o.Step == lifecycle.StepWipe && o.Error == "":
		c.logger.Info("disks wiped", "machine", m.ID, "wiped", what)
		if inst != nil && inst.State == instance.StateReleasing {
			if inst, err = c.endInstance(ctx, tx, inst, instance.StateReleased, ""); err != nil {
				return nil, err
			}
		}
		if m, err = lifecycle.Move(ctx, tx, m, machine.StateReady, fmt.Sprintf("disks wiped (%s): %s", wipeMode(m), what), Actor); err != nil {
			return nil, err
		}
		m, err = lifecycle.EndTask(ctx, tx, m)
	case o.Step == lifecycle.StepWipe:
		return m, c.fail(ctx, tx, m, "wiping the disks failed: "+o.Error)
	default:
		return nil, failedPrecondition("step %s is not one an agent completes", o.Step)
	}
	if err != nil {
		return nil, err
	}
	return m, c.record(ctx, tx, m, inst)
}

// ended reports whether step is over for m: a later step or state came.
func ended(m *ent.Machine, step string) bool {
	switch step {
	case lifecycle.StepWriteImage:
		return m.State == machine.StateAssigned || m.State == machine.StateCleaning ||
			m.State == machine.StateProvisioning && deref(m.TaskStep) == lifecycle.StepBootOS
	case lifecycle.StepWipe:
		return m.State == machine.StateReady || m.State == machine.StateFailed
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
