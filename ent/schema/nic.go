package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// NIC is one network interface of a machine. A MAC belongs to one machine only.
type NIC struct {
	ent.Schema
}

// Annotations of the NIC.
func (NIC) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "nics"}}
}

// Mixin of the NIC.
func (NIC) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the NIC.
func (NIC) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.String("mac").Unique().Immutable().MaxLen(17),
		field.UUID("machine_id", uuid.UUID{}),
		field.UUID("segment_id", uuid.UUID{}).Optional().Nillable(),
		field.String("circuit_id").Default("").MaxLen(255),
		field.String("remote_id").Default("").MaxLen(255),
	}
}

// Edges of the NIC.
func (NIC) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("nics").
			Field("machine_id").Unique().Required(),
		edge.From("segment", Segment.Type).Ref("nics").
			Field("segment_id").Unique().
			Annotations(entsql.OnDelete(entsql.SetNull)),
	}
}

// Indexes of the NIC: a machine's interfaces are read with every machine.
func (NIC) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("machine_id"),
	}
}
