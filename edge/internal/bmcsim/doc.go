// Package bmcsim runs BMC simulators for tests and benchmarks: a real
// IPMI-over-LAN BMC (OpenIPMI's ipmi_sim, see [StartIPMI]) and a small
// Redfish service written here (see [StartRedfish]), each optionally driving
// a QEMU virtual machine as the machine it manages.
//
// Both record every action that reached the machine (power on, off, reset,
// boot device) in an actions log, so a test can check that an operation
// happened exactly once. Nothing in this package is used by a daemon: it is
// imported only by tests and benchmarks.
package bmcsim
