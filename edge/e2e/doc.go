// Package e2e holds the end-to-end tests of Carbide's edge: the
// carbide-api, carbide-dhcp and carbide-pxe binaries, built from this
// workspace, serve real DHCP clients (ISC dhclient, busybox udhcpc), a real
// relay agent (ISC dhcrelay) and a real load generator (Kea's perfdhcp) on
// virtual links, and real firmware: QEMU VMs with legacy BIOS and iPXE, and
// with UEFI (OVMF) whose own PXE client fetches iPXE over TFTP, boot the
// discovery image (scout_test.go builds it from the kernel package that
// scripts/fetch-kernel unpacked) and become Ready machines. In the identity
// test, carbide-scout runs as a process in hosts' own namespaces, each with
// a real lease, one of them claiming the other's hardware.
//
// Every test builds its own topology of network namespaces, veth pairs and
// bridges, and deletes it, with every process it started, when it ends.
// Links are created inside their namespaces, so the host's network is never
// touched; their addresses come from 198.18.0.0/15 (RFC 2544) and
// 100.64.0.0/10 and exist only inside the tests' namespaces. carbide-api
// listens on the host's 127.0.0.1; a daemon reaches it through a forwarder
// that the test process runs on 127.0.0.1 of the daemon's namespace. In the
// boot test the API runs in the lab namespace itself, where the VMs' agents
// reach it.
// The DNS test (dns_test.go) runs on the host's loopback instead: two
// carbide-dns replicas, built on first use, checked with dig and kdig, BIND
// as their secondary and unbound as a resolver in front of them.
// PostgreSQL comes from pgtest-cluster (backend/pgtest/cmd/pgtest-cluster),
// which honours CARBIDE_TEST_DATABASE_URL, except in the HA test
// (ha_test.go), which runs a durable server of its own in a namespace,
// with two API replicas behind HAProxy, and stops and starts it.
//
// The tests need root (for ip netns) and these Debian packages; a test
// whose program is missing fails and names the package to install:
//
//	iproute2            ip
//	isc-dhcp-client     dhclient
//	isc-dhcp-relay      dhcrelay
//	busybox-static      busybox (udhcpc, ping)
//	kea-admin           perfdhcp
//	postgresql          initdb, postgres (unless CARBIDE_TEST_DATABASE_URL is set)
//	postgresql-client   psql
//	haproxy             haproxy, in front of the API replicas of TestHA
//	util-linux          setpriv, which runs TestHA's PostgreSQL as postgres
//	qemu-system-x86     qemu-system-x86_64 (with ipxe-qemu, its NIC ROMs)
//	ipxe                undionly.kpxe, snponly.efi, served over TFTP
//	ovmf                UEFI firmware
//	radvd               router advertisements, without which iPXE waits for IPv6
//	mount               losetup: a loop device for the disk imaging test
//	fdisk, util-linux   sfdisk, blkid, wipefs: the imaging fixtures and checks,
//	                    and the cloud-init seed partition of the OS image test
//	dosfstools, mtools  mkfs.fat and mcopy, which make the seed's FAT
//	bind9-dnsutils      dig
//	knot-dnsutils       kdig
//	bind9, unbound      named (a secondary of carbide-dns), unbound (a resolver)
//	knot, dnsperf       knotd and dnsperf, for BenchmarkDNS only
//
// and terraform (1.11 or later, from HashiCorp's apt repository, or named
// in TF_ACC_TERRAFORM_PATH), with which the instance test applies and
// destroys the Terraform provider's example configuration,
// and the kernel packages of the discovery image, unpacked by
// scripts/fetch-kernel (the one step that downloads, at install time):
// Debian's cloud kernel in .build/kernel, and its generic kernel, whose
// IPMI drivers the in-band BMC enrolment test needs, in
// .build/kernel-generic (scripts/fetch-kernel .build/kernel-generic
// generic). The OS image test boots the Debian disk image that
// scripts/build-os-image builds with mmdebstrap into .build/os-image
// (or $CARBIDE_OS_IMAGE_DIR), after writing it onto a disk with a
// cloud-init seed as the discovery agent does, and logs into it over SSH.
//
// Run them from the workspace root with `go test ./edge/e2e/`.
package e2e
