package provision

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/google/uuid"
)

// active are the states of an instance that holds its machine.
var active = []instance.State{instance.StateProvisioning, instance.StateRunning, instance.StateReleasing}

// activeInstance is the instance that holds machine id, or nil.
func activeInstance(ctx context.Context, client *ent.Client, id uuid.UUID) (*ent.Instance, error) {
	inst, err := client.Instance.Query().Where(instance.MachineID(id), instance.StateIn(active...)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read the instance of machine %s: %w", id, err)
	}
	return inst, nil
}

// BootAction is what machine m network-boots: the discovery agent while
// its agent has work, its instance's disk or netboot image once that is
// installed, its disk when Ready (or held in maintenance).
func (c *Controller) BootAction(ctx context.Context, client *ent.Client, m *ent.Machine) (bootv1.BootAction, *bootv1.NetbootConfig, error) {
	if m.Maintenance {
		return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK, nil, nil
	}
	switch m.State {
	case machine.StateReady, machine.StateMaintenance:
		return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK, nil, nil
	case machine.StateProvisioning, machine.StateAssigned:
	default:
		return bootv1.BootAction_BOOT_ACTION_DISCOVERY, nil, nil
	}
	inst, err := activeInstance(ctx, client, m.ID)
	if err != nil || inst == nil {
		return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK, nil, err
	}
	img, err := image(ctx, client, inst)
	if err != nil {
		return 0, nil, err
	}
	if nb := img.GetNetboot(); nb != nil {
		return bootv1.BootAction_BOOT_ACTION_NETBOOT, &bootv1.NetbootConfig{
			KernelUrl: nb.GetKernel().GetUrl(), InitrdUrl: nb.GetInitrd().GetUrl(), Cmdline: nb.GetCmdline()}, nil
	}
	if m.State == machine.StateProvisioning && deref(m.TaskStep) != lifecycle.StepBootOS {
		return bootv1.BootAction_BOOT_ACTION_DISCOVERY, nil, nil
	}
	return bootv1.BootAction_BOOT_ACTION_LOCAL_DISK, nil, nil
}

// CloudInit is the cloud-init data of the instance that holds machine m,
// booting from mac, or nil when it has none that is provisioning or
// running.
func (c *Controller) CloudInit(ctx context.Context, client *ent.Client, m *ent.Machine, mac string) (*bootv1.CloudInit, error) {
	inst, err := activeInstance(ctx, client, m.ID)
	if err != nil || inst == nil || inst.State == instance.StateReleasing {
		return nil, err
	}
	ci := &bootv1.CloudInit{
		InstanceId: inst.ID.String(), Hostname: inst.Hostname, UserData: inst.UserData,
		SshAuthorizedKeys: inst.SSHAuthorizedKeys, Mac: mac,
		PhoneHome: inst.State == instance.StateProvisioning,
	}
	l, err := client.Lease.Query().Where(lease.MAC(mac), lease.ExpireTimeGT(store.Now())).WithSegment().
		Order(ent.Desc(lease.FieldRenewTime)).First(ctx)
	if ent.IsNotFound(err) {
		return ci, nil // no network-config: cloud-init falls back to DHCP
	} else if err != nil {
		return nil, fmt.Errorf("read the lease of %s: %w", mac, err)
	}
	seg := l.Edges.Segment
	prefix, err := netip.ParsePrefix(seg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("parse the prefix of segment %s: %w", seg.ID, err)
	}
	ci.Address, ci.PrefixLength = l.Address, uint32(prefix.Bits())
	ci.Gateway, ci.DnsServers, ci.Domain, ci.Mtu = seg.Gateway, seg.DNSServers, seg.Domain, uint32(seg.Mtu)
	return ci, nil
}

// PhoneHome ends the boot_os step of machine m, read locked in tx: the
// installed system of instance id booted. The machine becomes Assigned
// and the instance Running. Repeated for a Running instance, it changes
// nothing.
func (c *Controller) PhoneHome(ctx context.Context, tx *ent.Tx, m *ent.Machine, id uuid.UUID) error {
	inst, err := tx.Instance.Query().Where(instance.ID(id), instance.MachineID(m.ID)).Only(ctx)
	if ent.IsNotFound(err) {
		return failedPrecondition("instance %s is not machine %s's", id, m.ID)
	} else if err != nil {
		return fmt.Errorf("read instance %s: %w", id, err)
	}
	if inst.State == instance.StateRunning && m.State == machine.StateAssigned {
		return nil
	}
	if inst.State != instance.StateProvisioning || m.State != machine.StateProvisioning || deref(m.TaskStep) != lifecycle.StepBootOS {
		return failedPrecondition("instance %s is %s and machine %s %s at step %q; a phone-home ends the boot of a written image",
			id, inst.State, m.ID, m.State, deref(m.TaskStep))
	}
	took := ""
	if m.TaskStartTime != nil {
		took = fmt.Sprintf(" %s after the image was written", store.Now().Sub(*m.TaskStartTime).Round(100*time.Millisecond))
	}
	if m, err = lifecycle.Move(ctx, tx, m, machine.StateAssigned, fmt.Sprintf("instance %s booted and phoned home%s", id, took), Actor); err != nil {
		return err
	}
	if m, err = lifecycle.EndTask(ctx, tx, m); err != nil {
		return err
	}
	now := store.Now()
	if inst, err = tx.Instance.UpdateOne(inst).SetState(instance.StateRunning).SetStateTime(now).SetRunningTime(now).Save(ctx); err != nil {
		return fmt.Errorf("set instance %s running: %w", id, err)
	}
	c.logger.Info("instance running", "instance", id, "machine", m.ID)
	return c.record(ctx, tx, m, inst)
}
