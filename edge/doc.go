// Package edge is the home of Carbide's edge daemons — DHCP, PXE (TFTP and
// HTTP), DNS and BMC control — and the discovery agent. Each runs on any
// host that reaches the API and calls it over Connect/gRPC; none of them is
// built yet (see docs/architecture.md for the plan).
package edge
