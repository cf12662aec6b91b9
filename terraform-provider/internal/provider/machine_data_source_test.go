package provider

import (
	"fmt"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func TestMachineDataSources(t *testing.T) {
	a := api(t)
	mac1, mac2 := randomMAC(t), randomMAC(t)
	// A label value of this test only, so that other tests' machines
	// do not match.
	batch := randomMAC(t)[9:]
	batch = "b" + batch[0:2] + batch[3:5] + batch[6:8]
	machines := a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "a" {
  macs     = [%q]
  hostname = "ds-a-%[3]s"
  labels   = { batch = %[3]q, role = "db" }
}
resource "carbide_machine" "b" {
  macs        = [%[2]q]
  hostname    = "ds-b-%[3]s"
  labels      = { batch = %[3]q }
  maintenance = true
}
`, mac1, mac2, batch)
	lookups := `
data "carbide_machine" "by_id" {
  id = carbide_machine.a.id
}
data "carbide_machine" "by_hostname" {
  hostname = carbide_machine.b.hostname
}
data "carbide_machine" "by_mac" {
  mac = "` + mac1 + `"
  depends_on = [carbide_machine.a]
}
data "carbide_machines" "batch" {
  labels     = { batch = "` + batch + `" }
  depends_on = [carbide_machine.a, carbide_machine.b]
}
data "carbide_machines" "db" {
  labels     = { batch = "` + batch + `", role = "db" }
  depends_on = [carbide_machine.a, carbide_machine.b]
}
data "carbide_machines" "maintenance" {
  states     = ["maintenance"]
  labels     = { batch = "` + batch + `" }
  depends_on = [carbide_machine.a, carbide_machine.b]
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{
			// Bad lookups first: the destroy at the end uses the last configuration.
			{
				Config:      a.providerConfig() + `data "carbide_machine" "none" { hostname = "no-such-host-` + batch + `" }`,
				ExpectError: expectError(`No such machine.*No machine has host name "no-such-host-`),
			},
			{
				Config: machines + `data "carbide_machine" "two" {
  hostname = "x"
  mac      = "52:54:00:00:00:01"
}`,
				ExpectError: expectError(`Invalid Attribute Combination`),
			},
			{
				Config:      a.providerConfig() + `data "carbide_machine" "empty" { hostname = "" }`,
				ExpectError: expectError(`string length must be between 1 and 63`),
			},
			{
				Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "t1" {
  macs     = [%q]
  hostname = "ds-t-%[2]s"
}
resource "carbide_machine" "t2" {
  macs     = [%[3]q]
  hostname = "ds-t-%[2]s"
}
data "carbide_machine" "twin" {
  hostname   = "ds-t-%[2]s"
  depends_on = [carbide_machine.t1, carbide_machine.t2]
}
`, randomMAC(t), batch, randomMAC(t)),
				ExpectError: expectError(`Several machines have this host name`),
			},
			{
				Config:      a.providerConfig() + `data "carbide_machines" "bad" { states = ["running"] }`,
				ExpectError: expectError(`value must be one of`),
			},
			{
				Config: machines + lookups,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair("data.carbide_machine.by_id", "hostname", "carbide_machine.a", "hostname"),
					resource.TestCheckResourceAttr("data.carbide_machine.by_id", "labels.role", "db"),
					resource.TestCheckResourceAttrPair("data.carbide_machine.by_hostname", "id", "carbide_machine.b", "id"),
					resource.TestCheckResourceAttr("data.carbide_machine.by_hostname", "state", "maintenance"),
					resource.TestCheckResourceAttrPair("data.carbide_machine.by_mac", "id", "carbide_machine.a", "id"),
					resource.TestCheckResourceAttr("data.carbide_machine.by_mac", "interfaces.0.mac", mac1),
					resource.TestCheckResourceAttr("data.carbide_machines.batch", "ids.#", "2"),
					resource.TestCheckResourceAttr("data.carbide_machines.batch", "machines.#", "2"),
					resource.TestCheckResourceAttr("data.carbide_machines.db", "ids.#", "1"),
					resource.TestCheckResourceAttrPair("data.carbide_machines.db", "ids.0", "carbide_machine.a", "id"),
					resource.TestCheckResourceAttrPair("data.carbide_machines.db", "machines.0.hostname", "carbide_machine.a", "hostname"),
					resource.TestCheckResourceAttr("data.carbide_machines.maintenance", "ids.#", "1"),
					resource.TestCheckResourceAttrPair("data.carbide_machines.maintenance", "ids.0", "carbide_machine.b", "id"),
				),
			},
		},
	})
}
