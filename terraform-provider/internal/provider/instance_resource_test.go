package provider

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

// readyMachine registers a machine with labels and reports its hardware
// as its discovery agent would, with the agent certificate the
// development CA issues for it: the API moves it to Ready. It has no BMC
// and never boots, so an instance on it fails when the agent step times
// out.
func readyMachine(t *testing.T, a *accAPI, labels map[string]string) *machinev1.Machine {
	t.Helper()
	mac := randomMAC(t)
	created, err := a.client.Machines.CreateMachine(ctx(t), connect.NewRequest(&machinev1.CreateMachineRequest{
		Macs: []string{mac}, Labels: labels,
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetMachine().GetId()
	dir := t.TempDir()
	if out, err := exec.Command(a.bin, "dev-cert", "--data-dir", a.dataDir, "--agent", id, "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("carbide-api dev-cert --agent: %v\n%s", err, out)
	}
	testsecret.RegisterFiles(t, filepath.Join(dir, "*.key"))
	agent, err := carbide.New(a.endpoint, carbide.WithClientCertificate(
		filepath.Join(dir, "agent-"+id+".crt"), filepath.Join(dir, "agent-"+id+".key"), a.file("ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := agent.Agent.ReportInventory(ctx(t), connect.NewRequest(&agentv1.ReportInventoryRequest{
		MachineId: id,
		Inventory: &machinev1.Inventory{
			System:      &machinev1.SystemInfo{Manufacturer: "QEMU", Product: "Standard PC", Uuid: uuid.NewString()},
			Cpu:         &machinev1.CPUInfo{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2},
			MemoryBytes: 8 << 30,
			Disks:       []*machinev1.Disk{{Name: "vda", Serial: "disk-" + id[:8], SizeBytes: 64 << 30}},
			Nics:        []*machinev1.NIC{{Mac: mac, Driver: "virtio_net", LinkUp: true}},
		},
	}))
	if err != nil {
		t.Fatalf("report the inventory as the agent: %v", err)
	}
	m := resp.Msg.GetMachine()
	if m.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
		t.Fatalf("machine %s is %s after its inventory, want ready", id, m.GetState())
	}
	return m
}

// testImage registers a disk image (never downloaded: no machine here
// boots) and returns its id.
func testImage(t *testing.T, a *accAPI) string {
	t.Helper()
	name := "tf-" + strings.ReplaceAll(randomMAC(t), ":", "")
	resp, err := a.client.Images.CreateImage(ctx(t), connect.NewRequest(&instancev1.CreateImageRequest{Image: &instancev1.Image{
		Name: name, Version: "1", Architecture: "amd64",
		Firmware: []instancev1.Firmware{instancev1.Firmware_FIRMWARE_UEFI, instancev1.Firmware_FIRMWARE_BIOS},
		Boot: &instancev1.Image_Disk{Disk: &instancev1.DiskImage{
			File: &instancev1.Artifact{
				Url:    "http://images.example/" + name + ".raw.zst",
				Sha256: strings.Repeat("ab", 32), SizeBytes: 2 << 30,
			},
			Format: instancev1.DiskFormat_DISK_FORMAT_RAW, Compression: instancev1.Compression_COMPRESSION_ZSTD,
		}},
	}}))
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	return resp.Msg.GetImage().GetId()
}

// instanceGone checks that the state's instances were released.
func instanceGone(a *accAPI) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		for _, rs := range s.RootModule().Resources {
			if rs.Type != "carbide_instance" {
				continue
			}
			got, err := a.client.Instances.GetInstance(ctx2(), connect.NewRequest(&instancev1.GetInstanceRequest{Id: rs.Primary.ID}))
			if err != nil {
				return err
			}
			switch got.Msg.GetInstance().GetState() {
			case instancev1.InstanceState_INSTANCE_STATE_RELEASED, instancev1.InstanceState_INSTANCE_STATE_RELEASING:
			default:
				return fmt.Errorf("instance %s is %s after destroy", rs.Primary.ID, got.Msg.GetInstance().GetState())
			}
		}
		return nil
	}
}

// TestInstanceFailure creates an instance on a machine that cannot boot:
// create ends with the API's failure reason, the instance stays in the
// state (tainted) as it is, can be imported, and destroy with
// wait_for_cleaning releases it.
func TestInstanceFailure(t *testing.T) {
	a := api(t)
	m := readyMachine(t, a, nil)
	image := testImage(t, a)
	config := a.providerConfig() + fmt.Sprintf(`
resource "carbide_instance" "i" {
  hostname            = "web-1"
  image_id            = %q
  machine_id          = %q
  user_data           = "#cloud-config\npackages: [nginx]\n"
  ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKtestkeytestkeytestkeytestkeytestkeytes test@example"]
  labels              = { app = "web" }
  wipe_mode           = "quick"
  wait_for_cleaning   = true
  timeouts = {
    create = "2m"
  }
}
`, image, m.GetId())
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             instanceGone(a),
		Steps: []resource.TestStep{
			{
				Config:      config,
				ExpectError: expectError(`The instance did not come up.*is failed: .*boot_agent did not finish within ` + bootAgentTimeout.String() + `.*tainted`),
			},
			{
				// The failed instance as the API holds it.
				RefreshState:       true,
				ExpectNonEmptyPlan: true, // tainted: replaced on the next apply
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_instance.i", "state", "failed"),
					resource.TestCheckResourceAttr("carbide_instance.i", "machine_id", m.GetId()),
					resource.TestCheckResourceAttr("carbide_instance.i", "labels.app", "web"),
					resource.TestCheckResourceAttr("carbide_instance.i", "wipe_mode", "quick"),
					resource.TestMatchResourceAttr("carbide_instance.i", "failure_reason", expectError("boot_agent did not finish")),
				),
			},
			{
				ResourceName:            "carbide_instance.i",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts", "wait_for_cleaning", "machine_id"},
			},
		},
	})
}

// TestInstanceCreateTimeout gives create less time than the machine has:
// the wait ends with a timeout that names timeouts.create.
func TestInstanceCreateTimeout(t *testing.T) {
	a := api(t)
	pool := "pool-" + strings.ReplaceAll(randomMAC(t), ":", "")
	readyMachine(t, a, map[string]string{"pool": pool})
	image := testImage(t, a)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             instanceGone(a),
		Steps: []resource.TestStep{{
			Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_instance" "i" {
  hostname = "web-2"
  image_id = %q
  selector = {
    labels   = { pool = %q }
    min_cpus = 2
  }
  timeouts = {
    create = "1s"
  }
}
`, image, pool),
			ExpectError: expectError(`Timed out waiting for the instance to run.*did not run within 1s \(timeouts.create\)`),
		}},
	})
}

// TestInstanceNoMachine checks the API's refusals: no Ready machine for
// the selector, a machine that is not Ready.
func TestInstanceNoMachine(t *testing.T) {
	a := api(t)
	image := testImage(t, a)
	pool := "none-" + strings.ReplaceAll(randomMAC(t), ":", "")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             machineGone(a),
		Steps: []resource.TestStep{
			{
				Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_instance" "i" {
  hostname = "web-3"
  image_id = %q
  selector = { labels = { pool = %q } }
}
`, image, pool),
				ExpectError: expectError(`resource_exhausted.*No Ready machine matches the selector`),
			},
			{
				Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_machine" "m" {
  macs = [%q]
}
resource "carbide_instance" "i" {
  hostname   = "web-4"
  image_id   = %q
  machine_id = carbide_machine.m.id
}
`, randomMAC(t), image),
				ExpectError: expectError(`failed_precondition.*The machine must be Ready`),
			},
		},
	})
}

// TestInstancePlanValidation checks that bad input fails the plan.
func TestInstancePlanValidation(t *testing.T) {
	a := api(t)
	const image = `image_id = "3f1b7a52-6a43-4a0e-9c1e-0d5b8f9a1c2e"`
	tests := map[string]struct {
		body string
		want string
	}{
		"machine and selector": {
			body: `hostname = "a"
  ` + image + `
  machine_id = "3f1b7a52-6a43-4a0e-9c1e-0d5b8f9a1c2f"
  selector   = { min_cpus = 4 }`,
			want: `Invalid Attribute Combination.*machine_id.*selector`,
		},
		"neither machine nor selector": {
			body: `hostname = "a"
  ` + image,
			want: `Missing Attribute Configuration.*Exactly one of these attributes must be configured: \[machine_id,selector\]`,
		},
		"bad hostname": {
			body: `hostname = "Web_1"
  ` + image + `
  selector = { min_cpus = 4 }`,
			want: `hostname must match the regular expression`,
		},
		"bad image id": {
			body: `hostname = "a"
  image_id = "debian-12"
  selector = { min_cpus = 4 }`,
			want: `image_id must be a UUID`,
		},
		"bad ssh key": {
			body: `hostname = "a"
  ` + image + `
  selector = { min_cpus = 4 }
  ssh_authorized_keys = ["not a key"]`,
			want: `ssh_authorized_keys\[0\] must match the regular expression`,
		},
		"bad wipe mode": {
			body: `hostname = "a"
  ` + image + `
  selector  = { min_cpus = 4 }
  wipe_mode = "shred"`,
			want: `value must be one of`,
		},
		"bad timeout": {
			body: `hostname = "a"
  ` + image + `
  selector = { min_cpus = 4 }
  timeouts = { create = "soon" }`,
			want: `"soon" must be a string containing a sequence of decimal numbers`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      a.providerConfig() + "resource \"carbide_instance\" \"i\" {\n  " + tc.body + "\n}\n",
					PlanOnly:    true,
					ExpectError: expectError(tc.want),
				}},
			})
		})
	}
}

// TestInstanceFailedIsReplaced imports (with an import block) an instance
// that failed outside Terraform: not tainted, it is planned for
// replacement all the same, as it will never run.
func TestInstanceFailedIsReplaced(t *testing.T) {
	a := api(t)
	m := readyMachine(t, a, nil)
	image := testImage(t, a)
	created, err := a.client.Instances.CreateInstance(ctx(t), connect.NewRequest(&instancev1.CreateInstanceRequest{
		Hostname: "web-5", ImageId: image,
		Target: &instancev1.CreateInstanceRequest_MachineId{MachineId: m.GetId()},
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetInstance().GetId()
	waitCtx, cancel := context.WithTimeout(context.Background(), 4*bootAgentTimeout)
	defer cancel()
	var se *carbide.StateError
	if _, err := a.client.WaitInstanceRunning(waitCtx, id); !errors.As(err, &se) || se.State != "failed" {
		t.Fatalf("instance %s on a machine that never boots: %v, want it failed", id, err)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             instanceGone(a),
		Steps: []resource.TestStep{{
			Config: a.providerConfig() + fmt.Sprintf(`
import {
  to = carbide_instance.i
  id = %q
}
resource "carbide_instance" "i" {
  hostname   = "web-5"
  image_id   = %q
  machine_id = %q
}
`, id, image, m.GetId()),
			ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
				plancheck.ExpectResourceAction("carbide_instance.i", plancheck.ResourceActionDestroyBeforeCreate),
			}},
			// Its machine failed too, so the new instance cannot have it.
			ExpectError: expectError(`failed_precondition.*The machine must be Ready`),
		}},
	})
}
