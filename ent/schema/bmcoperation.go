package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// BMCOperation is a power or boot operation asked of a machine's BMC,
// queued until a carbide-bmc daemon claims it, then run and finished with
// a result. A machine's operations run one at a time, oldest first.
type BMCOperation struct {
	ent.Schema
}

// Fields of the BMCOperation.
func (BMCOperation) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.UUID("machine_id", uuid.UUID{}),
		field.Enum("type").Values("power_on", "power_off", "soft_off", "power_cycle", "reset", "set_boot_device").Immutable(),
		field.Enum("boot_device").Values("none", "pxe", "disk", "bios_setup").Default("none").Immutable(),
		field.Bool("boot_persistent").Default(false).Immutable(),
		field.Bool("boot_efi").Default(false).Immutable(),
		field.Enum("state").Values("pending", "running", "succeeded", "failed", "cancelled").Default("pending"),
		field.Int("attempts").Default(0),
		field.String("error").Default("").MaxLen(2048),
		// Requester is the identity of the caller that asked for it.
		field.String("requester").MaxLen(512).Immutable(),
		// Worker is the daemon that ran it last.
		field.String("worker").Default("").MaxLen(128),
		// RequestID makes a request idempotent, per machine; nil for
		// none.
		field.String("request_id").Optional().Nillable().MaxLen(64).Immutable(),
		field.Enum("power_state").Values("unknown", "on", "off").Default("unknown"),
		field.Time("create_time").Default(time.Now).Immutable(),
		field.Time("start_time").Optional().Nillable(),
		field.Time("end_time").Optional().Nillable(),
	}
}

// Edges of the BMCOperation.
func (BMCOperation) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("bmc_operations").
			Field("machine_id").Unique().Required(),
	}
}

// Indexes of the BMCOperation: a machine's queue in order, the waiting
// operations of all machines in order, and one operation per request id
// and machine.
func (BMCOperation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("machine_id", "create_time"),
		index.Fields("state", "create_time"),
		index.Fields("machine_id", "request_id").Unique(),
	}
}
