package e2e

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// localLink is the usual topology of a test on one link: the daemon's
// namespace "srv" with srv0 at 198.18.1.1/24, a client namespace "cli"
// with cli0 (whose MAC is mac) at the other end of a veth, an API on the
// embedded store with segment "local" (198.18.1.0/24, pool .100-.199)
// plus extra, and carbide-dhcp serving srv0.
type localLink struct {
	srv, cli *netns
	api      *api
	seg      *networkv1.Segment
	daemon   *daemon
	mac      string
}

func newLocalLink(t *testing.T, mac string, edit func(*networkv1.Segment)) *localLink {
	t.Helper()
	l := &localLink{srv: newNetns(t, "srv"), cli: newNetns(t, "cli"), mac: mac}
	veth(t, l.srv, "srv0", l.cli, "cli0")
	l.srv.addr(t, "srv0", "198.18.1.1/24")
	l.cli.mac(t, "cli0", mac)
	l.api = startAPI(t, "")
	seg := &networkv1.Segment{
		Name: "local", Prefix: "198.18.1.0/24", Gateway: "198.18.1.1",
		Ranges:        []*networkv1.AddressRange{{Start: "198.18.1.100", End: "198.18.1.199"}},
		LeaseDuration: durationpb.New(time.Minute),
	}
	if edit != nil {
		edit(seg)
	}
	l.seg = l.api.createSegment(t, seg)
	l.daemon = startDaemon(t, l.api, l.srv, "debug", "srv0")
	return l
}

// inRange reports whether addr lies in [start, end].
func inRange(addr, start, end string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	return netip.MustParseAddr(start).Compare(a) <= 0 && a.Compare(netip.MustParseAddr(end)) <= 0
}

// checkBound checks that a client's address is a live lease of its MAC
// on the segment and is configured on its interface, and returns the lease.
func checkBound(t *testing.T, a *api, segID, mac string, n *netns, dev, addr string) *networkv1.Lease {
	t.Helper()
	l := a.lease(t, segID, mac)
	if l == nil || l.GetAddress() != addr {
		t.Fatalf("the API's lease of %s is %v; the client bound %s", mac, l, addr)
	}
	if !l.GetExpireTime().AsTime().After(time.Now()) {
		t.Errorf("lease %v of a bound client has expired", l)
	}
	if got := n.addresses(t, dev); len(got) != 1 || !strings.HasPrefix(got[0], addr+"/") {
		t.Errorf("%s in %s has addresses %v, want %s only", dev, n.name, got, addr)
	}
	return l
}

// checkReleased checks that mac's lease on the segment has ended: listed
// with include_expired, expired, and absent from the default list.
func checkReleased(t *testing.T, a *api, segID, mac, addr string) {
	t.Helper()
	var l *networkv1.Lease
	deadline := time.Now().Add(10 * time.Second)
	for {
		// DHCPRELEASE gets no answer: poll until the daemon has passed
		// it on.
		l = a.lease(t, segID, mac)
		if l != nil && !l.GetExpireTime().AsTime().After(time.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s after the release: %v, want it expired", mac, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l.GetAddress() != addr {
		t.Errorf("released lease of %s holds %s, want %s", mac, l.GetAddress(), addr)
	}
	resp := listLive(t, a, segID)
	for _, live := range resp {
		if live.GetMac() == mac {
			t.Errorf("ListLeases without include_expired still lists %v", live)
		}
	}
}

func listLive(t *testing.T, a *api, segID string) []*networkv1.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []*networkv1.Lease
	for l, err := range a.client.AllLeases(ctx, &networkv1.ListLeasesRequest{SegmentId: segID}) {
		if err != nil {
			t.Fatalf("ListLeases: %v", err)
		}
		out = append(out, l)
	}
	return out
}

// ping checks that the client reaches addr from its leased address.
func ping(t *testing.T, tools map[string]string, n *netns, addr string) {
	t.Helper()
	if out, err := run(n, 15*time.Second, tools["busybox"], "ping", "-c", "1", "-W", "3", addr); err != nil {
		t.Errorf("ping %s from %s: %v\n%s", addr, n.name, err, out)
	}
}

// TestDhclient: ISC dhclient gets an address from the segment's pool,
// renews it by unicast (RENEWING, T1 shortened on the client side),
// reboots into it (INIT-REBOOT, a second dhclient run on the same lease
// file) and releases it (dhclient -r).
func TestDhclient(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tools := lookPaths(t, "ip", "dhclient", "busybox")
	const mac = "02:00:5e:10:00:01"
	l := newLocalLink(t, mac, nil)

	c := newDhclient(t, tools, l.cli, "cli0", 2*time.Second)
	c.start(t)
	bound := c.waitEvent(t, 0, "BOUND")
	if !inRange(bound.ip, "198.18.1.100", "198.18.1.199") || bound.mask != "255.255.255.0" ||
		bound.router != "198.18.1.1" || bound.server != "198.18.1.1" {
		t.Fatalf("dhclient bound %+v; want an address of 198.18.1.100-199, mask /24, router and server 198.18.1.1", bound)
	}
	first := checkBound(t, l.api, l.seg.GetId(), mac, l.cli, "cli0", bound.ip)
	ping(t, tools, l.cli, "198.18.1.1")

	// RENEWING: a unicast DHCPREQUEST with ciaddr, to the server.
	renew := c.waitEvent(t, c.events.count(t), "RENEW")
	if renew.ip != bound.ip {
		t.Fatalf("renewal moved the client from %s to %s", bound.ip, renew.ip)
	}
	renewed := checkBound(t, l.api, l.seg.GetId(), mac, l.cli, "cli0", bound.ip)
	if !renewed.GetRenewTime().AsTime().After(first.GetRenewTime().AsTime()) {
		t.Errorf("renew_time did not move on renewal: %v then %v", first.GetRenewTime().AsTime(), renewed.GetRenewTime().AsTime())
	}
	if !strings.Contains(c.proc.out.String(), "DHCPREQUEST for "+bound.ip+" on cli0 to 198.18.1.1 port 67") {
		t.Errorf("dhclient did not renew by unicast to the server:\n%s", c.proc.out)
	}
	if got := l.daemon.metric(t, `carbide_dhcp_replies_total{type="nak"}`); got != 0 {
		t.Errorf("the daemon sent %v NAKs", got)
	}

	// INIT-REBOOT: dhclient dies without releasing; a new run asks for
	// its address from the lease file, and gets it.
	c.kill(t)
	n := c.events.count(t)
	c.start(t)
	reboot := c.waitEvent(t, n, "REBOOT", "BOUND")
	if reboot.reason != "REBOOT" || reboot.ip != bound.ip {
		t.Fatalf("after a restart dhclient reported %+v, want REBOOT with %s", reboot, bound.ip)
	}

	// Release: dhclient -r stops the running client and sends DHCPRELEASE.
	before := c.events.count(t)
	c.release(t)
	c.proc.wait(t, 10*time.Second)
	c.events.waitEvent(t, nil, before, []string{"RELEASE"}, nil, 10*time.Second)
	checkReleased(t, l.api, l.seg.GetId(), mac, bound.ip)
	if got := l.cli.addresses(t, "cli0"); len(got) != 0 {
		t.Errorf("cli0 still has %v after the release", got)
	}
}

// TestUdhcpc: busybox udhcpc gets an address, renews it on SIGUSR1
// (unicast) and releases it on SIGUSR2.
func TestUdhcpc(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tools := lookPaths(t, "ip", "busybox")
	const mac = "02:00:5e:10:00:02"
	l := newLocalLink(t, mac, nil)

	c := newUdhcpc(t, tools, l.cli, "cli0")
	c.start(t)
	bound := c.waitEvent(t, 0, "bound")
	if !inRange(bound.ip, "198.18.1.100", "198.18.1.199") || bound.mask != "24" || bound.router != "198.18.1.1" || bound.server != "198.18.1.1" {
		t.Fatalf("udhcpc bound %+v; want an address of 198.18.1.100-199, /24, router and server 198.18.1.1", bound)
	}
	first := checkBound(t, l.api, l.seg.GetId(), mac, l.cli, "cli0", bound.ip)
	ping(t, tools, l.cli, "198.18.1.1")

	n := c.events.count(t)
	c.proc.signal(t, syscall.SIGUSR1) // renew now
	renew := c.waitEvent(t, n, "renew", "bound")
	if renew.reason != "renew" || renew.ip != bound.ip {
		t.Fatalf("after SIGUSR1 udhcpc reported %+v, want renew of %s", renew, bound.ip)
	}
	renewed := checkBound(t, l.api, l.seg.GetId(), mac, l.cli, "cli0", bound.ip)
	if !renewed.GetRenewTime().AsTime().After(first.GetRenewTime().AsTime()) {
		t.Errorf("renew_time did not move on renewal: %v then %v", first.GetRenewTime().AsTime(), renewed.GetRenewTime().AsTime())
	}
	if !strings.Contains(c.proc.out.String(), "sending renew to server 198.18.1.1") {
		t.Errorf("udhcpc did not renew by unicast to the server:\n%s", c.proc.out)
	}

	n = c.events.count(t)
	c.proc.signal(t, syscall.SIGUSR2) // release
	c.waitEvent(t, n, "deconfig")
	checkReleased(t, l.api, l.seg.GetId(), mac, bound.ip)
	if got := l.cli.addresses(t, "cli0"); len(got) != 0 {
		t.Errorf("cli0 still has %v after the release", got)
	}
}

// TestReservation: a MAC with a reservation gets its reserved address,
// outside the pool, from udhcpc in get-a-lease-and-exit mode (-q -n).
func TestReservation(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tools := lookPaths(t, "ip", "busybox")
	const mac = "02:00:5e:10:00:42"
	l := newLocalLink(t, mac, func(s *networkv1.Segment) {
		s.Reservations = []*networkv1.Reservation{
			{Mac: "02:00:5e:10:00:41", Address: "198.18.1.41"},
			{Mac: "02:00:5e:10:00:42", Address: "198.18.1.42"},
		}
	})

	c := newUdhcpc(t, tools, l.cli, "cli0")
	c.start(t, "-q", "-n")
	bound := c.waitEvent(t, 0, "bound")
	if err := c.proc.wait(t, 15*time.Second); err != nil {
		t.Errorf("udhcpc -q -n: %v", err)
	}
	if bound.ip != "198.18.1.42" {
		t.Fatalf("the client with reserved MAC %s bound %s, want 198.18.1.42", mac, bound.ip)
	}
	lease := checkBound(t, l.api, l.seg.GetId(), mac, l.cli, "cli0", "198.18.1.42")
	if !lease.GetReserved() {
		t.Errorf("lease %v is not marked reserved", lease)
	}
	ping(t, tools, l.cli, "198.18.1.1")
	if leases := l.api.leases(t, l.seg.GetId()); len(leases) != 1 {
		t.Errorf("segment holds leases %v, want only the reservation's", leases)
	}
}

// TestRelay puts clients behind ISC dhcrelay, in their own namespaces:
//
//	cli-a ── rdowna (198.18.3.1/24) ┐
//	                                relay ── rup 198.18.2.2/24 ── srv1 198.18.2.1/24 srv
//	cli-b ── rdownb (198.18.4.1/24) ┘
//
// Client A's segment rack-a holds the relay's giaddr 198.18.3.1 in its
// prefix; client B's segment rack-b (100.64.4.0/24) lists giaddr
// 198.18.4.1 among its relay addresses, which wins over segment decoy,
// whose prefix holds it. The daemon's own link is segment transit. Client
// A (dhclient) renews by unicast through the relay's routing and
// releases; no lease may appear on transit or decoy.
func TestRelay(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tools := lookPaths(t, "ip", "dhclient", "dhcrelay", "busybox")
	const macA, macB = "02:00:5e:10:01:0a", "02:00:5e:10:01:0b"

	srv, relay := newNetns(t, "srv"), newNetns(t, "relay")
	cliA, cliB := newNetns(t, "cli-a"), newNetns(t, "cli-b")
	veth(t, srv, "srv1", relay, "rup")
	veth(t, relay, "rdowna", cliA, "cli0")
	veth(t, relay, "rdownb", cliB, "cli0")
	srv.addr(t, "srv1", "198.18.2.1/24")
	relay.addr(t, "rup", "198.18.2.2/24")
	relay.addr(t, "rdowna", "198.18.3.1/24")
	relay.addr(t, "rdownb", "198.18.4.1/24")
	relay.sysctl(t, "net.ipv4.ip_forward", "1")
	srv.ip(t, "route", "add", "198.18.3.0/24", "via", "198.18.2.2")
	srv.ip(t, "route", "add", "198.18.4.0/24", "via", "198.18.2.2")
	srv.ip(t, "route", "add", "100.64.4.0/24", "via", "198.18.2.2")
	cliA.mac(t, "cli0", macA)
	cliB.mac(t, "cli0", macB)

	a := startAPI(t, "")
	minute := durationpb.New(time.Minute)
	rackA := a.createSegment(t, &networkv1.Segment{
		Name: "rack-a", Prefix: "198.18.3.0/24", Gateway: "198.18.3.1", LeaseDuration: minute,
		Ranges: []*networkv1.AddressRange{{Start: "198.18.3.100", End: "198.18.3.199"}},
	})
	rackB := a.createSegment(t, &networkv1.Segment{
		Name: "rack-b", Prefix: "100.64.4.0/24", RelayAddresses: []string{"198.18.4.1"}, LeaseDuration: minute,
		Ranges: []*networkv1.AddressRange{{Start: "100.64.4.100", End: "100.64.4.199"}},
	})
	decoy := a.createSegment(t, &networkv1.Segment{
		Name: "decoy", Prefix: "198.18.4.0/24", LeaseDuration: minute,
		Ranges: []*networkv1.AddressRange{{Start: "198.18.4.100", End: "198.18.4.199"}},
	})
	transit := a.createSegment(t, &networkv1.Segment{
		Name: "transit", Prefix: "198.18.2.0/24", LeaseDuration: minute,
		Ranges: []*networkv1.AddressRange{{Start: "198.18.2.100", End: "198.18.2.199"}},
	})
	d := startDaemon(t, a, srv, "debug", "srv1")
	r := startProc(t, relay, "dhcrelay", tools["dhcrelay"], "-4", "-d", "-a",
		"-id", "rdowna", "-id", "rdownb", "-iu", "rup", "198.18.2.1")
	r.waitOutput(t, regexp.MustCompile(`Sending on +Socket/fallback`), 15*time.Second)

	// Client A: prefix match, then renewals by unicast and a release.
	ca := newDhclient(t, tools, cliA, "cli0", 2*time.Second)
	ca.start(t)
	bound := ca.waitEvent(t, 0, "BOUND")
	if !inRange(bound.ip, "198.18.3.100", "198.18.3.199") || bound.router != "198.18.3.1" || bound.server != "198.18.2.1" {
		t.Fatalf("client A bound %+v; want an address of 198.18.3.100-199, router 198.18.3.1, server 198.18.2.1", bound)
	}
	first := checkBound(t, a, rackA.GetId(), macA, cliA, "cli0", bound.ip)
	// The unknown MAC was enrolled, with the relay agent's circuit id
	// (dhcrelay -a: the name of the interface the request came in on).
	if nic := machineNIC(t, a, macA); nic.GetCircuitId() != "rdowna" || nic.GetSegmentId() != rackA.GetId() {
		t.Errorf("client A's enrolled interface is %v; want circuit id rdowna on segment rack-a", nic)
	}
	ping(t, tools, cliA, "198.18.2.1") // through the relay, which routes

	// Client B: relay address match, in get-a-lease-and-exit mode.
	cb := newUdhcpc(t, tools, cliB, "cli0")
	cb.start(t, "-q", "-n")
	boundB := cb.waitEvent(t, 0, "bound")
	if !inRange(boundB.ip, "100.64.4.100", "100.64.4.199") || boundB.server != "198.18.2.1" {
		t.Fatalf("client B bound %+v; want an address of rack-b, 100.64.4.100-199, from server 198.18.2.1", boundB)
	}
	checkBound(t, a, rackB.GetId(), macB, cliB, "cli0", boundB.ip)

	// Client A's renewals go by unicast to the server identifier: the
	// daemon gets them unrelayed, from a client that is not on its link.
	renew := ca.waitEvent(t, ca.events.count(t), "RENEW")
	renew = ca.waitEvent(t, ca.events.count(t), "RENEW")
	if renew.ip != bound.ip {
		t.Fatalf("renewal moved client A from %s to %s", bound.ip, renew.ip)
	}
	renewed := checkBound(t, a, rackA.GetId(), macA, cliA, "cli0", bound.ip)
	if !renewed.GetRenewTime().AsTime().After(first.GetRenewTime().AsTime()) {
		t.Errorf("renew_time did not move on renewal: %v then %v", first.GetRenewTime().AsTime(), renewed.GetRenewTime().AsTime())
	}
	if !strings.Contains(ca.proc.out.String(), "DHCPREQUEST for "+bound.ip+" on cli0 to 198.18.2.1 port 67") {
		t.Errorf("client A did not renew by unicast to the server:\n%s", ca.proc.out)
	}
	// dhcrelay also relays the unicast renewal it routes (it listens on
	// a raw socket), but the daemon must answer the unicast copy itself,
	// straight to the client.
	if direct := "reply=ack yiaddr=" + bound.ip + " to=" + bound.ip + ":68"; !strings.Contains(d.proc.out.String(), direct) {
		t.Errorf("the daemon did not answer client A's unicast renewal directly (%q):\n%s", direct, tail(d.proc.out.String(), 40))
	}

	before := ca.events.count(t)
	ca.release(t)
	ca.proc.wait(t, 10*time.Second)
	ca.events.waitEvent(t, nil, before, []string{"RELEASE"}, nil, 10*time.Second)
	checkReleased(t, a, rackA.GetId(), macA, bound.ip)

	for _, s := range []*networkv1.Segment{decoy, transit} {
		if leases := a.leases(t, s.GetId()); len(leases) != 0 {
			t.Errorf("segment %s, which no client is on, holds leases %v", s.GetName(), leases)
		}
	}
	if got := d.metric(t, `carbide_dhcp_api_errors_total{code="not_found"}`); got != 0 {
		t.Errorf("the daemon found no segment for %v requests", got)
	}
	if got := d.metric(t, `carbide_dhcp_replies_total{type="nak"}`); got != 0 {
		t.Errorf("the daemon sent %v NAKs", got)
	}
}

// machineNIC returns the interface with mac of the machine that has it.
func machineNIC(t *testing.T, a *api, mac string) *machinev1.Interface {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for m, err := range a.client.AllMachines(ctx, &machinev1.ListMachinesRequest{}) {
		if err != nil {
			t.Fatalf("ListMachines: %v", err)
		}
		for _, nic := range m.GetInterfaces() {
			if nic.GetMac() == mac {
				if m.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED {
					t.Errorf("machine %s of %s is in %s, want DISCOVERED", m.GetId(), mac, m.GetState())
				}
				return nic
			}
		}
	}
	t.Fatalf("no machine has an interface with MAC %s", mac)
	return nil
}
