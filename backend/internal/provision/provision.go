// Package provision is the lifecycle controller: it takes a machine
// through provisioning (its instance's image written and booted) and
// cleaning (its disks wiped), one step at a time (lifecycle.StepPowerOn
// and the others). It runs in every API replica; the machine's row lock
// makes one replica act on a machine at a time, and every step is started
// and ended in the transaction that changes the machine, so a crash
// between two steps loses nothing and repeats nothing.
//
// The controller itself only starts steps nobody else starts (power_on)
// and ends steps that overran their deadline. The others are driven by
// who reports them: the discovery agent (AgentService: its report starts
// write_image or wipe, CompleteStep ends them) and the installed system's
// phone-home through carbide-pxe (BootService.PhoneHome ends boot_os).
package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/machine"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
)

// Actor is how the controller appears in machine histories and BMC
// operations.
const Actor = "lifecycle-controller"

// Instances records instances' changes and gives back their addresses
// (the instances package).
type Instances interface {
	// RecordChange records instance id as it is now in the change log.
	RecordChange(ctx context.Context, tx *ent.Tx, id uuid.UUID) error
	// ReleaseAddress gives back the address held for inst.
	ReleaseAddress(ctx context.Context, tx *ent.Tx, inst *ent.Instance) error
}

// BMCs queues operations on machines' BMCs (bmc.Service).
type BMCs interface {
	Queue(ctx context.Context, tx *ent.Tx, id uuid.UUID, requester string, typ bmcv1.OperationType, boot *bmcv1.Boot, requestID string) (*bmcv1.Operation, error)
}

// Controller is the lifecycle controller.
type Controller struct {
	store     *store.Store
	bmcs      BMCs
	instances Instances
	timeouts  lifecycle.Timeouts
	logger    *slog.Logger
}

// New returns a controller over st.
func New(st *store.Store, bmcs BMCs, instances Instances, timeouts lifecycle.Timeouts, logger *slog.Logger) *Controller {
	return &Controller{store: st, bmcs: bmcs, instances: instances, timeouts: timeouts, logger: logger}
}

// Run ticks every interval until ctx ends.
func (c *Controller) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := c.Tick(ctx); err != nil && ctx.Err() == nil {
			c.logger.Warn("lifecycle controller", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick powers the machines whose power_on step is due, and fails the
// machines whose step overran its deadline.
func (c *Controller) Tick(ctx context.Context) error {
	due, err := c.store.Client.Machine.Query().
		Where(machine.StateIn(machine.StateProvisioning, machine.StateCleaning),
			machine.TaskStep(lifecycle.StepPowerOn), machine.Maintenance(false)).
		IDs(ctx)
	if err != nil {
		return fmt.Errorf("list machines to power on: %w", err)
	}
	var errs []error
	for _, id := range due {
		errs = append(errs, c.locked(ctx, id, func(tx *ent.Tx, m *ent.Machine) error {
			if m.TaskStep == nil || *m.TaskStep != lifecycle.StepPowerOn || m.Maintenance {
				return nil
			}
			return c.powerOn(ctx, tx, m)
		}))
	}
	now := store.Now()
	late, err := c.store.Client.Machine.Query().
		Where(machine.StateIn(machine.StateProvisioning, machine.StateCleaning),
			machine.TaskDeadlineLT(now), machine.Maintenance(false)).
		IDs(ctx)
	if err != nil {
		return fmt.Errorf("list machines past their deadline: %w", err)
	}
	for _, id := range late {
		errs = append(errs, c.locked(ctx, id, func(tx *ent.Tx, m *ent.Machine) error {
			if m.TaskStep == nil || m.TaskDeadline == nil || !m.TaskDeadline.Before(store.Now()) || m.Maintenance {
				return nil
			}
			took := m.TaskDeadline.Sub(*m.TaskStartTime).Round(time.Second)
			reason := fmt.Sprintf("step %s did not finish within %s", *m.TaskStep, took)
			if m.TaskMessage != "" {
				reason += " (" + m.TaskMessage + ")"
			}
			return c.fail(ctx, tx, m, reason)
		}))
	}
	return errors.Join(errs...)
}

// locked runs fn in a transaction on machine id, locked; on PostgreSQL a
// machine another replica holds is skipped (it acts on it).
func (c *Controller) locked(ctx context.Context, id uuid.UUID, fn func(*ent.Tx, *ent.Machine) error) error {
	return c.store.InTx(ctx, func(tx *ent.Tx) error {
		q := tx.Machine.Query().Where(machine.ID(id))
		if c.store.Dialect == "postgres" {
			q = q.ForUpdate(skipLocked)
		}
		m, err := q.Only(ctx)
		if ent.IsNotFound(err) {
			return nil // gone, or another replica holds it
		} else if err != nil {
			return fmt.Errorf("lock machine %s: %w", id, err)
		}
		return fn(tx, m)
	})
}

// powerOn starts a machine's boot from the network: through its BMC when
// it has one (off, next boot from the network, on), else by asking an
// operator.
func (c *Controller) powerOn(ctx context.Context, tx *ent.Tx, m *ent.Machine) error {
	inst, img, err := taskInstance(ctx, tx, m)
	if err != nil {
		return err
	}
	next, timeout := lifecycle.StepBootAgent, c.timeouts.BootAgent
	if m.State == machine.StateProvisioning && img != nil && img.GetNetboot() != nil {
		next, timeout = lifecycle.StepBootOS, c.timeouts.BootOS
	}
	hasBMC, err := tx.BMC.Query().Where(entbmc.MachineID(m.ID)).Exist(ctx)
	if err != nil {
		return fmt.Errorf("read the BMC of machine %s: %w", m.ID, err)
	}
	msg := "no BMC: power the machine on by hand; it boots from the network"
	if hasBMC {
		for _, op := range []struct {
			typ  bmcv1.OperationType
			boot *bmcv1.Boot
		}{
			{bmcv1.OperationType_OPERATION_TYPE_POWER_OFF, nil},
			{bmcv1.OperationType_OPERATION_TYPE_SET_BOOT_DEVICE, &bmcv1.Boot{Device: bmcv1.BootDevice_BOOT_DEVICE_PXE}},
			{bmcv1.OperationType_OPERATION_TYPE_POWER_ON, nil},
		} {
			if _, err := c.bmcs.Queue(ctx, tx, m.ID, Actor, op.typ, op.boot, ""); err != nil {
				return err
			}
		}
		msg = "the BMC daemon powers the machine off, sets a network boot and powers it on"
	}
	if m, err = lifecycle.StartTask(ctx, tx, m, lifecycle.Task{Step: next, Timeout: timeout, Message: msg}); err != nil {
		return err
	}
	c.logger.Info("machine powered for its task", "machine", m.ID, "state", m.State, "next_step", next, "bmc", hasBMC)
	return c.record(ctx, tx, m, inst)
}

// fail moves m to failed with reason, ends its task, and ends the
// instance it served: a provisioning instance fails, a releasing one is
// released (its machine now waits for an operator).
func (c *Controller) fail(ctx context.Context, tx *ent.Tx, m *ent.Machine, reason string) error {
	inst, _, err := taskInstance(ctx, tx, m)
	if err != nil {
		return err
	}
	if m, err = lifecycle.Move(ctx, tx, m, machine.StateFailed, reason, Actor); err != nil {
		return err
	}
	if m, err = lifecycle.EndTask(ctx, tx, m); err != nil {
		return err
	}
	c.logger.Warn("machine failed", "machine", m.ID, "reason", reason)
	if inst != nil {
		switch inst.State {
		case instance.StateProvisioning:
			inst, err = c.endInstance(ctx, tx, inst, instance.StateFailed, "its machine failed: "+reason)
		case instance.StateReleasing:
			inst, err = c.endInstance(ctx, tx, inst, instance.StateReleased, "its machine failed while being cleaned: "+reason)
		}
		if err != nil {
			return err
		}
	}
	return c.record(ctx, tx, m, inst)
}

// endInstance moves inst to failed or released, with reason, and gives
// back its address.
func (c *Controller) endInstance(ctx context.Context, tx *ent.Tx, inst *ent.Instance, to instance.State, reason string) (*ent.Instance, error) {
	now := store.Now()
	u := tx.Instance.UpdateOne(inst).SetState(to).SetStateTime(now).SetFailureReason(truncate(reason, 2048))
	if to == instance.StateReleased {
		u.SetReleaseTime(now)
	}
	updated, err := u.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("end instance %s: %w", inst.ID, err)
	}
	if err := c.instances.ReleaseAddress(ctx, tx, updated); err != nil {
		return nil, err
	}
	return updated, nil
}

// record records m's change and, when not nil, inst's.
func (c *Controller) record(ctx context.Context, tx *ent.Tx, m *ent.Machine, inst *ent.Instance) error {
	if err := tx.Machine.UpdateOneID(m.ID).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
		return fmt.Errorf("update machine %s: %w", m.ID, err)
	}
	if err := machines.RecordChange(ctx, c.store, tx, m.ID, store.Updated); err != nil {
		return err
	}
	if inst != nil {
		return c.instances.RecordChange(ctx, tx, inst.ID)
	}
	return nil
}

// taskInstance is the instance m's task serves and its image, or nils.
func taskInstance(ctx context.Context, tx *ent.Tx, m *ent.Machine) (*ent.Instance, *instancev1.Image, error) {
	if m.TaskInstanceID == nil {
		return nil, nil, nil
	}
	inst, err := tx.Instance.Get(ctx, *m.TaskInstanceID)
	if ent.IsNotFound(err) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("read instance %s: %w", *m.TaskInstanceID, err)
	}
	img, err := image(ctx, tx.Client(), inst)
	if err != nil {
		return nil, nil, err
	}
	return inst, img, nil
}

// image is inst's image, with only its boot fields set; nil when it was
// deleted.
func image(ctx context.Context, client *ent.Client, inst *ent.Instance) (*instancev1.Image, error) {
	row, err := client.Image.Get(ctx, inst.ImageID)
	if ent.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read image %s: %w", inst.ImageID, err)
	}
	img := &instancev1.Image{}
	if err := proto.Unmarshal(row.Boot, img); err != nil {
		return nil, fmt.Errorf("decode image %s: %w", row.ID, err)
	}
	return img, nil
}

func failedPrecondition(format string, args ...any) error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(format, args...))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
