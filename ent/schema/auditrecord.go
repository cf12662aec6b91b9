package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// AuditRecord is one call of an RPC that can change something: who made
// it, what it named, when, and with which result.
type AuditRecord struct {
	ent.Schema
}

// Fields of the AuditRecord.
func (AuditRecord) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id"),
		field.Time("time").Default(time.Now).Immutable(),
		field.String("principal").Immutable(),
		field.Strings("roles").Default([]string{}).Immutable(),
		field.String("auth_method").Default("").Immutable(),
		field.String("procedure").Immutable(),
		// The ids, code and error can be completed after the call: its
		// record is written in its transaction, before its response
		// names what it created, and a call can fail after a commit.
		field.Strings("resource_ids").Default([]string{}),
		field.String("code"),
		field.String("error").Default(""),
		field.String("peer").Default("").Immutable(),
	}
}

// Indexes of the AuditRecord.
func (AuditRecord) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("principal"),
		index.Fields("procedure"),
		index.Fields("time"),
	}
}
