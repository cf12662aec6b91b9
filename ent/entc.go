//go:build ignore

// entc.go generates the ent client from ./schema.
package main

import (
	"bytes"
	"log"
	"os"

	"entgo.io/ent/entc"
	"entgo.io/ent/entc/gen"
)

// attempts bounds how often generation runs until tx.go has its imports.
const attempts = 5

func main() {
	for i := 1; ; i++ {
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
		// ent's templates leave the database/sql import of tx.go (for
		// sql/execquery) to goimports, which reads the package's other
		// files while they are being written, and now and then drops it
		// (https://github.com/ent/ent/issues/4513). Generate again then.
		tx, err := os.ReadFile("tx.go")
		if err != nil {
			log.Fatalf("read the generated tx.go: %v", err)
		}
		if bytes.Contains(tx, []byte(`stdsql "database/sql"`)) {
			return
		}
		if i == attempts {
			log.Fatalf("generate ent code: tx.go lacks the database/sql import after %d attempts", attempts)
		}
		log.Printf("ent/tx.go came out without its database/sql import; generating again")
	}
}
