package dnsd

import (
	"testing"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

// StartSeeded runs the daemon against a seeded fake Watch for the tests
// of package dnsd_test (which may import package xfr), waits for the
// sync, and returns its TCP address and a function that changes machine
// m1's address (returning the change's revision).
func StartSeeded(t *testing.T, edit func(*Config)) (tcp string, move func(addr string) int64) {
	f := seeded()
	td := startDaemon(t, f, edit)
	td.synced(t)
	return td.addrs.TCP[0].String(), func(addr string) int64 {
		return f.machine(&machinev1.Machine{Id: "m1", Hostname: "web1", Interfaces: []*machinev1.Interface{{SegmentId: "s1", Address: addr}}})
	}
}
