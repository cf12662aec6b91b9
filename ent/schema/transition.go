package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Transition records one change of a machine's lifecycle state.
type Transition struct {
	ent.Schema
}

// Fields of the Transition.
func (Transition) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.UUID("machine_id", uuid.UUID{}).Immutable(),
		field.Enum("from_state").Values(MachineStates...).Optional().Nillable().Immutable().
			Comment("empty for the entry that records the machine's creation"),
		field.Enum("to_state").Values(MachineStates...).Immutable(),
		field.String("reason").Default("").Immutable(),
		field.String("actor").Default("").Immutable(),
		field.Time("time").Default(time.Now).Immutable(),
	}
}

// Edges of the Transition.
func (Transition) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("transitions").
			Field("machine_id").Unique().Required().Immutable(),
	}
}

// Indexes of the Transition.
func (Transition) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("machine_id", "id"),
	}
}
