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

// DeclinedAddress is an address a DHCP client reported in use by someone
// else (DHCPDECLINE). It is leased to no one until the given time.
type DeclinedAddress struct {
	ent.Schema
}

// Fields of the DeclinedAddress.
func (DeclinedAddress) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.UUID("segment_id", uuid.UUID{}),
		field.String("address").MaxLen(15),
		field.String("declined_by").MaxLen(17),
		field.Time("until"),
	}
}

// Edges of the DeclinedAddress.
func (DeclinedAddress) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("segment", Segment.Type).Ref("declined").
			Field("segment_id").Unique().Required(),
	}
}

// Indexes of the DeclinedAddress.
func (DeclinedAddress) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("segment_id", "address").Unique(),
	}
}

// Annotations of the DeclinedAddress.
func (DeclinedAddress) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "declined_addresses"}}
}
