package store

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// registerTypes teaches a connection's pgx the Go types the store passes
// that pgx would otherwise take the slow way.
//
// uuid.UUID, ent's id type, is a driver.Valuer whose value is its text.
// pgx encodes a Valuer by trying that text as a binary uuid, which fails,
// formats an error (fmt.Errorf with the value), parses the text and
// encodes again: a fifth of carbide-api's CPU on the DHCP lease path.
// Sent as the 16 bytes it is, it encodes in one copy.
func registerTypes(_ context.Context, conn *pgx.Conn) error {
	register(conn.TypeMap())
	return nil
}

func register(m *pgtype.Map) {
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{wrapUUIDEncodePlan}, m.TryWrapEncodePlanFuncs...)
}

// wrapUUIDEncodePlan hands a uuid.UUID on as its [16]byte.
func wrapUUIDEncodePlan(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if id, ok := value.(uuid.UUID); ok {
		return &uuidEncodePlan{}, [16]byte(id), true
	}
	return nil, nil, false
}

type uuidEncodePlan struct{ next pgtype.EncodePlan }

func (p *uuidEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode([16]byte(value.(uuid.UUID)), buf)
}
