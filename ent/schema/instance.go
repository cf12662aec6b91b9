package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// InstanceStates lists the states an instance can be in.
var InstanceStates = []string{"provisioning", "running", "releasing", "released", "failed"}

// WipeModes lists how disks are wiped.
var WipeModes = []string{"quick", "full"}

// Instance is a tenant's use of a machine with an image.
type Instance struct {
	ent.Schema
}

// Mixin of the Instance.
func (Instance) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the Instance.
func (Instance) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.String("hostname").MaxLen(253).Immutable(),
		// ImageID is the image it runs; uuid.Nil (NULL) once the image was
		// deleted, which DeleteImage allows only when every instance that
		// uses it is released or failed. Optional but not Nillable, so
		// that it reads as uuid.Nil then.
		field.UUID("image_id", uuid.UUID{}).Optional().Immutable(),
		// UserData is the tenant's cloud-init user data. Not a secret
		// to Carbide, but not logged either.
		field.Bytes("user_data").Optional().Immutable(),
		field.JSON("ssh_authorized_keys", []string{}).Default([]string{}).Immutable(),
		field.JSON("labels", map[string]string{}).Default(map[string]string{}),
		// MachineID is the machine it holds or held; nil when it failed
		// before one was chosen or the machine was deleted.
		field.UUID("machine_id", uuid.UUID{}).Optional().Nillable(),
		// Selector is how it chose its machine: a binary
		// carbide.instance.v1.Selector; nil when a machine was named.
		field.Bytes("selector").Optional().Immutable(),
		field.Enum("state").Values(InstanceStates...).Default("provisioning"),
		field.String("failure_reason").Default("").MaxLen(2048),
		// Address is the IPv4 address of the machine's boot interface,
		// held for the instance while it is not released.
		field.String("address").Default("").MaxLen(45),
		field.Enum("wipe_mode").Values(WipeModes...).Default("quick"),
		// RequestID makes CreateInstance idempotent; nil for none.
		field.String("request_id").Optional().Nillable().MaxLen(64).Immutable(),
		field.Time("running_time").Optional().Nillable(),
		field.Time("release_time").Optional().Nillable(),
		field.Time("state_time").Default(time.Now),
	}
}

// Edges of the Instance.
func (Instance) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("image", Image.Type).Ref("instances").
			Field("image_id").Unique().Immutable(),
		edge.From("machine", Machine.Type).Ref("instances").
			Field("machine_id").Unique(),
	}
}

// Indexes of the Instance. At most one instance holds a machine: the
// database itself refuses a second one that is not released or failed,
// whatever the number of API replicas.
func (Instance) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("machine_id").Unique().
			Annotations(entsql.IndexWhere("state IN ('provisioning', 'running', 'releasing')")).
			StorageKey("instance_active_machine"),
		index.Fields("request_id").Unique(),
		index.Fields("state"),
		index.Fields("create_time"),
		// ListInstances' hostname filter.
		index.Fields("hostname"),
	}
}
