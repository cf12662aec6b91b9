// Package deploydocs holds the tests that keep the deployment files in
// docs/deploy true: every flag a systemd unit passes exists in its daemon
// and parses, the units, the HAProxy, Patroni and Prometheus
// configurations pass their own programs' checks, HAProxy with the
// documented health check finds a real carbide-api up (and down once it
// stops), and every metric the alert rules and the monitoring docs name
// is one the code registers. It has no code of its own.
package deploydocs
