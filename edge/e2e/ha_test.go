package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Addresses of TestHA's server network (namespace hub, bridge core).
const (
	haDBAddr   = "198.18.12.1" // PostgreSQL
	haLBAddr   = "198.18.12.2" // HAProxy: the API's address for every client
	haOpsAddr  = "198.18.12.3" // the test's own calls and psql
	haAPIName  = "api.carbide.test"
	haAPIPort  = "1079"
	haLeaseDur = 10 * time.Minute
)

// haAPIAddrs are the addresses of the API replicas, haDHCPCore those of
// the DHCP replicas on the server network and haDHCPLink on the DHCP link.
var (
	haAPIAddrs = []string{"198.18.12.11", "198.18.12.12"}
	haDHCPCore = []string{"198.18.12.21", "198.18.12.22"}
	haDHCPLink = []string{"198.18.8.1", "198.18.8.2"}
)

// TestHA runs Carbide in its production shape and breaks it under DHCP
// load:
//
//	                   core (198.18.12.0/24, bridge in namespace hub)
//	db    .1  PostgreSQL, durable defaults (fsync, synchronous_commit on)
//	lb    .2  HAProxy, TLS passthrough, gRPC health checks
//	ops   .3  the test's own API calls and psql
//	api1 .11, api2 .12  carbide-api replicas on the database
//	srv1 .21, srv2 .22  carbide-dhcp replicas, --api-url https://198.18.12.2:1079
//	                   link (198.18.8.0/22, bridge in namespace hub)
//	srv1 198.18.8.1, srv2 198.18.8.2  the DHCP replicas' eth0
//	load 198.18.8.3   perfdhcp, a relay to both replicas
//
// The replicas share one certificate (for the name and address clients
// use, HAProxy's), one client CA, one agent-token key and one secrets
// keyring, made here as an operator's own CA would make them; nothing is
// --dev. While perfdhcp offers 200 DORA exchanges a second for 36 s, the
// API replica that carries a DHCP replica's connection is killed with
// SIGKILL, then PostgreSQL is stopped in immediate mode (as a crash
// would: no shutdown checkpoint, recovery from the WAL at the start) and
// started again on the same data directory, then the killed replica is
// started again.
//
// Every DHCP packet on perfdhcp's link is recorded by a packet socket in
// its namespace (perfdhcp keeps no record of what it was told), with the
// kernel's timestamps. From that record and the database afterwards the
// test checks that DHCP kept answering after the kill (through the other
// API replica, also for the DHCP replica whose connection died), that no
// acknowledged lease is lost (each MAC's last ACK is in the leases table,
// for the same address, expiring no earlier than the client was told:
// the start of its exchange plus option 51), that no address was ever
// acknowledged to a MAC while another MAC held it, that the daemons got
// no internal error (a dead replica and a restarting database are
// unavailable, which clients retry), and that the killed replica
// rejoins: HAProxy's health check sees it serving and a new connection's
// call lands on it (its own request counter grows). Drop rates and
// recovery times are measured and logged, never asserted;
// docs/benchmarks.md has figures.
func TestHA(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "perfdhcp", "psql", "haproxy", "setpriv")
	pgBin := postgresBinDir(t)

	// The topology.
	hub := newNetns(t, "hub")
	db, lb, ops := newNetns(t, "db"), newNetns(t, "lb"), newNetns(t, "ops")
	apiNS := []*netns{newNetns(t, "api1"), newNetns(t, "api2")}
	srvNS := []*netns{newNetns(t, "srv1"), newNetns(t, "srv2")}
	load := newNetns(t, "load")
	var corePorts []string
	attach := func(n *netns, port, dev, cidr string) {
		veth(t, hub, port, n, dev)
		n.addr(t, dev, cidr)
	}
	attach(db, "c-db", "eth0", haDBAddr+"/24")
	attach(lb, "c-lb", "eth0", haLBAddr+"/24")
	attach(ops, "c-ops", "eth0", haOpsAddr+"/24")
	corePorts = append(corePorts, "c-db", "c-lb", "c-ops")
	for i, n := range apiNS {
		port := fmt.Sprintf("c-api%d", i+1)
		attach(n, port, "eth0", haAPIAddrs[i]+"/24")
		corePorts = append(corePorts, port)
	}
	for i, n := range srvNS {
		port := fmt.Sprintf("c-srv%d", i+1)
		attach(n, port, "eth1", haDHCPCore[i]+"/24")
		corePorts = append(corePorts, port)
		attach(n, fmt.Sprintf("l-srv%d", i+1), "eth0", haDHCPLink[i]+"/22")
	}
	attach(load, "l-load", "eth0", "198.18.8.3/22")
	hub.bridge(t, "core", corePorts...)
	hub.bridge(t, "link", "l-srv1", "l-srv2", "l-load")

	// The credentials every replica shares.
	pkiDir := t.TempDir()
	writeHAPKI(t, pkiDir, []string{haAPIName, haLBAddr, haAPIAddrs[0], haAPIAddrs[1]})
	keyLine, err := run(nil, 30*time.Second, bins.api, "secrets-key", "--id", "ha")
	if err != nil {
		t.Fatalf("carbide-api secrets-key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "secrets.keys"), []byte(keyLine), 0o600); err != nil {
		t.Fatal(err)
	}
	testsecret.RegisterFiles(t, filepath.Join(pkiDir, "*.key"))
	if f := strings.Fields(keyLine); len(f) == 2 {
		testsecret.Register(t, f[1])
	} else {
		t.Fatal("carbide-api secrets-key printed no '<id> <key>' line")
	}

	// PostgreSQL, and the database of the API.
	pg := newHAPostgres(t, db, pgBin, tools["setpriv"])
	pg.start(t)
	psql := func(query string) []string {
		t.Helper()
		out, err := run(ops, 30*time.Second, tools["psql"], "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", " ",
			"-d", pg.url("carbide"), "-c", query)
		if err != nil {
			t.Fatalf("psql: %v", err)
		}
		return strings.Split(strings.TrimSpace(out), "\n")
	}
	if _, err := run(ops, 30*time.Second, tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-d", pg.url("postgres"), "-c", "CREATE DATABASE carbide"); err != nil {
		t.Fatalf("create the database: %v", err)
	}

	// The API replicas, one after the other (the first migrates).
	apiArgs := func(i int) []string {
		return []string{bins.api,
			"--listen", net.JoinHostPort(haAPIAddrs[i], haAPIPort),
			"--database-url", pg.url("carbide"),
			"--tls-cert", filepath.Join(pkiDir, "server.crt"), "--tls-key", filepath.Join(pkiDir, "server.key"),
			"--client-ca", filepath.Join(pkiDir, "ca.crt"),
			"--agent-token-key", filepath.Join(pkiDir, "agent-token.key"),
			"--secrets-key-file", filepath.Join(pkiDir, "secrets.keys"),
			"--data-dir", t.TempDir(),
			// perfdhcp's 500 MACs are all new: enrolment limits are
			// another test's subject.
			"--enrol-rate", "0"}
	}
	apis := make([]*proc, len(apiNS))
	for i := range apis {
		apis[i] = startProc(t, apiNS[i], fmt.Sprintf("carbide-api %d", i+1), apiArgs(i)...)
		apis[i].waitOutput(t, listening, 60*time.Second)
	}

	// HAProxy in front of them.
	hap := startHAProxy(t, lb, tools["haproxy"], pkiDir)
	hap.waitStatus(t, "api1", "UP", 30*time.Second)
	hap.waitStatus(t, "api2", "UP", 30*time.Second)

	// The test's client of the API, through HAProxy, as an admin.
	tlsConf := haTLSConfig(t, pkiDir, "admin")
	admin := func() (*carbide.Client, *http.Transport) {
		tr := nsTransport(ops, tlsConf)
		c, err := carbide.New("https://"+net.JoinHostPort(haLBAddr, haAPIPort), carbide.WithHTTPClient(&http.Client{Transport: tr}))
		if err != nil {
			t.Fatal(err)
		}
		return c, tr
	}
	client, tr := admin()
	const first, last = "198.18.8.10", "198.18.11.250"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	segResp, err := client.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "ha", Prefix: "198.18.8.0/22", Gateway: "198.18.8.1",
		Ranges:        []*networkv1.AddressRange{{Start: first, End: last}},
		LeaseDuration: durationpb.New(haLeaseDur),
	}}))
	cancel()
	if err != nil {
		t.Fatalf("CreateSegment through HAProxy: %v", err)
	}
	seg := segResp.Msg.GetSegment()
	// Its connection is closed, so that HAProxy (least connections)
	// spreads the DHCP replicas' connections over both API replicas.
	tr.CloseIdleConnections()

	// The DHCP replicas, through HAProxy.
	dhcps := make([]*daemon, len(srvNS))
	for i, n := range srvNS {
		p := startProc(t, n, fmt.Sprintf("carbide-dhcp %d", i+1), bins.dhcp,
			"--interface", "eth0",
			"--pki-dir", pkiDir,
			"--api-url", "https://"+net.JoinHostPort(haLBAddr, haAPIPort),
			"--metrics-listen", "127.0.0.1:9167",
			"--log-level", "info")
		p.waitOutput(t, regexp.MustCompile(`msg="serving DHCP"`), 30*time.Second)
		dhcps[i] = &daemon{proc: p, ns: n}
	}

	// The load, and the record of every packet perfdhcp sent and got.
	rec := startCapture(t, load, "eth0")
	const rate, clients, period = 200, 500, 36
	type perfResult struct {
		out string
		err error
	}
	perfDone := make(chan perfResult, 1)
	start := time.Now()
	go func() {
		out, err := run(load, 2*period*time.Second, tools["perfdhcp"], "-4", "-l", "eth0",
			"-r", strconv.Itoa(rate), "-R", strconv.Itoa(clients), "-p", strconv.Itoa(period), "-W", "2000000")
		perfDone <- perfResult{out, err}
	}()
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

	// 1. SIGKILL the API replica that carries a DHCP replica's
	// connection (api1 if both do).
	sleepUntil(8 * time.Second)
	sessions := hap.dhcpSessions(t)
	t.Logf("HAProxy sessions of the DHCP replicas before the kill: %v", sessions)
	victim := -1
	for i := range apis {
		if len(sessions[fmt.Sprintf("api%d", i+1)]) > 0 {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatalf("no DHCP replica has a connection through HAProxy 8 s into the load: %v", sessions)
	}
	victimName := fmt.Sprintf("api%d", victim+1)
	var cutOff []netip.Addr // the DHCP replicas whose connection dies, by their DHCP address
	for _, src := range sessions[victimName] {
		cutOff = append(cutOff, netip.MustParseAddr(haDHCPLink[slices.Index(haDHCPCore, src)]))
	}
	tKill := time.Now()
	apis[victim].signal(t, syscall.SIGKILL)
	if err := apis[victim].wait(t, 10*time.Second); err == nil {
		t.Fatalf("%s exited with status 0 after SIGKILL", apis[victim].name)
	}
	hap.waitStatus(t, victimName, "DOWN", 30*time.Second)
	tDown := time.Now()
	t.Logf("killed %s (carrying DHCP replicas %v); HAProxy marked it DOWN after %s", victimName, cutOff, tDown.Sub(tKill).Round(time.Millisecond))

	// 2. PostgreSQL: stopped in immediate mode, started again.
	sleepUntil(18 * time.Second)
	for i, d := range dhcps {
		t.Logf("carbide-dhcp %d before the PostgreSQL restart: %v failed API calls", i+1, d.metric(t, `carbide_dhcp_drops_total{reason="api_error"}`))
	}
	tPGStop := time.Now()
	pg.stopImmediate(t)
	tPGDown := time.Now()
	pg.start(t)
	tPGUp := time.Now()
	t.Logf("PostgreSQL stopped (immediate) in %s, started and recovered in %s", tPGDown.Sub(tPGStop).Round(time.Millisecond),
		tPGUp.Sub(tPGDown).Round(time.Millisecond))

	// 3. The killed replica again: HAProxy's health check sees it, and
	// a call on a new connection lands on it.
	sleepUntil(26 * time.Second)
	tRejoin := time.Now()
	apis[victim] = startProc(t, apiNS[victim], fmt.Sprintf("carbide-api %d again", victim+1), apiArgs(victim)...)
	apis[victim].waitOutput(t, listening, 60*time.Second)
	hap.waitStatus(t, victimName, "UP", 30*time.Second)
	tUp := time.Now()
	t.Logf("%s started again; HAProxy marked it UP after %s", victimName, tUp.Sub(tRejoin).Round(time.Millisecond))
	metricsClient := &http.Client{Timeout: 10 * time.Second, Transport: nsTransport(ops, haTLSConfig(t, pkiDir, ""))}
	victimURL := "https://" + net.JoinHostPort(haAPIAddrs[victim], haAPIPort) + "/metrics"
	before := rpcRequests(t, metricsClient, victimURL)
	landed := false
	for range 5 {
		// A new connection each time: HAProxy picks the replica with
		// the fewest, which is the one that just came back.
		c, tr := admin()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := c.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: seg.GetId()}))
		cancel()
		tr.CloseIdleConnections()
		if err != nil {
			t.Errorf("GetSegment through HAProxy after %s rejoined: %v", victimName, err)
			continue
		}
		if rpcRequests(t, metricsClient, victimURL) > before {
			landed = true
			break
		}
	}
	if !landed {
		t.Errorf("no call through HAProxy landed on %s after it rejoined (its carbide_rpc_requests_total stayed at %v)", victimName, before)
	}

	res := <-perfDone
	var exit *exec.ExitError
	// Exit status 3: some exchanges failed, which is measured below.
	if res.err != nil && !(errors.As(res.err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("perfdhcp: %v", res.err)
	}
	t.Logf("perfdhcp:\n%s", res.out)
	stats := perfdhcpStats(t, res.out)
	packets, dropped, err := rec.stop()
	if err != nil {
		t.Errorf("the packet record: %v", err)
	}
	if dropped > 0 {
		t.Fatalf("the packet socket dropped %d packets: the record of ACKs is incomplete", dropped)
	}
	if ra := stats["REQUEST-ACK"]; ra["rejected leases"] != 0 || stats["DISCOVER-OFFER"]["rejected leases"] != 0 {
		t.Errorf("perfdhcp rejected leases: %d offers, %d acks", stats["DISCOVER-OFFER"]["rejected leases"], ra["rejected leases"])
	}

	h := analyseHA(t, packets)
	if len(h.acks) == 0 {
		t.Fatal("the record holds no DHCPACK")
	}
	for i, d := range dhcps {
		t.Logf("carbide-dhcp %d: %v offers, %v acks, %v naks; API errors: %v unavailable, %v internal, %v deadline_exceeded", i+1,
			d.metric(t, `carbide_dhcp_replies_total{type="offer"}`), d.metric(t, `carbide_dhcp_replies_total{type="ack"}`),
			d.metric(t, `carbide_dhcp_replies_total{type="nak"}`), d.metric(t, `carbide_dhcp_api_errors_total{code="unavailable"}`),
			d.metric(t, `carbide_dhcp_api_errors_total{code="internal"}`), d.metric(t, `carbide_dhcp_api_errors_total{code="deadline_exceeded"}`))
		// A replica that died and a database that restarted are
		// conditions to retry (unavailable), not failures of the API.
		if n := d.metric(t, `carbide_dhcp_api_errors_total{code="internal"}`); n > 0 {
			t.Errorf("carbide-dhcp %d got %v internal errors from the API", i+1, n)
		}
	}

	// DHCP kept answering: ACKs in each phase after the kill, and from
	// each DHCP replica whose API connection died, between the kill and
	// the PostgreSQL restart.
	phases := []struct {
		name     string
		from, to time.Time
	}{
		{"after the kill, before the PostgreSQL restart", tKill, tPGStop},
		{"after the PostgreSQL restart, before the rejoin", tPGUp, tRejoin},
		{"while the killed replica started again and after", tRejoin, time.Now()},
	}
	for _, ph := range phases {
		if n := h.acksBetween(ph.from, ph.to, netip.Addr{}); n == 0 {
			t.Errorf("no DHCPACK %s", ph.name)
		}
	}
	for _, srv := range cutOff {
		n := h.acksBetween(tKill, tPGStop, srv)
		t.Logf("DHCP replica %s, whose API connection died with %s: %d ACKs between the kill and the PostgreSQL restart", srv, victimName, n)
		if n == 0 {
			t.Errorf("DHCP replica %s sent no ACK after its API replica was killed: it did not reconnect through HAProxy", srv)
		}
	}

	// No acknowledged lease is lost, no address was ever held by two
	// MACs: the history against the database.
	h.checkHistory(t)
	rows := psql(fmt.Sprintf(`SELECT mac, address, (extract(epoch FROM expire_time) * 1000000)::bigint FROM leases WHERE segment_id = '%s'`, seg.GetId()))
	inDB := map[string]dbLease{}
	for _, row := range rows {
		f := strings.Fields(row)
		if len(f) != 3 {
			continue
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("psql printed %q", row)
		}
		inDB[f[0]] = dbLease{addr: f[1], expire: time.UnixMicro(us)}
	}
	h.checkDatabase(t, inDB)
	if dup := psql(`SELECT segment_id, address, count(*) FROM leases GROUP BY 1, 2 HAVING count(*) > 1`); len(dup) > 1 || dup[0] != "" {
		t.Errorf("addresses leased more than once in a segment: %v", dup)
	}
	if dup := psql(`SELECT segment_id, mac, count(*) FROM leases GROUP BY 1, 2 HAVING count(*) > 1`); len(dup) > 1 || dup[0] != "" {
		t.Errorf("MACs holding more than one lease in a segment: %v", dup)
	}

	// The figures.
	faults := []haFault{
		{"SIGKILL of " + victimName, tKill},
		{"PostgreSQL stopped (immediate)", tPGStop},
		{"PostgreSQL accepting connections again", tPGUp},
		{victimName + " started again", tRejoin},
	}
	h.report(t, start, faults, stats)
}

// postgresBinDir returns the directory of the PostgreSQL server binaries.
func postgresBinDir(t *testing.T) string {
	t.Helper()
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(found)))
	for _, d := range append(dirs, found...) {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				return d
			}
		}
	}
	t.Fatal("the PostgreSQL server binaries (initdb, postgres) are not installed: apt-get install postgresql")
	return ""
}

// haPostgres is a PostgreSQL server with durable defaults in a namespace,
// run as the postgres user, on a data directory that outlives its
// processes.
type haPostgres struct {
	ns      *netns
	bin     string // the server binaries' directory
	setpriv string // runs them as the postgres user
	dir     string
	proc    *proc
}

var pgReady = regexp.MustCompile(`database system is ready to accept connections`)

// newHAPostgres creates the cluster (initdb) in a new directory owned by
// the postgres user, which trusts connections from the server network.
func newHAPostgres(t *testing.T, n *netns, bin, setpriv string) *haPostgres {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the postgres user, which runs PostgreSQL, does not exist (apt-get install postgresql creates it): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "carbide-ha-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	pg := &haPostgres{ns: n, bin: bin, setpriv: setpriv, dir: dir}
	if out, err := run(nil, 2*time.Minute, setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups",
		filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-instructions"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(dir, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(hba, "host all all %s/24 trust\n", strings.TrimSuffix(haDBAddr, ".1")+".0")
	if cerr := hba.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return pg
}

// url is the URL of database name.
func (pg *haPostgres) url(name string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort(haDBAddr, "5432"),
		Path: "/" + name, RawQuery: "sslmode=disable"}).String()
}

// start starts the server and waits until it accepts connections.
func (pg *haPostgres) start(t *testing.T) {
	t.Helper()
	pg.proc = startProc(t, pg.ns, "postgres", pg.setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups",
		filepath.Join(pg.bin, "postgres"), "-D", filepath.Join(pg.dir, "data"),
		"-c", "listen_addresses="+haDBAddr, "-p", "5432", "-c", "unix_socket_directories="+pg.dir)
	pg.proc.waitOutput(t, pgReady, 60*time.Second)
	// A fast shutdown at the end of the test, before startProc's
	// SIGTERM (a smart shutdown) would wait for the clients.
	p := pg.proc
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
			}
		}
	})
}

// stopImmediate stops the server in immediate mode (SIGQUIT): no
// shutdown checkpoint, so the next start recovers from the WAL, as after
// a crash.
func (pg *haPostgres) stopImmediate(t *testing.T) {
	t.Helper()
	pg.proc.signal(t, syscall.SIGQUIT)
	_ = pg.proc.wait(t, 30*time.Second)
}

// haproxy is a running HAProxy with its runtime API on a unix socket.
type haproxy struct {
	proc   *proc
	socket string
}

// haproxyConfig is HAProxy's configuration of TestHA; the %[n]s are the
// runtime API socket, the frontend address, the CA and the servers.
//
// TLS passes through (mode tcp): the API authenticates the DHCP replicas
// by their client certificates, which it reads from its own TLS handshake
// (docs/api-server.md, "Running several replicas"); HAProxy sees neither
// the certificates nor the calls. Least connections: each DHCP replica
// keeps one HTTP/2 connection, so a new one (after a replica died, or
// the test's own) goes to the replica that has fewest.
//
// The health check is grpc.health.v1.Health/Check itself, over TLS and
// HTTP/2 (check-ssl, check-alpn h2, check-proto h2), called with the
// Connect protocol's unary JSON form, which the API serves for every
// method beside gRPC and gRPC-Web: HAProxy's http-check can match an HTTP
// status and a response body but cannot read gRPC's trailers
// (grpc-status) nor its length-prefixed binary messages. The answer is
// {"status":"SERVING_STATUS_SERVING"}; the check expects that value with its
// quotes, which "SERVING_STATUS_NOT_SERVING" (a replica shutting down)
// does not match. Every 500 ms; two
// failures mark a replica DOWN, two successes UP. A replica whose port
// refuses connections is skipped at once (redispatch), before its check
// fails.
const haproxyConfig = `global
	stats socket %[1]s mode 600 level admin
	stats timeout 10s
	log stdout format short local0 info

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 1s
	timeout client 1h
	timeout server 1h
	retries 3
	option redispatch 1

frontend carbide-api
	bind %[2]s

	default_backend carbide-api

backend carbide-api
	balance leastconn
	option httpchk
	http-check send meth POST uri /grpc.health.v1.Health/Check hdr content-type application/json body {}
	http-check expect string '"SERVING_STATUS_SERVING"'
	default-server check inter 500ms fall 2 rise 2 check-ssl check-alpn h2 check-proto h2 verify required ca-file %[3]s verifyhost %[4]s
%[5]s`

// startHAProxy starts HAProxy in n in front of the API replicas.
func startHAProxy(t *testing.T, n *netns, bin, pkiDir string) *haproxy {
	t.Helper()
	dir := t.TempDir()
	h := &haproxy{socket: filepath.Join(dir, "haproxy.sock")}
	var servers strings.Builder
	for i, a := range haAPIAddrs {
		fmt.Fprintf(&servers, "\tserver api%d %s\n", i+1, net.JoinHostPort(a, haAPIPort))
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, h.socket, net.JoinHostPort(haLBAddr, haAPIPort),
		filepath.Join(pkiDir, "ca.crt"), haAPIName, servers.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(nil, 30*time.Second, bin, "-c", "-f", cfg); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	h.proc = startProc(t, n, "haproxy", bin, "-db", "-f", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(h.socket); err == nil {
			return h
		}
		if h.proc.exited() || time.Now().After(deadline) {
			t.Fatalf("haproxy did not open its runtime API socket:\n%s", tail(h.proc.out.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// command sends a command to HAProxy's runtime API and returns the answer.
func (h *haproxy) command(t *testing.T, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", h.socket, 5*time.Second)
	if err != nil {
		t.Fatalf("HAProxy runtime API: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		t.Fatalf("HAProxy runtime API: %s: %v", cmd, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("HAProxy runtime API: %s: %v", cmd, err)
	}
	return string(b)
}

// status returns the status HAProxy's health check gives each API
// replica, e.g. "UP", "DOWN" or "UP 1/2".
func (h *haproxy) status(t *testing.T) map[string]string {
	t.Helper()
	out := strings.TrimPrefix(h.command(t, "show stat"), "# ")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("HAProxy show stat: %v\n%s", err, out)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	st := map[string]string{}
	for _, r := range recs[1:] {
		if len(r) > col["status"] && r[col["pxname"]] == "carbide-api" && strings.HasPrefix(r[col["svname"]], "api") {
			st[r[col["svname"]]] = r[col["status"]]
		}
	}
	return st
}

// waitStatus waits until HAProxy gives server the status want.
func (h *haproxy) waitStatus(t *testing.T, server, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := h.status(t)
		if st[server] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy did not mark %s %s within %s: %v", server, want, timeout, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var sessLine = regexp.MustCompile(`\bsrc=([0-9.]+):\d+ .*\bbe=carbide-api\b.*\bsrv=(api\d)\b`)

// dhcpSessions returns the DHCP replicas' addresses (on the server
// network) of HAProxy's sessions, by the API replica they go to.
func (h *haproxy) dhcpSessions(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for line := range strings.Lines(h.command(t, "show sess")) {
		if m := sessLine.FindStringSubmatch(line); m != nil && slices.Contains(haDHCPCore, m[1]) {
			out[m[2]] = append(out[m[2]], m[1])
		}
	}
	return out
}

// nsTransport is an HTTP transport (HTTP/2 over TLS) whose connections
// are opened inside namespace n.
func nsTransport(n *netns, conf *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:   conf,
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = nsenter.Do(n.name, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
}

// haTLSConfig trusts the test's CA and, unless role is "", presents
// role's client certificate.
func haTLSConfig(t *testing.T, pkiDir, role string) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if role != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, role+".crt"), filepath.Join(pkiDir, role+".key"))
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf
}

// rpcRequests returns the sum of carbide_rpc_requests_total at url, an
// API replica's /metrics.
func rpcRequests(t *testing.T, c *http.Client, url string) float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "carbide_rpc_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: %q", url, line)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return sum
}

// writeHAPKI writes what an operator's own CA would issue for the API
// replicas: ca.crt, server.crt/key for hosts, the client certificates of
// the DHCP daemons (dhcp.crt/key, as --pki-dir expects them) and of an
// admin (admin.crt/key), and the agent-token signing key.
func writeHAPKI(t *testing.T, dir string, hosts []string) {
	t.Helper()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, "PRIVATE KEY", der, 0o600)
	}
	serial := int64(1)
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "Carbide HA test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.crt", "CERTIFICATE", caDER, 0o644)
	issue := func(base string, tmpl *x509.Certificate) {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		k := newKey()
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(base+".crt", "CERTIFICATE", der, 0o644)
		writeKey(base+".key", k)
	}
	server := &x509.Certificate{Subject: pkix.Name{CommonName: hosts[0]}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	issue("server", server)
	for base, id := range map[string]string{
		"dhcp":  "spiffe://carbide.local/service/dhcp",
		"admin": "spiffe://carbide.local/user/admin/ha-test",
	} {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		issue(base, &x509.Certificate{URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	}
	writeKey("agent-token.key", newKey())
}

// haAck is a DHCPACK of the record, with the start of its exchange.
type haAck struct {
	at     time.Time
	start  time.Time // when the exchange's DISCOVER left (the REQUEST's, if none matched)
	mac    string
	addr   netip.Addr
	server netip.Addr
	lease  time.Duration
}

// haNak is a DHCPNAK of the record.
type haNak struct {
	at                time.Time
	mac               string
	server, requested netip.Addr
}

// haExchange is a DISCOVER of the record and what became of it.
type haExchange struct {
	start time.Time
	acked bool
}

// haHistory is what TestHA's record says.
type haHistory struct {
	exchanges []*haExchange // every DISCOVER perfdhcp sent, in order
	acks      []haAck       // every ACK it got, in order
	naks      []haNak
	unmatched int // ACKs whose REQUEST or offer the record lacks
}

// analyseHA follows each exchange through the record: a DISCOVER (by
// its xid) to the OFFERs it got, an OFFER (by MAC, address and server)
// to the REQUEST that takes it, a REQUEST (by its xid) to its ACK.
func analyseHA(t *testing.T, packets []dhcpPacket) *haHistory {
	t.Helper()
	slices.SortStableFunc(packets, func(a, b dhcpPacket) int { return a.at.Compare(b.at) })
	type offerKey struct {
		mac          string
		addr, server netip.Addr
	}
	type pendingRequest struct {
		at   time.Time
		addr netip.Addr
		ex   *haExchange
	}
	h := &haHistory{}
	discovers := map[dhcpv4.TransactionID]*haExchange{}
	offers := map[offerKey]*haExchange{}
	requests := map[dhcpv4.TransactionID]pendingRequest{}
	for _, p := range packets {
		switch {
		case p.out && p.typ == dhcpv4.MessageTypeDiscover:
			ex := &haExchange{start: p.at}
			discovers[p.xid] = ex
			h.exchanges = append(h.exchanges, ex)
		case !p.out && p.typ == dhcpv4.MessageTypeOffer:
			if ex := discovers[p.xid]; ex != nil {
				offers[offerKey{p.mac, p.yiaddr, p.server}] = ex
			}
		case p.out && p.typ == dhcpv4.MessageTypeRequest:
			requests[p.xid] = pendingRequest{at: p.at, addr: p.requested, ex: offers[offerKey{p.mac, p.requested, p.server}]}
		case !p.out && p.typ == dhcpv4.MessageTypeAck:
			a := haAck{at: p.at, mac: p.mac, addr: p.yiaddr, server: p.server, lease: p.leaseTime}
			req, ok := requests[p.xid]
			switch {
			case !ok:
				h.unmatched++
				a.start = p.at
			case req.ex == nil:
				h.unmatched++
				a.start = req.at
			default:
				req.ex.acked = true
				a.start = req.ex.start
			}
			h.acks = append(h.acks, a)
		case !p.out && p.typ == dhcpv4.MessageTypeNak:
			n := haNak{at: p.at, mac: p.mac, server: p.server}
			if req, ok := requests[p.xid]; ok {
				n.requested = req.addr
			}
			h.naks = append(h.naks, n)
		}
	}
	return h
}

// acksBetween counts the ACKs received in [from, to), from server only
// unless it is the zero address.
func (h *haHistory) acksBetween(from, to time.Time, server netip.Addr) int {
	n := 0
	for _, a := range h.acks {
		if !a.at.Before(from) && a.at.Before(to) && (!server.IsValid() || a.server == server) {
			n++
		}
	}
	return n
}

// longestGap is the longest time in [from, to] without an ACK, to being
// no later than the last ACK of the run.
func (h *haHistory) longestGap(from, to time.Time) time.Duration {
	gap, prev := time.Duration(0), from
	for _, a := range h.acks {
		if a.at.Before(from) {
			continue
		}
		if a.at.After(to) {
			break
		}
		gap = max(gap, a.at.Sub(prev))
		prev = a.at
	}
	return max(gap, to.Sub(prev))
}

// checkHistory checks that no address was acknowledged to a MAC while
// another MAC held it: a MAC holds its address from its ACK until the
// lease it was told ends, or until it is acknowledged another address
// (one lease per MAC and segment). perfdhcp releases nothing.
func (h *haHistory) checkHistory(t *testing.T) {
	t.Helper()
	if h.unmatched > 0 {
		t.Errorf("%d ACKs answer no REQUEST or offer in the record", h.unmatched)
	}
	type hold struct {
		mac   string
		until time.Time
	}
	holder := map[netip.Addr]hold{}
	addrOf := map[string]netip.Addr{}
	moves, conflicts := 0, 0
	for _, a := range h.acks {
		if prev, ok := addrOf[a.mac]; ok && prev != a.addr {
			moves++
			if holder[prev].mac == a.mac {
				delete(holder, prev)
			}
		}
		if cur, ok := holder[a.addr]; ok && cur.mac != a.mac && a.at.Before(cur.until) {
			conflicts++
			if conflicts <= 10 {
				t.Errorf("%s was acknowledged to %s at %s while %s held it until %s",
					a.addr, a.mac, a.at.Format(time.StampMicro), cur.mac, cur.until.Format(time.StampMicro))
			}
		}
		holder[a.addr] = hold{mac: a.mac, until: a.start.Add(a.lease)}
		addrOf[a.mac] = a.addr
	}
	if conflicts > 10 {
		t.Errorf("... %d addresses acknowledged to two MACs in all", conflicts)
	}
	t.Logf("%d ACKs to %d MACs for %d addresses; %d MACs were acknowledged another address than before, %d NAKs",
		len(h.acks), len(addrOf), len(holder), moves, len(h.naks))
}

// dbLease is a row of the leases table.
type dbLease struct {
	addr   string
	expire time.Time
}

// checkDatabase checks each MAC's last ACK against its lease in the
// database: the same address, expiring no earlier than the client was
// told. A client counts its lease from when its exchange began (RFC 2131
// 4.4.1 counts from its REQUEST; the API may have decided at the
// DISCOVER, whose offer the daemon acknowledges), so the lease must last
// at least until that start plus option 51. The API decides after the
// exchange began, and option 51 is truncated to whole seconds, so a
// lease that ends earlier was shortened, or lost, after the ACK.
func (h *haHistory) checkDatabase(t *testing.T, inDB map[string]dbLease) {
	t.Helper()
	last := map[string]haAck{}
	for _, a := range h.acks {
		last[a.mac] = a
	}
	lost := 0
	for mac, a := range last {
		l, ok := inDB[mac]
		var why string
		switch {
		case !ok:
			why = "no lease in the database"
		case l.addr != a.addr.String():
			why = "the database leases " + l.addr + " to it"
		case l.expire.Before(a.start.Add(a.lease)):
			why = fmt.Sprintf("its lease in the database ends at %s, %s before the ACK said", l.expire.Format(time.StampMicro),
				a.start.Add(a.lease).Sub(l.expire))
		default:
			continue
		}
		lost++
		if lost <= 10 {
			t.Errorf("%s was acknowledged %s (lease %s) at %s by %s, but %s", mac, a.addr, a.lease, a.at.Format(time.StampMicro), a.server, why)
		}
	}
	if lost > 10 {
		t.Errorf("... %d acknowledged leases lost in all", lost)
	}
	t.Logf("the database holds %d leases of the segment; the last ACK of each of %d MACs matches one", len(inDB), len(last)-lost)
}

// haFault is an event of TestHA's run.
type haFault struct {
	name string
	at   time.Time
}

// report logs the figures: drop rates over the run and around each
// fault, and the time until the ACK rate was back after each.
func (h *haHistory) report(t *testing.T, start time.Time, faults []haFault, stats map[string]map[string]int) {
	t.Helper()
	dropped := func(from, to time.Time) (sent, unanswered int) {
		for _, ex := range h.exchanges {
			if !ex.start.Before(from) && ex.start.Before(to) {
				sent++
				if !ex.acked {
					unanswered++
				}
			}
		}
		return sent, unanswered
	}
	pct := func(part, whole int) string {
		if whole == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f %%", 100*float64(part)/float64(whole))
	}
	var b strings.Builder
	end := start.Add(time.Hour)
	if n := len(h.exchanges); n > 0 {
		end = h.exchanges[n-1].start.Add(time.Nanosecond)
	}
	sent, lost := dropped(start, end)
	do, ra := stats["DISCOVER-OFFER"], stats["REQUEST-ACK"]
	fmt.Fprintf(&b, "whole run: %d DISCOVERs sent, %d without an ACK (%s); perfdhcp: %d DISCOVERs, %d OFFERs, %d REQUESTs, %d ACKs\n",
		sent, lost, pct(lost, sent), do["sent packets"], do["received packets"], ra["sent packets"], ra["received packets"])
	// The ACK rate before the first fault is the baseline.
	base := float64(h.acksBetween(faults[0].at.Add(-5*time.Second), faults[0].at, netip.Addr{})) / 5
	fmt.Fprintf(&b, "ACK rate in the 5 s before the first fault: %.0f/s; longest gap between ACKs there: %s\n",
		base, h.longestGap(faults[0].at.Add(-5*time.Second), faults[0].at).Round(time.Millisecond))
	for _, n := range h.naks {
		var before netip.Addr
		for _, a := range h.acks {
			if a.mac == n.mac && a.at.Before(n.at) {
				before = a.addr
			}
		}
		fmt.Fprintf(&b, "NAK at %.3f s from %s to %s, which asked for %s and was last acknowledged %s\n",
			n.at.Sub(start).Seconds(), n.server, n.mac, n.requested, before)
	}
	fmt.Fprintf(&b, "| event | at (s) | DISCOVERs in the 5 s after | without an ACK | longest gap between ACKs in the 10 s after | ACK rate back (≥ 90 %% of %.0f/s in a 1 s window) after |\n", base)
	for _, f := range faults {
		s, l := dropped(f.at, f.at.Add(5*time.Second))
		to := f.at.Add(10 * time.Second)
		if last := h.acks[len(h.acks)-1].at; last.Before(to) {
			to = last
		}
		gap := h.longestGap(f.at, to)
		back := "not within 10 s"
		for d := time.Duration(0); d <= 10*time.Second; d += 100 * time.Millisecond {
			if float64(h.acksBetween(f.at.Add(d), f.at.Add(d+time.Second), netip.Addr{})) >= 0.9*base {
				back = d.String()
				break
			}
		}
		fmt.Fprintf(&b, "| %s | %.1f | %d | %d (%s) | %s | %s |\n", f.name, f.at.Sub(start).Seconds(), s, l, pct(l, s),
			gap.Round(time.Millisecond), back)
	}
	t.Logf("figures:\n%s", b.String())
}
