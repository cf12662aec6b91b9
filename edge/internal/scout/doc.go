// Package scout is Carbide's discovery agent, carbide-scout: PID 1 of the
// discovery image that bare machines network-boot into (package
// initramfs builds the image).
//
// As init it mounts /proc, /sys, /dev, /run and /tmp, then loads the
// image's kernel modules in dependency order, brings up the NIC the
// machine booted from (carbide.mac on the kernel command line) with
// DHCPv4, fetches its configuration (carbide.config, served by the PXE
// daemon; see package agentconfig), takes the hardware inventory and
// reports it with AgentService.ReportInventory, then does what the API
// says: wait and ask again, reboot, or power off. It never exits, as
// the kernel panics when init does: every failure is logged and retried
// with backoff.
//
// With carbide.inventory=print instead of carbide.config it prints the
// inventory to the console as one line, "CARBIDE-INVENTORY <protojson>",
// and powers off; it needs no network then.
//
// The inventory is read from /sys, /proc and /dev below a configurable
// root (Collector), so that tests run it against a fake tree.
package scout
