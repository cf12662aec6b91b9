package dnsd

import (
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// staticRecordsOf returns a segment's static records. The API does not
// send them yet (Segment.dns_records is being added); until it does, no
// segment has any.
func staticRecordsOf(*networkv1.Segment) []StaticRecord { return nil }
