// Package imaging is the discovery agent's disk work for tenant
// instances: it writes an OS image to a disk (Write), adds a cloud-init
// NoCloud seed partition to the written disk (AddSeed), and wipes disks
// when a machine is released (Wipe).
//
// Every function takes a path: a block device on a machine, or a
// regular file standing in for one in tests. Block-device ioctls that a
// file does not support (ENOTTY) fall back to plain reads and writes.
// The package does not depend on the API's messages; the agent
// translates its instructions into Source, the seed's files and a
// WipeMode.
package imaging
