// Package e2e holds the end-to-end tests of Carbide's DHCP service: the
// carbide-api and carbide-dhcp binaries, built from this workspace, serve
// real DHCP clients (ISC dhclient, busybox udhcpc), a real relay agent (ISC
// dhcrelay) and a real load generator (Kea's perfdhcp) on virtual links.
//
// Every test builds its own topology of network namespaces, veth pairs and
// bridges, and deletes it, with every process it started, when it ends.
// Links are created inside their namespaces, so the host's network is never
// touched; their addresses come from 198.18.0.0/15 (RFC 2544) and
// 100.64.0.0/10 and exist only inside the tests' namespaces. carbide-api
// listens on the host's 127.0.0.1; a daemon reaches it through a forwarder
// that the test process runs on 127.0.0.1 of the daemon's namespace.
// PostgreSQL comes from pgtest-cluster (backend/pgtest/cmd/pgtest-cluster),
// which honours CARBIDE_TEST_DATABASE_URL.
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
//
// Run them from the workspace root with `go test ./edge/e2e/`.
package e2e
