package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Change is one entry of the change log that Watch streams: written in the
// same transaction as the change it describes, numbered from a sequence when
// it is inserted. Numbers need not follow commit order; readers deliver
// entries in number order only up to a number below which every entry has
// committed or rolled back (store.Horizon).
type Change struct {
	ent.Schema
}

// Fields of the Change.
func (Change) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.Enum("kind").Values("machine", "segment", "bmc", "bmc_operation", "instance").Immutable(),
		field.Enum("type").Values("created", "updated", "deleted").Immutable(),
		field.String("resource_id").Immutable(),
		// Payload is the resource after the change as a binary protobuf message.
		field.Bytes("payload").Immutable(),
		field.Time("time").Default(time.Now).Immutable(),
	}
}

// Indexes of the Change.
func (Change) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("time"),
	}
}
