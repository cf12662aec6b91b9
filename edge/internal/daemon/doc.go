// Package daemon is the plumbing Carbide's edge daemons (carbide-dhcp,
// carbide-pxe) share: a command line whose flags environment variables
// also set, the logger, the connection to the Carbide API and the
// Prometheus endpoint. What a daemon serves lives in its own package
// (dhcpd, pxed).
package daemon
