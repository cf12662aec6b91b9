package agent

import (
	"fmt"
	"strings"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/hardware"
)

// HardwareID derives a machine's identity from its inventory: the SMBIOS
// system UUID when the firmware set a real one, else the first real serial
// number of the system, the chassis and the board. It is "" when the
// firmware gives none; such a machine is known by its MACs alone. What is
// a placeholder is hardware's rule, which the agent applies too.
func HardwareID(inv *machinev1.Inventory) string {
	if u := hardware.SystemUUID(inv.GetSystem().GetUuid()); u != "" {
		return "uuid:" + u
	}
	for _, serial := range []string{
		inv.GetSystem().GetSerial(), inv.GetChassis().GetSerial(), inv.GetBoard().GetSerial(),
	} {
		if serial = strings.TrimSpace(serial); !hardware.IsPlaceholder(serial) {
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
