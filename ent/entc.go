//go:build ignore

// entc.go generates the ent client from ./schema.
package main

import (
	"log"

	"entgo.io/ent/entc"
	"entgo.io/ent/entc/gen"
)

func main() {
	err := entc.Generate("./schema", &gen.Config{
		Features: []gen.Feature{
			gen.FeatureUpsert,
			gen.FeatureVersionedMigration,
			gen.FeatureLock,
			gen.FeatureExecQuery,
		},
	})
	if err != nil {
		log.Fatalf("generate ent code: %v", err)
	}
}
