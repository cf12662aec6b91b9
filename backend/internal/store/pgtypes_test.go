package store

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

func TestUUIDEncodesAsItsBytes(t *testing.T) {
	m := pgtype.NewMap()
	register(m)
	id := uuid.New()
	plan := m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, id)
	if _, ok := plan.(*uuidEncodePlan); !ok {
		t.Fatalf("plan for a uuid.UUID is %T, want *uuidEncodePlan", plan)
	}
	got, err := plan.Encode(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, id[:]) {
		t.Fatalf("encoded %x, want %x", got, id[:])
	}
	// A pointer to one is dereferenced first, then takes the same plan.
	got, err = m.Encode(pgtype.UUIDOID, pgtype.BinaryFormatCode, &id, nil)
	if err != nil || !bytes.Equal(got, id[:]) {
		t.Fatalf("encoded *uuid.UUID as %x, %v; want %x", got, err, id[:])
	}
}
