package provider

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
)

// imageSeq numbers the image names of the tests that share the API.
var imageSeq atomic.Int64

// imageName is a fresh image name for a test.
func imageName(prefix string) string {
	return fmt.Sprintf("tf-%s-%d", prefix, imageSeq.Add(1))
}

// fakeSHA256 is a well-formed SHA-256 in hex (the API never fetches it).
var fakeSHA256 = strings.Repeat("ab", 32)

// getImage reads an image through the API.
func getImage(t *testing.T, id string) (*instancev1.Image, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := testAPI.client.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return out.Msg.GetImage(), nil
}

// imagesGone checks that none of the images with these ids exists.
func imagesGone(t *testing.T, ids ...*string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, id := range ids {
			if *id == "" {
				continue
			}
			if _, err := getImage(t, *id); !isNotFound(err) {
				return fmt.Errorf("image %s: want not found after destroy, got %v", *id, err)
			}
		}
		return nil
	}
}

// diskImageConfig is a carbide_os_image "test" with a qcow2 disk image.
func diskImageConfig(a *accAPI, name, version, extra string) string {
	return a.providerConfig() + fmt.Sprintf(`
resource "carbide_os_image" "test" {
  name         = %q
  version      = %q
  architecture = "amd64"
  firmware     = ["uefi", "bios"]
  disk = {
    file = {
      url        = "http://127.0.0.1:8080/images/debian-12.qcow2"
      sha256     = %q
      size_bytes = 1073741824
    }
    format = "qcow2"
  }
%s
}
`, name, version, fakeSHA256, extra)
}

func TestOSImageLifecycle(t *testing.T) {
	a := api(t)
	name := imageName("img")
	var id, firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             imagesGone(t, &firstID, &id),
		Steps: []resource.TestStep{
			{
				Config: diskImageConfig(a, name, "12", `description = "Debian 12"`),
				Check: resource.ComposeAggregateTestCheckFunc(
					saveID("carbide_os_image.test", &id),
					saveID("carbide_os_image.test", &firstID),
					resource.TestCheckResourceAttrSet("carbide_os_image.test", "create_time"),
					resource.TestCheckResourceAttr("carbide_os_image.test", "firmware.#", "2"),
					resource.TestCheckResourceAttr("carbide_os_image.test", "firmware.0", "uefi"),
					// The server's default compression.
					resource.TestCheckResourceAttr("carbide_os_image.test", "disk.compression", "none"),
					resource.TestCheckNoResourceAttr("carbide_os_image.test", "netboot"),
					func(*terraform.State) error {
						img, err := getImage(t, id)
						if err != nil {
							return err
						}
						if img.GetDisk().GetFormat() != instancev1.DiskFormat_DISK_FORMAT_QCOW2 || img.GetDisk().GetFile().GetSizeBytes() != 1<<30 ||
							len(img.GetFirmware()) != 2 || img.GetFirmware()[0] != instancev1.Firmware_FIRMWARE_UEFI || img.GetDeprecated() {
							return fmt.Errorf("the API holds another image than configured: %v", img)
						}
						return nil
					},
				),
			},
			{
				// Deprecation changes in place.
				Config: diskImageConfig(a, name, "12", "description = \"Debian 12\"\ndeprecated = true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_os_image.test", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					sameID("carbide_os_image.test", &id),
					resource.TestCheckResourceAttr("carbide_os_image.test", "deprecated", "true"),
					func(*terraform.State) error {
						img, err := getImage(t, id)
						if err != nil {
							return err
						}
						if !img.GetDeprecated() {
							return fmt.Errorf("the API did not deprecate the image: %v", img)
						}
						return nil
					},
				),
			},
			{
				ResourceName:      "carbide_os_image.test",
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				ResourceName:      "carbide_os_image.test",
				ImportState:       true,
				ImportStateId:     name + ":12",
				ImportStateVerify: true,
			},
			{
				// The API cannot change an image: a new description replaces it.
				Config: diskImageConfig(a, name, "12", "description = \"Debian 12 (bookworm)\"\ndeprecated = true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_os_image.test", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					saveID("carbide_os_image.test", &id),
					resource.TestCheckResourceAttr("carbide_os_image.test", "description", "Debian 12 (bookworm)"),
					func(*terraform.State) error {
						if id == firstID {
							return fmt.Errorf("the image kept its id %s; want a new image", id)
						}
						img, err := getImage(t, id)
						if err != nil {
							return err
						}
						if !img.GetDeprecated() {
							return fmt.Errorf("the new image should be deprecated as configured: %v", img)
						}
						return nil
					},
				),
			},
		},
	})
}

// TestOSImageNetboot creates a netboot image, whose initrd is optional.
func TestOSImageNetboot(t *testing.T) {
	a := api(t)
	name := imageName("netboot")
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             imagesGone(t, &id),
		Steps: []resource.TestStep{{
			Config: a.providerConfig() + fmt.Sprintf(`
resource "carbide_os_image" "netboot" {
  name         = %q
  version      = "2026.11.1"
  architecture = "amd64"
  firmware     = ["bios"]
  netboot = {
    kernel  = { url = "https://boot.example.net/vmlinuz", sha256 = %q }
    initrd  = { url = "https://boot.example.net/initrd.img", sha256 = %q }
    cmdline = "console=ttyS0,115200 quiet"
  }
}
`, name, fakeSHA256, fakeSHA256),
			Check: resource.ComposeAggregateTestCheckFunc(
				saveID("carbide_os_image.netboot", &id),
				resource.TestCheckResourceAttr("carbide_os_image.netboot", "netboot.cmdline", "console=ttyS0,115200 quiet"),
				resource.TestCheckNoResourceAttr("carbide_os_image.netboot", "disk"),
				resource.TestCheckNoResourceAttr("carbide_os_image.netboot", "netboot.kernel.size_bytes"),
			),
		}},
	})
}

// TestOSImageDrift un-deprecates an image behind Terraform's back: the
// next plan shows it and apply deprecates it again.
func TestOSImageDrift(t *testing.T) {
	a := api(t)
	name := imageName("drift")
	config := diskImageConfig(a, name, "1", "deprecated = true")
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             imagesGone(t, &id),
		Steps: []resource.TestStep{
			{Config: config, Check: saveID("carbide_os_image.test", &id)},
			{
				PreConfig: func() {
					_, err := testAPI.client.Images.DeprecateImage(context.Background(),
						connect.NewRequest(&instancev1.DeprecateImageRequest{Id: id, Deprecated: false}))
					if err != nil {
						t.Fatalf("change the image through the API: %v", err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_os_image.test", plancheck.ResourceActionUpdate),
				}},
				Check: func(*terraform.State) error {
					img, err := getImage(t, id)
					if err != nil {
						return err
					}
					if !img.GetDeprecated() {
						return fmt.Errorf("apply did not deprecate the image again: %v", img)
					}
					return nil
				},
			},
		},
	})
}

// TestOSImagePlanValidation checks that the rules of the proto definitions
// reject bad input at plan time.
func TestOSImagePlanValidation(t *testing.T) {
	a := api(t)
	disk := `disk = { file = { url = "http://x.example/i.raw", sha256 = "` + fakeSHA256 + `" }, format = "raw" }`
	base := "name = \"bad\"\nversion = \"1\"\narchitecture = \"amd64\"\n"
	tests := map[string]struct {
		attrs string
		want  string
	}{
		"bad sha256": {base + `firmware = ["uefi"]` + "\n" +
			`disk = { file = { url = "http://x.example/i.raw", sha256 = "ABC" }, format = "raw" }`, `disk\.file\.sha256.*must match the regular expression`},
		"not http": {base + `firmware = ["uefi"]` + "\n" +
			`disk = { file = { url = "ftp://x.example/i.raw", sha256 = "` + fakeSHA256 + `" }, format = "raw" }`, `disk\.file\.url.*must match the regular expression \^https\?://`},
		"unknown format": {base + `firmware = ["uefi"]` + "\n" +
			`disk = { file = { url = "http://x.example/i.raw", sha256 = "` + fakeSHA256 + `" }, format = "vmdk" }`, `disk\.format.*value must be one of.*raw.*qcow2`},
		"no firmware":      {base + "firmware = []\n" + disk, `firmware.*at least 1`},
		"unknown firmware": {base + `firmware = ["efi"]` + "\n" + disk, `firmware\[0\].*value must be one of.*bios.*uefi`},
		"disk and netboot": {base + `firmware = ["uefi"]` + "\n" + disk + "\n" +
			`netboot = { kernel = { url = "http://x.example/k", sha256 = "` + fakeSHA256 + `" } }`, `Conflicting attributes.*disk and netboot are all set; set only one of disk or netboot`},
		"no boot":    {base + `firmware = ["uefi"]`, `Missing attribute.*Set one of disk or netboot in the resource`},
		"bad name":   {`name = "Debian"` + "\nversion = \"1\"\narchitecture = \"amd64\"\nfirmware = [\"uefi\"]\n" + disk, `name.*must match the regular expression`},
		"no version": {"name = \"bad\"\narchitecture = \"amd64\"\nfirmware = [\"uefi\"]\n" + disk, `The argument "version" is required`},
		"cmdline": {base + `firmware = ["uefi"]` + "\n" +
			`netboot = { kernel = { url = "http://x.example/k", sha256 = "` + fakeSHA256 + `" }, cmdline = "a;reboot" }`, `netboot\.cmdline.*must match`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      a.providerConfig() + "resource \"carbide_os_image\" \"bad\" {\n" + tc.attrs + "\n}\n",
					PlanOnly:    true,
					ExpectError: expectError(tc.want),
				}},
			})
		})
	}
}

// TestOSImageAPIError checks that rules only the API checks come back with
// the API's message: a compressed qcow2 image (a rule across fields) and a
// name and version that exist already.
func TestOSImageAPIError(t *testing.T) {
	a := api(t)
	name := imageName("dup")
	gz := a.providerConfig() + fmt.Sprintf(`
resource "carbide_os_image" "gz" {
  name         = %q
  version      = "1"
  architecture = "amd64"
  firmware     = ["uefi"]
  disk = {
    file        = { url = "http://x.example/i.qcow2.gz", sha256 = %q }
    format      = "qcow2"
    compression = "gzip"
  }
}
`, imageName("gz"), fakeSHA256)
	dup := diskImageConfig(a, name, "1", "") + fmt.Sprintf(`
resource "carbide_os_image" "again" {
  name         = %q
  version      = "1"
  architecture = "amd64"
  firmware     = ["uefi"]
  disk = {
    file   = { url = "http://x.example/other.raw", sha256 = %q }
    format = "raw"
  }
  depends_on = [carbide_os_image.test]
}
`, name, fakeSHA256)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: gz, ExpectError: expectError(`Cannot create the OS image.*invalid_argument.*cannot be compressed as a whole`)},
			{Config: dup, ExpectError: expectError(`Cannot create the OS image.*already_exists`)},
		},
	})
}

func TestOSImageDataSource(t *testing.T) {
	a := api(t)
	name := imageName("ds")
	config := diskImageConfig(a, name, "3.1", `description = "for the data source"`) + `
data "carbide_os_image" "by_name" {
  name    = carbide_os_image.test.name
  version = carbide_os_image.test.version
}
data "carbide_os_image" "by_id" {
  id = carbide_os_image.test.id
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      a.providerConfig() + `data "carbide_os_image" "x" { name = "debian" }`,
				ExpectError: expectError(`Invalid Attribute Combination`),
			},
			{
				Config: diskImageConfig(a, name, "3.1", `description = "for the data source"`) + `
data "carbide_os_image" "none" {
  name       = carbide_os_image.test.name
  version    = "9"
  depends_on = [carbide_os_image.test]
}
`,
				ExpectError: expectError(fmt.Sprintf(`Cannot find the OS image.*image "%s" has no version "9"; it has 3\.1`, name)),
			},
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair("data.carbide_os_image.by_name", "id", "carbide_os_image.test", "id"),
					resource.TestCheckResourceAttrPair("data.carbide_os_image.by_id", "name", "carbide_os_image.test", "name"),
					resource.TestCheckResourceAttr("data.carbide_os_image.by_id", "description", "for the data source"),
					resource.TestCheckResourceAttr("data.carbide_os_image.by_name", "disk.format", "qcow2"),
					resource.TestCheckResourceAttr("data.carbide_os_image.by_name", "firmware.1", "bios"),
				),
			},
		},
	})
}
