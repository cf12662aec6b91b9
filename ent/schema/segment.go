package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"github.com/google/uuid"
)

// AddressRange is an inclusive range of IPv4 addresses, stored in canonical
// dotted form.
type AddressRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// DNSRecord is a static DNS record of a segment's domain, checked and in
// canonical form: Name relative to the domain ("" for the apex), Type one
// of "CNAME", "TXT", "SRV", TTL in seconds (0: the DNS daemon's default),
// Value in presentation format.
type DNSRecord struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	TTL   uint32 `json:"ttl,omitempty"`
	Value string `json:"value"`
}

// Segment is an IPv4 network with its pools and the DHCP options handed out
// on it. Overlap between segments is checked under a database lock when a
// segment is created.
type Segment struct {
	ent.Schema
}

// Mixin of the Segment.
func (Segment) Mixin() []ent.Mixin {
	return []ent.Mixin{TimeMixin{}}
}

// Fields of the Segment.
func (Segment) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New),
		field.String("name").Unique().MaxLen(63),
		field.String("prefix").Immutable().MaxLen(18),
		field.String("gateway").Default("").MaxLen(15),
		field.Strings("dns_servers").Default([]string{}),
		field.String("domain").Default("").MaxLen(253),
		field.Int("mtu").Default(1500),
		field.JSON("ranges", []AddressRange{}).Default([]AddressRange{}),
		field.Strings("relay_addresses").Default([]string{}),
		field.Strings("ntp_servers").Default([]string{}),
		field.Int64("lease_seconds").Default(3600),
		// The SQL default fills the column of segments created before it.
		field.JSON("dns_records", []DNSRecord{}).Default([]DNSRecord{}).
			Annotations(entsql.Default("[]")),
	}
}

// Edges of the Segment.
func (Segment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("reservations", Reservation.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("leases", Lease.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("nics", NIC.Type),
		edge.To("declined", DeclinedAddress.Type).
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("bmc_credentials", SegmentCredentials.Type).Unique().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}
