// Package devstack runs all of Carbide on one machine for a newcomer or a
// lab: carbide-api on the embedded store, then carbide-dhcp, carbide-pxe,
// carbide-dns and carbide-bmc with the development PKI, supervised as
// child processes whose output goes to one stream, each line prefixed with
// its component's name (Run). As root and without a named interface it
// first creates a network namespace of its own with a lab bridge in it, so
// the host's networks are never touched; the API is forwarded to the
// host's loopback. RunLab then puts a virtual rack on that bridge: QEMU
// VMs, each powered through an ipmi_sim BMC, registered and booted through
// the API, shown in a live view until they are Ready.
package devstack
