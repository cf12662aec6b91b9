package inventory

import (
	"fmt"
	"strings"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
)

// placeholderUUIDs are system UUIDs that firmware reports when it has none
// of its own; many boxes share each, so none identifies a machine.
var placeholderUUIDs = map[string]bool{
	"00000000-0000-0000-0000-000000000000": true,
	"ffffffff-ffff-ffff-ffff-ffffffffffff": true,
	"03000200-0400-0500-0006-000700080009": true, // common in AMI firmware
	"12345678-1234-5678-90ab-cddeefaabbcc": true,
}

// placeholderSerials are serial numbers that firmware leaves unset in
// practice; compared in lower case.
var placeholderSerials = map[string]bool{
	"":                         true,
	"0":                        true,
	"none":                     true,
	"n/a":                      true,
	"na":                       true,
	"not specified":            true,
	"not applicable":           true,
	"not available":            true,
	"default string":           true,
	"to be filled by o.e.m.":   true,
	"system serial number":     true,
	"chassis serial number":    true,
	"base board serial number": true,
	"0123456789":               true,
	"1234567890":               true,
	"123456789":                true,
	"serial":                   true,
}

// HardwareID derives a machine's identity from its inventory: the SMBIOS
// system UUID when the firmware set a real one, else the first real serial
// number of the system, the chassis and the board. It is "" when the
// firmware gives none; such a machine is known by its MACs alone.
func HardwareID(inv *machinev1.Inventory) string {
	if u, err := uuid.Parse(inv.GetSystem().GetUuid()); err == nil {
		s := u.String()
		if !placeholderUUIDs[s] {
			return "uuid:" + s
		}
	}
	for _, serial := range []string{
		inv.GetSystem().GetSerial(), inv.GetChassis().GetSerial(), inv.GetBoard().GetSerial(),
	} {
		serial = strings.TrimSpace(serial)
		if !placeholderSerials[strings.ToLower(serial)] {
			return "serial:" + serial
		}
	}
	return ""
}

// checkHardware lists what keeps a machine with this inventory from being
// Ready: Carbide provisions an operating system onto a local disk, so a
// machine needs processors, memory, a disk and a network interface.
func checkHardware(inv *machinev1.Inventory) []string {
	var problems []string
	if inv.GetCpu().GetThreads() == 0 {
		problems = append(problems, "no processors reported")
	}
	if inv.GetMemoryBytes() == 0 {
		problems = append(problems, "no memory reported")
	}
	var disk bool
	for _, d := range inv.GetDisks() {
		if d.GetSizeBytes() > 0 {
			disk = true
		}
	}
	if !disk {
		problems = append(problems, "no disk with a size reported")
	}
	if len(inv.GetNics()) == 0 {
		problems = append(problems, "no network interface reported")
	}
	return problems
}

// summary describes the hardware in one line, for the state history.
func summary(inv *machinev1.Inventory) string {
	var disk uint64
	for _, d := range inv.GetDisks() {
		disk += d.GetSizeBytes()
	}
	return fmt.Sprintf("%d CPUs, %s memory, %d disks (%s), %d NICs",
		inv.GetCpu().GetThreads(), bytesIEC(inv.GetMemoryBytes()), len(inv.GetDisks()), bytesIEC(disk), len(inv.GetNics()))
}

func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
