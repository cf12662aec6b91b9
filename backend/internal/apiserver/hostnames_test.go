package apiserver

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// setHostname changes a machine's hostname through the API.
func setHostname(t *testing.T, e *env, id, hostname string) error {
	_, err := e.Machines.UpdateMachine(t.Context(), connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine: &machinev1.Machine{Id: id, Hostname: hostname}, UpdateMask: mask("hostname"),
	}))
	return err
}

// TestHostnamesUniquePerDomain: a hostname names one machine or active
// instance in each DNS domain, the domains of the segments of the
// machine's interfaces.
func TestHostnamesUniquePerDomain(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		rack1 := createSegment(t, e, rack1())
		// rack1b serves the same domain as rack1; rack2 another one.
		rack1b := createSegment(t, e, withSegment(func(s *networkv1.Segment) {
			s.Name = "rack1b"
			s.DnsRecords = []*networkv1.DNSRecord{{Name: "alias", Type: recCNAME, Value: "web.rack1.example.net."}}
		}))
		rack2 := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.2.0.0/24", Domain: "rack2.example.net",
			Ranges: []*networkv1.AddressRange{{Start: "10.2.0.10", End: "10.2.0.20"}}})
		img := createImage(t, e, diskImage("debian", "12"))

		web := readyMachine(t, e, 1, hardware{segment: rack1.GetId()})
		if err := setHostname(t, e, web.GetId(), "web"); err != nil {
			t.Fatalf("name the first machine: %v", err)
		}
		other := readyMachine(t, e, 2, hardware{segment: rack1b.GetId()})
		far := readyMachine(t, e, 3, hardware{segment: rack2.GetId()})
		spare := readyMachine(t, e, 4, hardware{segment: rack1.GetId()})
		inst := createInstance(t, e, onMachine("app", img.GetId(), spare.GetId()))

		wantRefused := func(name string, err error, code connect.Code, mentions ...string) {
			t.Helper()
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != code {
				t.Errorf("%s: error %v, want %s", name, err, code)
				return
			}
			for _, m := range mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%s: error %q does not mention %q", name, err, m)
				}
			}
		}
		wantRefused("machine taking a machine's name", setHostname(t, e, other.GetId(), "web"),
			connect.CodeAlreadyExists, web.GetId(), "rack1.example.net")
		wantRefused("machine taking an instance's name", setHostname(t, e, other.GetId(), "app"),
			connect.CodeAlreadyExists, inst.GetId(), "rack1.example.net")
		wantRefused("machine taking a CNAME's name", setHostname(t, e, other.GetId(), "alias"),
			connect.CodeFailedPrecondition, "CNAME", `"rack1b"`)
		_, err := e.Instances.CreateInstance(t.Context(), connect.NewRequest(onMachine("web", img.GetId(), other.GetId())))
		wantRefused("instance taking a machine's name", err, connect.CodeAlreadyExists, web.GetId(), "rack1.example.net")
		_, err = e.Instances.CreateInstance(t.Context(), connect.NewRequest(onMachine("app", img.GetId(), other.GetId())))
		wantRefused("instance taking an instance's name", err, connect.CodeAlreadyExists, inst.GetId())

		// Another domain has its own names; a machine keeps its own.
		if err := setHostname(t, e, far.GetId(), "web"); err != nil {
			t.Errorf("the same hostname in another domain: %v", err)
		}
		createInstance(t, e, onMachine("far-app", img.GetId(), far.GetId()))
		if err := setHostname(t, e, far.GetId(), "far-app"); err != nil {
			t.Errorf("a machine named as its own instance: %v", err)
		}
		// A machine created with a name while on no segment, that then gets a lease in
		// the domain, keeps its lease: two holders, which carbide-dns
		// resolves (docs/api-server.md).
		createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: "web", Macs: []string{testMAC(9)}})
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: rack1.GetId(), Mac: testMAC(9)})
		// A released instance's name is free again.
		setInstanceState(t, e, inst.GetId(), "released")
		if err := setHostname(t, e, other.GetId(), "app"); err != nil {
			t.Errorf("a released instance's hostname: %v", err)
		}
	})
}

// TestHostnamesConcurrent: of concurrent writers of one name in one
// domain, one wins.
func TestHostnamesConcurrent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		wide := rack1()
		wide.Ranges = []*networkv1.AddressRange{{Start: "10.0.0.10", End: "10.0.0.200"}}
		seg := createSegment(t, e, wide)
		img := createImage(t, e, diskImage("debian", "12"))
		const rounds, writers = 5, 4
		for r := range rounds {
			var ms []*machinev1.Machine
			for w := range writers {
				ms = append(ms, readyMachine(t, e, 100+r*writers+w, hardware{segment: seg.GetId()}))
			}
			name := fmt.Sprintf("n%d", r)
			errs := make([]error, writers)
			var wg sync.WaitGroup
			for w, m := range ms {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if w%2 == 0 {
						errs[w] = setHostname(t, e, m.GetId(), name)
					} else {
						_, errs[w] = e.Instances.CreateInstance(t.Context(), connect.NewRequest(onMachine(name, img.GetId(), m.GetId())))
					}
				}()
			}
			wg.Wait()
			won := 0
			for w, err := range errs {
				var cerr *connect.Error
				switch {
				case err == nil:
					won++
				case errors.As(err, &cerr) && cerr.Code() == connect.CodeAlreadyExists:
				default:
					t.Errorf("round %d writer %d: %v", r, w, err)
				}
			}
			if won != 1 {
				t.Errorf("round %d: %d writers got hostname %q, want exactly 1: %v", r, won, name, errs)
			}
		}
	})
}
