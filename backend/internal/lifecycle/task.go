package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/machine"
	"github.com/google/uuid"
)

// The steps of a machine's task while it is provisioning or cleaning
// (ent Machine.task_step, carbide.machine.v1.Task.step), in order:
//
//	provisioning: power_on -> boot_agent -> write_image -> boot_os
//	cleaning:     power_on -> boot_agent -> wipe
//
// A netboot image skips boot_agent and write_image.
const (
	// StepPowerOn: the controller asks the BMC daemon to boot the machine
	// from the network, or waits for an operator to power it on.
	StepPowerOn = "power_on"
	// StepBootAgent: waiting for the discovery agent to report.
	StepBootAgent = "boot_agent"
	// StepWriteImage: the agent writes the image and its seed.
	StepWriteImage = "write_image"
	// StepBootOS: waiting for the installed system to phone home.
	StepBootOS = "boot_os"
	// StepWipe: the agent wipes the disks.
	StepWipe = "wipe"
)

// Timeouts are how long each step may take before the machine fails.
type Timeouts struct {
	PowerOn, BootAgent, WriteImage, BootOS, WipeQuick, WipeFull time.Duration
}

// DefaultTimeouts are the API's defaults (its --timeout-* flags).
var DefaultTimeouts = Timeouts{
	PowerOn:    5 * time.Minute,
	BootAgent:  15 * time.Minute,
	WriteImage: 60 * time.Minute,
	BootOS:     20 * time.Minute,
	WipeQuick:  15 * time.Minute,
	WipeFull:   24 * time.Hour,
}

// For is the timeout of step; wipe uses mode (quick or full).
func (t Timeouts) For(step string, mode machine.TaskWipeMode) time.Duration {
	switch step {
	case StepPowerOn:
		return t.PowerOn
	case StepBootAgent:
		return t.BootAgent
	case StepWriteImage:
		return t.WriteImage
	case StepBootOS:
		return t.BootOS
	case StepWipe:
		if mode == machine.TaskWipeModeFull {
			return t.WipeFull
		}
		return t.WipeQuick
	}
	return t.PowerOn
}

// Task is a step to start on a machine.
type Task struct {
	Step string
	// Instance is the instance the step serves; uuid.Nil for none.
	Instance uuid.UUID
	// WipeMode is how a cleaning wipes; empty keeps the machine's.
	WipeMode machine.TaskWipeMode
	// Timeout is how long the step may take.
	Timeout time.Duration
	// Message says what the step does, in words.
	Message string
}

// StartTask starts step t on m inside tx: its progress restarts at zero
// and its deadline is now plus t.Timeout. m must have been read in tx.
func StartTask(ctx context.Context, tx *ent.Tx, m *ent.Machine, t Task) (*ent.Machine, error) {
	now := store.Now()
	u := tx.Machine.UpdateOne(m).
		SetTaskStep(t.Step).SetTaskStartTime(now).SetTaskDeadline(now.Add(t.Timeout)).
		SetTaskDone(0).SetTaskTotal(0).SetTaskMessage(truncate(t.Message, 512))
	if t.Instance != uuid.Nil {
		u.SetTaskInstanceID(t.Instance)
	}
	if t.WipeMode != "" {
		u.SetTaskWipeMode(t.WipeMode)
	}
	updated, err := u.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("start step %s of machine %s: %w", t.Step, m.ID, err)
	}
	return updated, nil
}

// EndTask clears m's task inside tx, when it leaves provisioning or
// cleaning.
func EndTask(ctx context.Context, tx *ent.Tx, m *ent.Machine) (*ent.Machine, error) {
	updated, err := tx.Machine.UpdateOne(m).
		ClearTaskStep().ClearTaskInstanceID().ClearTaskStartTime().ClearTaskDeadline().
		ClearTaskWipeMode().SetTaskDone(0).SetTaskTotal(0).SetTaskMessage("").
		Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("end the task of machine %s: %w", m.ID, err)
	}
	return updated, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
