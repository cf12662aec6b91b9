package provider

import (
	"context"
	"crypto/rand"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// bootedMachine is a machine whose boots the test plays through the API,
// as its discovery agent, carbide-pxe and its installed system would call
// it: no VM, but every state change is the API's own.
type bootedMachine struct {
	id, mac, address string
	inventory        *machinev1.Inventory
	agent, pxe       *carbide.Client
}

// newBootedMachine leases a MAC an address on a segment of its own (as
// carbide-dhcp does, which enrols the machine), and has its agent report
// its hardware: the machine is Ready.
func newBootedMachine(t *testing.T, a *accAPI) *bootedMachine {
	t.Helper()
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	net := fmt.Sprintf("10.%d.%d", 100+int(b[0])%100, b[1])
	if _, err := a.client.Segments.CreateSegment(ctx(t), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "tf-" + uuid.NewString()[:8], Prefix: net + ".0/24", Gateway: net + ".1",
		Ranges: []*networkv1.AddressRange{{Start: net + ".100", End: net + ".110"}},
	}})); err != nil {
		t.Fatalf("create segment: %v", err)
	}
	dhcp := roleClient(t, a, "dhcp")
	m := &bootedMachine{mac: randomMAC(t), pxe: roleClient(t, a, "pxe")}
	lease, err := dhcp.DHCP.Lease(ctx(t), connect.NewRequest(&dhcpv1.LeaseRequest{
		Mac: m.mac, Origin: &dhcpv1.Origin{LocalAddress: net + ".1"},
	}))
	if err != nil {
		t.Fatalf("lease an address as carbide-dhcp: %v", err)
	}
	m.id, m.address = lease.Msg.GetMachineId(), lease.Msg.GetAddress()
	dir := t.TempDir()
	if out, err := exec.Command(a.bin, "dev-cert", "--data-dir", a.dataDir, "--agent", m.id, "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("carbide-api dev-cert --agent: %v\n%s", err, out)
	}
	testsecret.RegisterFiles(t, filepath.Join(dir, "*.key"))
	if m.agent, err = carbide.New(a.endpoint, carbide.WithClientCertificate(
		filepath.Join(dir, "agent-"+m.id+".crt"), filepath.Join(dir, "agent-"+m.id+".key"), a.file("ca.crt"))); err != nil {
		t.Fatal(err)
	}
	m.inventory = &machinev1.Inventory{
		System:      &machinev1.SystemInfo{Manufacturer: "QEMU", Product: "Standard PC", Uuid: uuid.NewString()},
		Cpu:         &machinev1.CPUInfo{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2},
		MemoryBytes: 8 << 30,
		Disks:       []*machinev1.Disk{{Name: "vda", Serial: "disk-" + m.id[:8], SizeBytes: 64 << 30}},
		Nics:        []*machinev1.NIC{{Mac: m.mac, Driver: "virtio_net", LinkUp: true}},
	}
	if in, err := m.report(ctx(t)); err != nil {
		t.Fatalf("report the inventory as the agent: %v", err)
	} else if in.GetAction() != agentv1.Instruction_ACTION_POWER_OFF {
		t.Fatalf("a new machine's agent was told %v, want a power-off (Ready)", in)
	}
	return m
}

// roleClient is a client with the development certificate of a service
// role (dhcp.crt, pxe.crt).
func roleClient(t *testing.T, a *accAPI, role string) *carbide.Client {
	t.Helper()
	c, err := carbide.New(a.endpoint, carbide.WithClientCertificate(a.file(role+".crt"), a.file(role+".key"), a.file("ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// report is the agent's inventory report at the start of a boot; it
// returns the instruction the API answers with.
func (m *bootedMachine) report(ctx context.Context) (*agentv1.Instruction, error) {
	resp, err := m.agent.Agent.ReportInventory(ctx, connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: m.id, Inventory: m.inventory}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetInstruction(), nil
}

// play follows the machine until ctx ends and does what the machine's
// boots would: when the lifecycle controller waits for the agent, the
// agent reports and completes its instruction (writes the image, wipes
// the disks); when it waits for the installed system, that system phones
// home. Errors fail t.
func (m *bootedMachine) play(ctx context.Context, t *testing.T, a *accAPI) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		got, err := a.client.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: m.id}))
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("read machine %s: %v", m.id, err)
			}
			return
		}
		mach := got.Msg.GetMachine()
		switch mach.GetTask().GetStep() {
		case "boot_agent":
			in, err := m.report(ctx)
			if err != nil {
				t.Errorf("agent report of machine %s at boot_agent: %v", m.id, err)
				return
			}
			switch in.GetAction() {
			case agentv1.Instruction_ACTION_INSTALL, agentv1.Instruction_ACTION_WIPE:
				if _, err := m.agent.Agent.CompleteStep(ctx, connect.NewRequest(&agentv1.CompleteStepRequest{
					MachineId: m.id, Step: in.GetStep(), Bytes: 2 << 30, Duration: durationpb.New(time.Second),
				})); err != nil {
					t.Errorf("agent of machine %s completes %s: %v", m.id, in.GetStep(), err)
					return
				}
			}
		case "boot_os":
			if _, err := m.pxe.Boot.PhoneHome(ctx, connect.NewRequest(&bootv1.PhoneHomeRequest{
				Mac: m.mac, ClientAddress: m.address, InstanceId: mach.GetTask().GetInstanceId(),
			})); err != nil {
				t.Errorf("phone home of machine %s: %v", m.id, err)
				return
			}
		}
	}
}

// TestInstanceLifecycle runs an instance through Terraform on a machine
// whose boots the test plays through the API: apply waits until it is
// Running, a change replaces it (released, cleaned, provisioned again),
// and destroy with wait_for_cleaning returns once the machine is Ready.
func TestInstanceLifecycle(t *testing.T) {
	a := api(t)
	m := newBootedMachine(t, a)
	image := testImage(t, a)
	playCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.play(playCtx, t, a)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	config := func(app string) string {
		return a.providerConfig() + fmt.Sprintf(`
resource "carbide_instance" "i" {
  hostname          = "web-1"
  image_id          = %q
  machine_id        = %q
  labels            = { app = %q }
  wait_for_cleaning = true
  timeouts = {
    create = "2m"
    delete = "2m"
  }
}
`, image, m.id, app)
	}
	var first string
	machineIs := func(want machinev1.MachineState) resource.TestCheckFunc {
		return func(*terraform.State) error {
			got, err := a.client.Machines.GetMachine(context.Background(), connect.NewRequest(&machinev1.GetMachineRequest{Id: m.id}))
			if err != nil {
				return err
			}
			if st := got.Msg.GetMachine().GetState(); st != want {
				return fmt.Errorf("machine %s is %s, want %s", m.id, st, want)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy: resource.ComposeAggregateTestCheckFunc(
			instanceGone(a),
			// wait_for_cleaning: destroy returned once the machine was Ready.
			machineIs(machinev1.MachineState_MACHINE_STATE_READY),
		),
		Steps: []resource.TestStep{
			{
				Config: config("web"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_instance.i", "state", "running"),
					resource.TestCheckResourceAttr("carbide_instance.i", "address", m.address),
					resource.TestCheckResourceAttrSet("carbide_instance.i", "running_time"),
					machineIs(machinev1.MachineState_MACHINE_STATE_ASSIGNED),
					func(s *terraform.State) error {
						first = s.RootModule().Resources["carbide_instance.i"].Primary.ID
						return nil
					},
				),
			},
			{
				// The API cannot change an instance's labels: replaced,
				// on the same machine once it is cleaned.
				Config: config("api"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_instance.i", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_instance.i", "state", "running"),
					resource.TestCheckResourceAttr("carbide_instance.i", "labels.app", "api"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources["carbide_instance.i"].Primary.ID; id == first {
							return fmt.Errorf("instance %s was not replaced", id)
						}
						return nil
					},
				),
			},
			{
				// Refreshed, the running instance matches its
				// configuration: no drift from what the API reports.
				Config: config("api"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
		},
	})
}
