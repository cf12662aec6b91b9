package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"github.com/google/uuid"
)

// SegmentCredentials are a network segment's default BMC credentials: the
// BMCs without a username and password of their own whose address is in
// the segment's prefix use them. A segment has at most one set; they go
// with it.
type SegmentCredentials struct {
	ent.Schema
}

// Annotations of the SegmentCredentials: their table's name.
func (SegmentCredentials) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "segment_credentials"}}
}

// Mixin of the SegmentCredentials.
func (SegmentCredentials) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the SegmentCredentials.
func (SegmentCredentials) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("segment_id", uuid.UUID{}).Unique(),
		field.String("username").MaxLen(64),
		// PasswordSealed is the password encrypted under the key
		// PasswordKeyID names (secrets.Keyring, AES-256-GCM, the segment
		// id as associated data).
		field.Bytes("password_sealed").Sensitive(),
		field.String("password_key_id").MaxLen(64),
	}
}

// Edges of the SegmentCredentials.
func (SegmentCredentials) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("segment", Segment.Type).Ref("bmc_credentials").
			Field("segment_id").Unique().Required(),
	}
}
