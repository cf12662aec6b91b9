// Package hardware holds the rules that decide which SMBIOS strings can
// identify a machine. The discovery agent applies them to what it reports,
// and the API to the hardware identity it derives from any report, so both
// sides agree on what is a value and what is a placeholder the firmware
// left unfilled.
package hardware

import (
	"regexp"
	"strings"
)

// placeholders are strings firmware puts in SMBIOS fields nobody filled
// in, in lower case.
var placeholders = map[string]bool{}

func init() {
	for _, s := range []string{
		"To Be Filled By O.E.M.", "To Be Filled By O.E.M", "Default string", "Not Specified",
		"Not Applicable", "Not Available", "Not Present", "N/A", "NA", "None", "Unknown", "Invalid",
		"System Serial Number", "System Product Name", "System manufacturer", "System Version",
		"Base Board Serial Number", "Base Board Product Name", "Chassis Serial Number",
		"Chassis Manufacturer", "Manufacturer", "Product Name", "Serial Number", "SerialNumber", "Serial",
		"Type1ProductConfigId", "O.E.M.", "OEM", "0", "0123456789", "123456789", "1234567890", "12345678",
	} {
		placeholders[strings.ToLower(s)] = true
	}
}

// IsPlaceholder reports whether an SMBIOS string (already trimmed) says
// nothing: empty, a well-known filler (compared without case), or one
// character repeated ("00000000", "FFFFFFFF", "........").
func IsPlaceholder(s string) bool {
	if s == "" || placeholders[strings.ToLower(s)] {
		return true
	}
	return len(s) >= 3 && strings.Count(s, s[:1]) == len(s)
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// placeholderUUIDs are system UUIDs that many boards share.
var placeholderUUIDs = map[string]bool{
	"00000000-0000-0000-0000-000000000000": true,
	"ffffffff-ffff-ffff-ffff-ffffffffffff": true,
	"03000200-0400-0500-0006-000700080009": true, // "To Be Filled By O.E.M." of AMI firmware
	"00020003-0004-0005-0006-000700080009": true, // the same, byte-swapped
	"12345678-1234-5678-90ab-cddeefaabbcc": true,
}

// SystemUUID returns an SMBIOS system UUID in lower case, or "" when it is
// not a UUID or is a well-known placeholder.
func SystemUUID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if !uuidRE.MatchString(s) || placeholderUUIDs[s] {
		return ""
	}
	return s
}
