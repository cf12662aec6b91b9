package apiserver

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// TestLeaseAdmission runs the API with one lease call slot. A call held in
// it by a database lock teaches the server that a call takes at least a
// second; with the slot held again and a call without a deadline waiting,
// a Lease whose caller waits two seconds cannot be answered in time (it
// would wait for two calls, then decide: three seconds or more), so it is
// refused at once with resource_exhausted naming --max-lease-calls,
// counted, and leaves no audit record. The waiting call gets its lease
// once the slot is free.
func TestLeaseAdmission(t *testing.T) {
	t.Parallel()
	for _, kind := range stores {
		protocol := map[string]string{"postgres": "grpc", "embedded": "connect"}[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, kind, protocol, envOptions{configure: func(c *Config) { c.MaxLeaseCalls = 1 }})
			createSegment(t, e, &networkv1.Segment{
				Name: "admission", Prefix: "10.40.0.0/24", Gateway: "10.40.0.1", RelayAddresses: []string{"192.0.2.90"},
				Ranges: []*networkv1.AddressRange{{Start: "10.40.0.10", End: "10.40.0.250"}},
			})
			c := e.as(t, "dhcp")
			lease := func(ctx context.Context, mac string) <-chan error {
				ch := make(chan error, 1)
				go func() {
					_, err := c.DHCP.Lease(ctx, connect.NewRequest(&dhcpv1.LeaseRequest{Mac: mac, Origin: &dhcpv1.Origin{RelayAddress: "192.0.2.90"}}))
					ch <- err
				}()
				return ch
			}

			release := blockLeases(t, e)
			first := lease(t.Context(), "02:00:00:40:00:01")
			waitMetric(t, e, "carbide_dhcp_lease_calls_in_flight", 1)
			time.Sleep(time.Second) // the call holds its slot at least this long
			release()
			if err := <-first; err != nil {
				t.Fatalf("the first Lease: %v", err)
			}

			release = blockLeases(t, e)
			defer release()
			holder := lease(t.Context(), "02:00:00:40:00:02")
			waitMetric(t, e, "carbide_dhcp_lease_calls_in_flight", 1)
			patient := lease(t.Context(), "02:00:00:40:00:03") // no deadline: waits
			waitMetric(t, e, "carbide_dhcp_lease_calls_queued", 1)

			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			err := <-lease(ctx, "02:00:00:40:00:04")
			cancel()
			if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-lease-calls") {
				t.Fatalf("Lease with a deadline the API cannot meet: %v; want resource_exhausted naming --max-lease-calls", err)
			}
			if n := metricValue(t, e, `carbide_dhcp_lease_calls_refused_total{reason="deadline"}`); n != 1 {
				t.Errorf(`carbide_dhcp_lease_calls_refused_total{reason="deadline"} = %v, want 1`, n)
			}

			release()
			for name, ch := range map[string]<-chan error{"the call holding the slot": holder, "the waiting call": patient} {
				if err := <-ch; err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			waitMetric(t, e, "carbide_dhcp_lease_calls_in_flight", 0)
			waitMetric(t, e, "carbide_dhcp_lease_calls_queued", 0)
			for _, r := range auditRecords(t, e, "/carbide.dhcp.v1.DHCPService/Lease") {
				if r.Code != "ok" {
					t.Errorf("audit record of a %s Lease; a refused call must leave none", r.Code)
				}
			}
			if n := metricValue(t, e, `carbide_audit_calls_not_recorded_total{code="resource_exhausted",procedure="/carbide.dhcp.v1.DHCPService/Lease"}`); n != 1 {
				t.Errorf("refused Lease calls counted as not recorded: %v, want 1", n)
			}
		})
	}
}

// TestConfigRejectsNegativeMaxLeaseCalls checks --max-lease-calls with
// the rest of the configuration.
func TestConfigRejectsNegativeMaxLeaseCalls(t *testing.T) {
	t.Parallel()
	cfg := Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), InsecurePlaintext: true, MaxLeaseCalls: -1}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "max-lease-calls: must be 0") {
		t.Errorf("Validate() = %v, want it to say max-lease-calls must be 0 or more", err)
	}
}

// blockLeases holds a lock that stops every lease call at its first use of
// the leases table (PostgreSQL), or the embedded store's one connection,
// until the returned function is called.
func blockLeases(t *testing.T, e *env) (release func()) {
	t.Helper()
	tx, err := e.Store.DB().BeginTx(t.Context(), &sql.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Store.Dialect == "postgres" {
		if _, err := tx.ExecContext(t.Context(), "LOCK TABLE leases IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
	}
	released := false
	return func() {
		if !released {
			released = true
			_ = tx.Rollback()
		}
	}
}

// waitMetric waits until the server's /metrics shows sample at want.
func waitMetric(t *testing.T, e *env, sample string, want float64) {
	t.Helper()
	for metricValue(t, e, sample) != want {
		if t.Context().Err() != nil {
			t.Fatalf("%s never reached %v", sample, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
