package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Reservation pins one address of a segment to one MAC.
type Reservation struct {
	ent.Schema
}

// Fields of the Reservation.
func (Reservation) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.UUID("segment_id", uuid.UUID{}),
		field.String("mac").MaxLen(17),
		field.String("address").MaxLen(15),
	}
}

// Edges of the Reservation.
func (Reservation) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("segment", Segment.Type).Ref("reservations").
			Field("segment_id").Unique().Required(),
	}
}

// Indexes of the Reservation: a MAC and an address appear once per segment.
func (Reservation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("segment_id", "mac").Unique(),
		index.Fields("segment_id", "address").Unique(),
	}
}
