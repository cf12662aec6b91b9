package agent

import (
	"testing"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

func TestHardwareID(t *testing.T) {
	t.Parallel()
	inv := func(uuid, system, chassis, board string) *machinev1.Inventory {
		return &machinev1.Inventory{
			System:  &machinev1.SystemInfo{Uuid: uuid, Serial: system},
			Chassis: &machinev1.ChassisInfo{Serial: chassis},
			Board:   &machinev1.BoardInfo{Serial: board},
		}
	}
	tests := map[string]struct {
		inv  *machinev1.Inventory
		want string
	}{
		"uuid first":                 {inv("5B2C6D1E-0000-4000-8000-000000000001", "S1", "C1", "B1"), "uuid:5b2c6d1e-0000-4000-8000-000000000001"},
		"zero uuid, system serial":   {inv("00000000-0000-0000-0000-000000000000", " S1 ", "C1", "B1"), "serial:S1"},
		"AMI placeholder uuid":       {inv("03000200-0400-0500-0006-000700080009", "", "C1", "B1"), "serial:C1"},
		"placeholder serials":        {inv("", "To Be Filled By O.E.M.", "Default string", "B1"), "serial:B1"},
		"nothing usable":             {inv("ffffffff-ffff-ffff-ffff-ffffffffffff", "Not Specified", "0123456789", "none"), ""},
		"empty inventory":            {&machinev1.Inventory{}, ""},
		"unparseable uuid, a serial": {inv("garbage", "S9", "", ""), "serial:S9"},
	}
	for name, tt := range tests {
		if got := HardwareID(tt.inv); got != tt.want {
			t.Errorf("%s: HardwareID = %q, want %q", name, got, tt.want)
		}
	}
}

func TestCheckHardware(t *testing.T) {
	t.Parallel()
	good := &machinev1.Inventory{
		Cpu: &machinev1.CPUInfo{Threads: 1}, MemoryBytes: 1 << 30,
		Disks: []*machinev1.Disk{{Name: "vda", SizeBytes: 1 << 30}}, Nics: []*machinev1.NIC{{Mac: "52:54:00:00:00:01"}},
	}
	if p := checkHardware(good); len(p) != 0 {
		t.Errorf("a complete machine fails: %v", p)
	}
	if p := checkHardware(&machinev1.Inventory{Disks: []*machinev1.Disk{{Name: "sr0"}}}); len(p) != 4 {
		t.Errorf("an empty inventory fails %d checks (%v), want 4", len(p), p)
	}
}
