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

// BMC is a machine's baseboard management controller: how the carbide-bmc
// daemons reach it, its sealed password, and the power state they saw
// last. A machine has at most one.
type BMC struct {
	ent.Schema
}

// Annotations of the BMC: its table's name.
func (BMC) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "bmcs"}}
}

// Mixin of the BMC.
func (BMC) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the BMC.
func (BMC) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("machine_id", uuid.UUID{}).Unique(),
		// Address is a host name or an IP address.
		field.String("address").MaxLen(253),
		// Port 0 is the protocol's default.
		field.Int("port").Default(0),
		field.Enum("protocol").Values("auto", "ipmi", "redfish").Default("auto"),
		field.String("username").MaxLen(64),
		// PasswordSealed is the password encrypted under the key
		// PasswordKeyID names (secrets.Keyring, AES-256-GCM, the machine
		// id as associated data); nil when none is stored.
		field.Bytes("password_sealed").Optional().Nillable().Sensitive(),
		field.String("password_key_id").Default("").MaxLen(64),
		// MAC is the BMC's own MAC address, when the agent reported it.
		field.String("mac").Default("").MaxLen(17),
		field.Enum("power_state").Values("unknown", "on", "off").Default("unknown"),
		field.Time("power_time").Optional().Nillable(),
		field.String("power_error").Default("").MaxLen(2048),
		// PowerDrift says the power state seen last differs from the one
		// the last finished operation left.
		field.Bool("power_drift").Default(false),
		// CredentialSource says who set the credentials: an operator
		// (SetBMC) or the discovery agent, in band (EnrollBMC). An agent
		// never replaces an operator's.
		field.Enum("credential_source").Values("operator", "agent").Default("operator"),
	}
}

// Edges of the BMC.
func (BMC) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("machine", Machine.Type).Ref("bmc").
			Field("machine_id").Unique().Required(),
	}
}

// Indexes of the BMC: the claim looks for those due for a poll.
func (BMC) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("power_time"),
	}
}
