package dnsd

import (
	"strings"

	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// staticRecordsOf returns a segment's static records (Segment.dns_records)
// with their types as the zone file names them (CNAME, TXT, SRV).
func staticRecordsOf(s *networkv1.Segment) []StaticRecord {
	recs := s.GetDnsRecords()
	if len(recs) == 0 {
		return nil
	}
	out := make([]StaticRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, StaticRecord{
			Name:  r.GetName(),
			Type:  strings.TrimPrefix(r.GetType().String(), "DNS_RECORD_TYPE_"),
			TTL:   r.GetTtl(),
			Value: r.GetValue(),
		})
	}
	return out
}
