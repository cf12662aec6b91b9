package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// labHost is a host on the lab's provisioning network: a namespace of its
// own whose eth0 (with MAC mac) is a port of the lab bridge, with the
// address carbide-dhcp leased it.
type labHost struct {
	ns      *netns
	mac     string
	address string
}

// newHost attaches a host to the lab bridge and gets it a lease from
// carbide-dhcp with busybox udhcpc.
func (l *lab) newHost(t *testing.T, tools map[string]string, short, mac string) *labHost {
	t.Helper()
	h := &labHost{ns: newNetns(t, short), mac: mac}
	port := "p" + short
	veth(t, l.ns, port, h.ns, "eth0")
	l.ns.ip(t, "link", "set", "dev", port, "master", "br0")
	h.ns.mac(t, "eth0", mac)
	c := newUdhcpc(t, tools, h.ns, "eth0")
	c.start(t, "-q", "-n")
	ev := c.waitEvent(t, 0, "bound")
	h.address = ev.ip
	if h.address == "" {
		t.Fatalf("%s: udhcpc bound no address: %v", short, ev)
	}
	return h
}

// get fetches url from inside the host's namespace and returns the status
// and body.
func (h *labHost) get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = nsenter.Do(h.ns.name, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, h.ns.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

var configParam = regexp.MustCompile(`carbide\.config=(\S+)`)

// configURL fetches the iPXE script of mac from the host, as its firmware
// would, and returns the agent configuration URL it names.
func (h *labHost) configURL(t *testing.T, mac string) string {
	t.Helper()
	code, script := h.get(t, "http://"+labHTTP+"/ipxe/"+mac)
	m := configParam.FindStringSubmatch(script)
	if code != http.StatusOK || m == nil {
		t.Fatalf("the iPXE script of %s from %s: %d\n%s", mac, h.ns.name, code, script)
	}
	return m[1]
}

// fakeRoot copies the scout's VM test tree (/sys and /proc as the agent
// reads them) and sets its SMBIOS system UUID and product name.
func fakeRoot(t *testing.T, tools map[string]string, uuid, product string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if out, err := run(nil, time.Minute, tools["cp"], "-a", filepath.Join("..", "internal", "scout", "testdata", "vm"), root); err != nil {
		t.Fatalf("copy the test tree: %v\n%s", err, out)
	}
	for name, value := range map[string]string{"product_uuid": uuid, "product_name": product} {
		writeFile(t, filepath.Join(root, "sys", "class", "dmi", "id", name), value+"\n")
	}
	return root
}

// startScout runs carbide-scout as a process in the host's namespace,
// reporting the inventory below root with the configuration at url.
func (h *labHost) startScout(t *testing.T, root, url string) *proc {
	t.Helper()
	return startProc(t, h.ns, "carbide-scout in "+h.ns.name, bins.scout, "--root", root, "--config-url", url)
}

// TestIdentityTakeover (issue 11, finding 1) plays a host on the
// provisioning network that claims another machine's identity. Two hosts,
// each in its own namespace with a real lease from carbide-dhcp, fetch
// their iPXE scripts from carbide-pxe and run carbide-scout with the agent
// configuration URL the script names. The first becomes a Ready machine.
// The second reports the first one's SMBIOS UUID: it gets no token for the
// first machine (its agent keeps speaking for its own record and is told
// to wait), the first machine's inventory, hardware id and state stay as
// they were, the report is listed as an identity conflict, and an admin's
// rejection fails the intruder's record, whose agent is then told to power
// off. Neither can the intruder start a boot of the first machine or get
// its agent configuration by naming its MAC.
func TestIdentityTakeover(t *testing.T) {
	requireRoot(t)
	tools := lookPaths(t, "ip", "busybox", "cp")
	l := newLabNetwork(t, "idt", "")
	l.startDaemons(t, t.TempDir())
	const (
		uuid        = "6c1d7c1e-0b6e-4b1a-9d7e-0000000000f1"
		victimMAC   = "52:54:00:cb:0f:01"
		intruderMAC = "52:54:00:cb:0f:02"
	)

	victim := l.newHost(t, tools, "vic", victimMAC)
	intruder := l.newHost(t, tools, "int", intruderMAC)
	victimURL := victim.configURL(t, victimMAC)
	if !strings.Contains(victimURL, "?boot=") {
		t.Fatalf("the first machine's script from its own address started no boot: %s", victimURL)
	}

	// Naming the first machine's MAC from another address starts no boot
	// (so it does not supersede the machine's own) and gets no agent
	// configuration, with no nonce or with the intruder's own.
	if url := intruder.configURL(t, victimMAC); strings.Contains(url, "?boot=") {
		t.Errorf("the intruder started a boot of the first machine: %s", url)
	}
	ownURL := intruder.configURL(t, intruderMAC)
	_, ownNonce, _ := strings.Cut(ownURL, "?")
	for _, query := range []string{"", "?" + ownNonce} {
		if code, body := intruder.get(t, "http://"+labHTTP+"/agent/"+victimMAC+".json"+query); code != http.StatusForbidden {
			t.Errorf("the first machine's agent configuration from the intruder (%q): %d %s", query, code, body)
		}
	}

	vs := victim.startScout(t, fakeRoot(t, tools, uuid, "Victim"), victimURL)
	vs.waitOutput(t, regexp.MustCompile(`msg="scout: powering off: the machine is ready`), 2*time.Minute)
	before := l.machine(t, victimMAC)
	if before.GetState() != machinev1.MachineState_MACHINE_STATE_READY || before.GetHardwareId() != "uuid:"+uuid {
		t.Fatalf("the first machine is %v, want Ready with hardware id uuid:%s", before, uuid)
	}

	is := intruder.startScout(t, fakeRoot(t, tools, uuid, "Intruder"), intruder.configURL(t, intruderMAC))
	is.waitOutput(t, regexp.MustCompile(`held until an operator resolves it`), 2*time.Minute)
	own := l.machine(t, intruderMAC)
	if own.GetId() == before.GetId() || own.GetHardwareId() != "" || own.GetState() != machinev1.MachineState_MACHINE_STATE_DISCOVERED {
		t.Errorf("the intruder's record: %v", own)
	}
	out := is.out.String()
	if !strings.Contains(out, "reported inventory; machine "+own.GetId()) || strings.Contains(out, before.GetId()) && strings.Contains(out, "speaking for it") {
		t.Errorf("the intruder's agent was handed the first machine:\n%s", grepLines(out, `msg="scout:`))
	}
	if diff := cmp.Diff(before, l.machine(t, victimMAC), protocmp.Transform()); diff != "" {
		t.Errorf("the first machine changed (-before +after):\n%s", diff)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := l.client.Machines.ListIdentityConflicts(ctx, connect.NewRequest(&machinev1.ListIdentityConflictsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cs := list.Msg.GetConflicts()
	if len(cs) != 1 || cs[0].GetMachineId() != own.GetId() || cs[0].GetKnownMachineId() != before.GetId() ||
		cs[0].GetHardwareId() != "uuid:"+uuid || cs[0].GetInventory().GetSystem().GetProduct() != "Intruder" {
		t.Fatalf("identity conflicts: %v", cs)
	}
	resolved, err := l.client.Machines.ResolveIdentityConflict(ctx, connect.NewRequest(&machinev1.ResolveIdentityConflictRequest{
		MachineId: own.GetId(), Resolution: machinev1.ResolveIdentityConflictRequest_RESOLUTION_REJECT,
	}))
	if err != nil {
		t.Fatalf("reject the intruder's report: %v", err)
	}
	if m := resolved.Msg.GetMachine(); m.GetState() != machinev1.MachineState_MACHINE_STATE_FAILED {
		t.Errorf("the intruder's record after the rejection: %v", m)
	}
	is.waitOutput(t, regexp.MustCompile(`msg="scout: powering off: the machine failed: an operator rejected`), time.Minute)
	if diff := cmp.Diff(before, l.machine(t, victimMAC), protocmp.Transform()); diff != "" {
		t.Errorf("the first machine changed (-before +after):\n%s", diff)
	}
	t.Logf("the intruder's agent:\n%s", grepLines(is.out.String(), `msg="scout:`))
}
