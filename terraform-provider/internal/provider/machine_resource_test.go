package provider

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

// randomMAC is a locally administered unicast MAC that no other test uses.
func randomMAC(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0xfc | 0x02
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// ctx is a context for the tests' own API calls.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// ctx2 is a context for checks that have no test at hand.
func ctx2() context.Context { return context.Background() }

// machineGone checks that no machine with the state's ids remains.
func machineGone(a *accAPI) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		for _, rs := range s.RootModule().Resources {
			if rs.Type != "carbide_machine" {
				continue
			}
			_, err := a.client.Machines.GetMachine(context.Background(), connect.NewRequest(&machinev1.GetMachineRequest{Id: rs.Primary.ID}))
			if err == nil {
				return fmt.Errorf("machine %s still exists after destroy", rs.Primary.ID)
			}
			if !isNotFound(err) {
				return err
			}
		}
		return nil
	}
}

// machineCheck checks what the API holds for the machine of the resource n.
func machineCheck(a *accAPI, n string, check func(*machinev1.Machine, *bmcv1.BMC) error) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[n]
		if !ok {
			return fmt.Errorf("%s not in the state", n)
		}
		c := context.Background()
		m, err := a.client.Machines.GetMachine(c, connect.NewRequest(&machinev1.GetMachineRequest{Id: rs.Primary.ID}))
		if err != nil {
			return err
		}
		var b *bmcv1.BMC
		got, err := a.client.BMC.GetBMC(c, connect.NewRequest(&bmcv1.GetBMCRequest{MachineId: rs.Primary.ID}))
		switch {
		case err == nil:
			b = got.Msg.GetBmc()
		case !isNotFound(err):
			return err
		}
		return check(m.Msg.GetMachine(), b)
	}
}

func TestMachineLifecycle(t *testing.T) {
	a := api(t)
	mac1, mac2 := randomMAC(t), randomMAC(t)
	var firstID string
	config := func(hostname, labels string, maintenance bool, macs ...string) string {
		return a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "m" {
  macs        = %s
  hostname    = %q
  labels      = %s
  maintenance = %t
  bmc = {
    address          = "192.0.2.10"
    protocol         = "ipmi"
    username         = "admin"
    password         = "correct-horse-battery"
    password_version = "1"
  }
}
`, hclList(macs), hostname, labels, maintenance)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{
			{
				Config: config("node-1", `{ rack = "1" }`, false, mac1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrSet("carbide_machine.m", "id"),
					resource.TestCheckResourceAttr("carbide_machine.m", "hostname", "node-1"),
					resource.TestCheckResourceAttr("carbide_machine.m", "labels.rack", "1"),
					resource.TestCheckResourceAttr("carbide_machine.m", "state", "discovered"),
					resource.TestCheckResourceAttr("carbide_machine.m", "interfaces.0.mac", mac1),
					resource.TestCheckTypeSetElemAttr("carbide_machine.m", "macs.*", mac1),
					resource.TestCheckResourceAttr("carbide_machine.m", "bmc.address", "192.0.2.10"),
					resource.TestCheckResourceAttr("carbide_machine.m", "bmc.protocol", "ipmi"),
					// Write-only: the password never reaches the state.
					resource.TestCheckNoResourceAttr("carbide_machine.m", "bmc.password"),
					machineCheck(a, "carbide_machine.m", func(m *machinev1.Machine, b *bmcv1.BMC) error {
						if b == nil || !b.GetHasPassword() || b.GetUsername() != "admin" {
							return fmt.Errorf("the API's BMC is %v, want one with user admin and a password", b)
						}
						return nil
					}),
					func(s *terraform.State) error {
						firstID = s.RootModule().Resources["carbide_machine.m"].Primary.ID
						return nil
					},
				),
			},
			{
				// Hostname, labels and maintenance change in place.
				Config: config("node-2", `{ rack = "2", role = "db" }`, true, mac1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_machine.m", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_machine.m", "hostname", "node-2"),
					resource.TestCheckResourceAttr("carbide_machine.m", "labels.%", "2"),
					resource.TestCheckResourceAttr("carbide_machine.m", "state", "maintenance"),
					machineCheck(a, "carbide_machine.m", func(m *machinev1.Machine, _ *bmcv1.BMC) error {
						if m.GetId() != firstID || m.GetHostname() != "node-2" || !m.GetMaintenance() || m.GetLabels()["role"] != "db" {
							return fmt.Errorf("the API holds %v after the update in place of %s", m, firstID)
						}
						return nil
					}),
				),
			},
			{
				// Out of maintenance, back to the state it was in.
				Config: config("node-2", `{ rack = "2", role = "db" }`, false, mac1),
				Check:  resource.TestCheckResourceAttr("carbide_machine.m", "state", "discovered"),
			},
			{
				// A MAC the machine does not have replaces it.
				Config: config("node-2", `{ rack = "2", role = "db" }`, false, mac1, mac2),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_machine.m", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_machine.m", "interfaces.#", "2"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources["carbide_machine.m"].Primary.ID; id == firstID {
							return fmt.Errorf("machine %s was not replaced", id)
						}
						return nil
					},
				),
			},
			{
				ResourceName:      "carbide_machine.m",
				ImportState:       true,
				ImportStateVerify: true,
				// Neither is the machine's: adopt says how it was created,
				// password_version is the configuration's.
				// maintenance = false in the configuration is null after an import.
				ImportStateVerifyIgnore: []string{"adopt", "bmc.password_version", "maintenance"},
			},
		},
	})
}

// TestMachineDrift changes and deletes the machine through the API: the
// next plan shows it, and apply puts back what the configuration says.
func TestMachineDrift(t *testing.T) {
	a := api(t)
	mac := randomMAC(t)
	config := a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "m" {
  macs     = [%q]
  hostname = "drift"
  labels   = { env = "prod" }
  bmc = {
    address = "192.0.2.20"
  }
}
`, mac)
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: func(s *terraform.State) error {
					id = s.RootModule().Resources["carbide_machine.m"].Primary.ID
					return nil
				},
			},
			{
				// Renamed, relabelled and its BMC forgotten behind Terraform's back.
				PreConfig: func() {
					_, err := a.client.Machines.UpdateMachine(ctx(t), connect.NewRequest(&machinev1.UpdateMachineRequest{
						Machine:    &machinev1.Machine{Id: id, Hostname: "renamed", Labels: map[string]string{"env": "dev"}},
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hostname", "labels"}},
					}))
					if err != nil {
						t.Fatal(err)
					}
					if _, err := a.client.BMC.DeleteBMC(ctx(t), connect.NewRequest(&bmcv1.DeleteBMCRequest{MachineId: id})); err != nil {
						t.Fatal(err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_machine.m", plancheck.ResourceActionUpdate),
				}},
				Check: machineCheck(a, "carbide_machine.m", func(m *machinev1.Machine, b *bmcv1.BMC) error {
					if m.GetHostname() != "drift" || m.GetLabels()["env"] != "prod" || b.GetAddress() != "192.0.2.20" {
						return fmt.Errorf("apply did not undo the drift: %v, BMC %v", m, b)
					}
					return nil
				}),
			},
			{
				// Deleted behind Terraform's back: planned again.
				PreConfig: func() {
					if _, err := a.client.BMC.DeleteBMC(ctx(t), connect.NewRequest(&bmcv1.DeleteBMCRequest{MachineId: id})); err != nil {
						t.Fatal(err)
					}
					if _, err := a.client.Machines.DeleteMachine(ctx(t), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: id})); err != nil {
						t.Fatal(err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_machine.m", plancheck.ResourceActionCreate),
				}},
			},
		},
	})
}

// TestMachineAdopt registers a machine through the API, as DHCP enrolment
// would, and adopts it.
func TestMachineAdopt(t *testing.T) {
	a := api(t)
	mac := randomMAC(t)
	created, err := a.client.Machines.CreateMachine(ctx(t), connect.NewRequest(&machinev1.CreateMachineRequest{Macs: []string{mac}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetMachine().GetId()
	config := func(adopt bool) string {
		return a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "m" {
  macs     = [%q]
  adopt    = %t
  hostname = "adopted"
}
`, mac, adopt)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{
			{
				Config:      config(false),
				ExpectError: expectError(`already_exists.*Set adopt = true`),
			},
			{
				Config: config(true),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_machine.m", "id", id),
					resource.TestCheckResourceAttr("carbide_machine.m", "hostname", "adopted"),
				),
			},
		},
	})
}

// TestMachinePlanValidation checks that bad input fails the plan, before
// anything reaches the API, with a message that says what to fix.
func TestMachinePlanValidation(t *testing.T) {
	a := api(t)
	tests := map[string]struct {
		body string
		want string
	}{
		"bad MAC": {
			body: `macs = ["52:54:00:12:34"]`,
			want: `must be a MAC address of six colon-separated hex bytes`,
		},
		"no MAC": {
			body: `macs = []`,
			want: `set must contain at least 1 elements`,
		},
		"upper-case hostname": {
			body: `macs = ["52:54:00:12:34:56"]
  hostname = "Node_1"`,
			want: `hostname must match the regular expression`,
		},
		"bad label key": {
			body: `macs = ["52:54:00:12:34:56"]
  labels = { "-x" = "y" }`,
			want: `labels\["-x"\] must match the regular expression`,
		},
		"password without username": {
			body: `macs = ["52:54:00:12:34:56"]
  bmc = {
    address  = "192.0.2.1"
    password = "secret-password"
  }`,
			want: `username`,
		},
		"BMC address": {
			body: `macs = ["52:54:00:12:34:56"]
  bmc = {
    address = "not a host!"
  }`,
			want: `bmc.address must be a host name or an IP address`,
		},
		"unknown BMC protocol": {
			body: `macs = ["52:54:00:12:34:56"]
  bmc = {
    address  = "192.0.2.1"
    protocol = "snmp"
  }`,
			want: `value must be one of`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      a.providerConfig() + "resource \"carbide_machine\" \"m\" {\n  " + tc.body + "\n}\n",
					PlanOnly:    true,
					ExpectError: expectError(tc.want),
				}},
			})
		})
	}
}

// TestMachineAPIRejects checks that what only the API can refuse reaches
// the user with the API's message: two resources register the same MAC.
func TestMachineAPIRejects(t *testing.T) {
	a := api(t)
	mac := randomMAC(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{{
			Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "a" {
  macs = [%[1]q]
}
resource "carbide_machine" "b" {
  macs       = [%[1]q]
  depends_on = [carbide_machine.a]
}
`, mac),
			ExpectError: expectError(`Cannot register the machine.*already_exists.*` + mac + `.*Set adopt = true`),
		}},
	})
}

// hclList is ss as an HCL list of strings.
func hclList(ss []string) string {
	out := "["
	for i, s := range ss {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%q", s)
	}
	return out + "]"
}
