package ipam

import "time"

// HeldUntil is the expiry of a lease held for an instance
// (instances.HoldAddress): while an instance holds a machine, the address
// of its boot interface must not expire, because the installed system
// configures it statically and never asks DHCP again. A renewal never
// shortens a lease that expires later than it would set, a DHCP release
// or decline of a held lease changes nothing, and the hold ends only when
// the instance gives the address back (instances.ReleaseAddress).
var HeldUntil = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// Held reports whether a lease that expires at expire is held for an
// instance.
func Held(expire time.Time) bool {
	return !expire.Before(HeldUntil)
}
