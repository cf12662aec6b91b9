package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// IdentityConflict is an inventory report held for an operator: the
// reporting machine's hardware id is already another (known) machine's,
// which is past discovery or has a leased interface, so the two are not
// merged without an operator's word. A machine has at most one.
type IdentityConflict struct {
	ent.Schema
}

// Mixin of the IdentityConflict.
func (IdentityConflict) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the IdentityConflict.
func (IdentityConflict) Fields() []ent.Field {
	return []ent.Field{
		// MachineID is the machine whose agent reported.
		field.UUID("machine_id", uuid.UUID{}).Unique(),
		// KnownMachineID is the machine that already has the hardware id.
		field.UUID("known_machine_id", uuid.UUID{}),
		field.String("hardware_id").MaxLen(300),
		// Inventory is the held report, a binary
		// carbide.machine.v1.Inventory message.
		field.Bytes("inventory"),
		// ReportedBy is the agent's identity.
		field.String("reported_by").MaxLen(512),
	}
}

// Edges of the IdentityConflict.
func (IdentityConflict) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("identity_conflict").
			Field("machine_id").Unique().Required(),
		edge.From("known_machine", Machine.Type).Ref("claimed_by").
			Field("known_machine_id").Unique().Required(),
	}
}

// Indexes of the IdentityConflict.
func (IdentityConflict) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("known_machine_id"),
	}
}
