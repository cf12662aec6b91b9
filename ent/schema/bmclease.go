package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"github.com/google/uuid"
)

// BMCLease says which carbide-bmc daemon may act on a machine's BMC, and
// until when: one row per machine, so one holder at a time. A daemon
// takes a lease that is free or expired, renews it while it works, and
// ends it when it reports; a daemon that dies stops renewing and another
// takes the machine over after the expiry. Token grows with each grant:
// it fences the reports of a holder that lost the lease.
type BMCLease struct {
	ent.Schema
}

// Fields of the BMCLease.
func (BMCLease) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("machine_id", uuid.UUID{}).Unique(),
		field.Int64("token"),
		// Holder is the daemon's name; empty once released.
		field.String("holder").MaxLen(128),
		field.Time("expire_time"),
		field.Time("grant_time").Default(time.Now),
	}
}

// Edges of the BMCLease.
func (BMCLease) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("bmc_lease").
			Field("machine_id").Unique().Required(),
	}
}
