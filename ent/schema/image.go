package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Image is an operating system image that instances run.
type Image struct {
	ent.Schema
}

// Mixin of the Image.
func (Image) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the Image.
func (Image) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.String("name").MaxLen(63).Immutable(),
		field.String("version").MaxLen(63).Immutable(),
		field.String("description").Default("").MaxLen(1024).Immutable(),
		field.String("architecture").MaxLen(32).Immutable(),
		// Firmware lists "bios" and/or "uefi".
		field.JSON("firmware", []string{}).Immutable(),
		// Boot is how it boots: a binary carbide.instance.v1.Image with
		// only its disk or netboot field set.
		field.Bytes("boot").Immutable(),
		field.Bool("deprecated").Default(false),
	}
}

// Edges of the Image.
func (Image) Edges() []ent.Edge {
	return []ent.Edge{
		// Deleting an image leaves the released and failed instances
		// that used it, with no image.
		edge.To("instances", Instance.Type).
			Annotations(entsql.OnDelete(entsql.SetNull)),
	}
}

// Indexes of the Image: one per name and version.
func (Image) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("name", "version").Unique(),
	}
}
