package hardware

import "testing"

func TestIsPlaceholder(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"": true, "To Be Filled By O.E.M.": true, "to be filled by o.e.m.": true, "default STRING": true,
		"Not Specified": true, "System Serial Number": true, "0123456789": true, "00000000": true,
		"FFFFFFFFFFFF": true, "........": true, "0": true, "N/A": true, "None": true,
		"CB-BIOS-0001": false, "S1": false, "00": false, "1": false, "Dell Inc.": false, "HPE": false,
		"CN7475152B0123": false, "ABBA": false,
	} {
		if got := IsPlaceholder(s); got != want {
			t.Errorf("IsPlaceholder(%q) = %t, want %t", s, got, want)
		}
	}
}

func TestSystemUUID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		" 5B2C6D1E-0000-4000-8000-000000000001\n": "5b2c6d1e-0000-4000-8000-000000000001",
		"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF":    "",
		"":                                        "",
		"00000000-0000-0000-0000-000000000000":    "",
		"03000200-0400-0500-0006-000700080009":    "",
		"garbage":                                 "",
		"{5b2c6d1e-0000-4000-8000-000000000001}":  "",
	} {
		if got := SystemUUID(in); got != want {
			t.Errorf("SystemUUID(%q) = %q, want %q", in, got, want)
		}
	}
}
