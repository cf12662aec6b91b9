package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Lease binds an address of a segment to a MAC until expire_time. The two
// unique indexes are what make a double allocation impossible, whatever
// number of API replicas allocate at once. An expired lease keeps its row,
// so the MAC gets the same address back, until another MAC reclaims it.
type Lease struct {
	ent.Schema
}

// Fields of the Lease.
func (Lease) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.UUID("segment_id", uuid.UUID{}),
		field.String("mac").MaxLen(17),
		field.String("address").MaxLen(15),
		// AddressNum is address as an unsigned 32-bit number. It sorts as
		// addresses do (the dotted text does not: "10.0.0.10" < "10.0.0.9"),
		// so allocation finds the next unleased address of a range with an
		// index range scan. The store sets it from address on every write.
		field.Int64("address_num").Default(0),
		field.Bool("reserved").Default(false),
		field.Time("create_time").Default(time.Now),
		field.Time("renew_time").Default(time.Now),
		field.Time("expire_time"),
		// ExpiryNoted says the lease's expiry has been recorded as a change
		// of its machine (by the API's expiry sweeper). Every write that
		// creates or extends a lease sets it back to false, so the next
		// expiry is noted again.
		field.Bool("expiry_noted").Default(false),
	}
}

// Edges of the Lease.
func (Lease) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("segment", Segment.Type).Ref("leases").
			Field("segment_id").Unique().Required(),
	}
}

// Indexes of the Lease: one address per MAC and one MAC per address on a
// segment.
func (Lease) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("segment_id", "mac").Unique(),
		index.Fields("segment_id", "address").Unique(),
		index.Fields("segment_id", "address_num"),
		index.Fields("segment_id", "expire_time"),
		// The expiry sweeper finds expired leases not yet noted.
		index.Fields("expiry_noted", "expire_time"),
		// A machine's addresses are read by MAC, across segments.
		index.Fields("mac"),
	}
}
