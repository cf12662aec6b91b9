package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// MachineStates lists the lifecycle states a machine can be in.
var MachineStates = []string{
	"discovered", "inventoried", "ready", "provisioning", "assigned",
	"cleaning", "failed", "maintenance",
}

// Machine is one physical server.
type Machine struct {
	ent.Schema
}

// Mixin of the Machine.
func (Machine) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the Machine.
func (Machine) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.String("hostname").Default("").MaxLen(63),
		field.Enum("state").Values(MachineStates...).Default("discovered"),
		field.Time("state_time").Default(time.Now),
		field.JSON("labels", map[string]string{}).Default(map[string]string{}),
		field.Bool("maintenance").Default(false),
		// Inventory is the last hardware report of the discovery agent, a
		// binary carbide.machine.v1.Inventory message.
		field.Bytes("inventory").Optional(),
		// HardwareID identifies the box across NICs and rediscovery:
		// "uuid:<SMBIOS system UUID>" or "serial:<serial number>".
		field.String("hardware_id").Optional().Nillable().Unique().MaxLen(300),
		// BootID is the machine's current network boot, started when
		// carbide-pxe served its discovery iPXE script; agent tokens name
		// it and stop working when another boot starts.
		field.UUID("boot_id", uuid.UUID{}).Optional().Nillable(),
		// BootNonceHash is the SHA-256 of the nonce that buys the boot's
		// one agent token; nil once it was used.
		field.Bytes("boot_nonce_hash").Optional().Nillable().Sensitive(),
		// BootExpireTime is when the boot's agent tokens stop working,
		// however often they were renewed.
		field.Time("boot_expire_time").Optional().Nillable(),
		// The lifecycle controller's current step while the machine is
		// provisioning or cleaning (carbide.machine.v1.Task): power_on,
		// boot_agent, write_image, boot_os or wipe; nil otherwise.
		field.String("task_step").Optional().Nillable().MaxLen(32),
		// TaskInstanceID is the instance the step serves; nil for a
		// cleaning no instance asked for.
		field.UUID("task_instance_id", uuid.UUID{}).Optional().Nillable(),
		field.Time("task_start_time").Optional().Nillable(),
		// TaskDeadline is when the step times out and the machine fails.
		field.Time("task_deadline").Optional().Nillable(),
		field.Int64("task_done").Default(0),
		field.Int64("task_total").Default(0),
		field.String("task_message").Default("").MaxLen(512),
		// TaskWipeMode is how the cleaning wipes the disks.
		field.Enum("task_wipe_mode").Values(WipeModes...).Optional().Nillable(),
	}
}

// Edges of the Machine.
func (Machine) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("nics", NIC.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("transitions", Transition.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("identity_conflict", IdentityConflict.Type).Unique().
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("claimed_by", IdentityConflict.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("bmc", BMC.Type).Unique().
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("bmc_operations", BMCOperation.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("bmc_lease", BMCLease.Type).Unique().
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("instances", Instance.Type).
			Annotations(entsql.OnDelete(entsql.SetNull)),
	}
}

// Indexes of the Machine.
func (Machine) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("state"),
		index.Fields("task_deadline"),
		// ListMachines' hostname filter, and the CLI's and provider's
		// lookups by name.
		index.Fields("hostname"),
	}
}
