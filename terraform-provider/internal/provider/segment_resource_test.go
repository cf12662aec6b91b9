package provider

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// segmentPrefixes hands each segment test its own /24s, so that tests that
// share the API never overlap.
var segmentPrefixes = make(chan int, 200)

func init() {
	for i := 1; i <= 200; i++ {
		segmentPrefixes <- i
	}
}

// segmentNet is a free 10.<n>.x.0/24 network number for a test.
func segmentNet(t *testing.T) int {
	t.Helper()
	select {
	case n := <-segmentPrefixes:
		return n
	default:
		t.Fatal("the segment tests ran out of test prefixes")
		return 0
	}
}

// getSegment reads a segment through the API.
func getSegment(t *testing.T, id string) (*networkv1.Segment, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := testAPI.client.Segments.GetSegment(ctx, connect.NewRequest(&networkv1.GetSegmentRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return out.Msg.GetSegment(), nil
}

// saveID stores the id attribute of the resource name into *id.
func saveID(name string, id *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[name]
		if !ok {
			return fmt.Errorf("%s is not in the state", name)
		}
		*id = rs.Primary.ID
		return nil
	}
}

// sameID checks that the id attribute of name is still *id.
func sameID(name string, id *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[name]
		if !ok {
			return fmt.Errorf("%s is not in the state", name)
		}
		if rs.Primary.ID != *id {
			return fmt.Errorf("%s was replaced: id %s, was %s", name, rs.Primary.ID, *id)
		}
		return nil
	}
}

// segmentsGone checks that none of the segments with these ids exists.
func segmentsGone(t *testing.T, ids ...*string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, id := range ids {
			if *id == "" {
				continue
			}
			if _, err := getSegment(t, *id); !isNotFound(err) {
				return fmt.Errorf("segment %s: want not found after destroy, got %v", *id, err)
			}
		}
		return nil
	}
}

func TestSegmentLifecycle(t *testing.T) {
	a := api(t)
	n, n2 := segmentNet(t), segmentNet(t)
	name := fmt.Sprintf("tf-seg-%d", n)
	create := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "test" {
  name           = %[1]q
  prefix         = "10.%[2]d.0.0/24"
  gateway        = "10.%[2]d.0.1"
  dns_servers    = ["10.%[2]d.0.2", "10.%[2]d.0.3"]
  domain         = "rack%[2]d.example.net"
  lease_duration = "2h"
  ranges = [
    { start = "10.%[2]d.0.100", end = "10.%[2]d.0.199" },
  ]
  reservations = [
    { mac = "52:54:00:AA:00:01", address = "10.%[2]d.0.10" },
  ]
  dns_records = [
    { name = "www", type = "cname", value = "web.example.net." },
    { name = "_ldap._tcp", type = "srv", ttl = 300, value = "10 5 389 ldap1.example.net." },
  ]
}
`, name, n)
	update := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "test" {
  name           = %[1]q
  prefix         = "10.%[2]d.0.0/24"
  gateway        = "10.%[2]d.0.254"
  dns_servers    = ["10.%[2]d.0.2"]
  domain         = "rack%[2]d.example.net"
  mtu            = 9000
  lease_duration = "30m"
  ranges = [
    { start = "10.%[2]d.0.100", end = "10.%[2]d.0.149" },
    { start = "10.%[2]d.0.200", end = "10.%[2]d.0.220" },
  ]
  ntp_servers = ["10.%[2]d.0.5"]
}
`, name, n)
	replace := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "test" {
  name   = %[1]q
  prefix = "10.%[2]d.0.0/24"
}
`, name, n2)
	var id, firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             segmentsGone(t, &firstID, &id),
		Steps: []resource.TestStep{
			{
				Config: create,
				Check: resource.ComposeAggregateTestCheckFunc(
					saveID("carbide_segment.test", &id),
					saveID("carbide_segment.test", &firstID),
					resource.TestCheckResourceAttrSet("carbide_segment.test", "id"),
					resource.TestCheckResourceAttrSet("carbide_segment.test", "create_time"),
					resource.TestCheckResourceAttr("carbide_segment.test", "lease_duration", "2h"),
					// The server's default MTU.
					resource.TestCheckResourceAttr("carbide_segment.test", "mtu", "1500"),
					resource.TestCheckResourceAttr("carbide_segment.test", "reservations.0.mac", "52:54:00:AA:00:01"),
					resource.TestCheckResourceAttr("carbide_segment.test", "dns_records.1.type", "srv"),
					resource.TestCheckResourceAttr("carbide_segment.test", "dns_records.1.ttl", "300"),
					func(*terraform.State) error {
						seg, err := getSegment(t, id)
						if err != nil {
							return err
						}
						if seg.GetGateway() != fmt.Sprintf("10.%d.0.1", n) || seg.GetLeaseDuration().AsDuration() != 2*time.Hour ||
							len(seg.GetReservations()) != 1 || seg.GetReservations()[0].GetMac() != "52:54:00:aa:00:01" ||
							seg.GetDnsRecords()[0].GetType() != networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME {
							return fmt.Errorf("the API holds another segment than configured: %v", seg)
						}
						return nil
					},
				),
			},
			{
				// Update in place.
				Config: update,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_segment.test", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					sameID("carbide_segment.test", &id),
					resource.TestCheckResourceAttr("carbide_segment.test", "gateway", fmt.Sprintf("10.%d.0.254", n)),
					resource.TestCheckResourceAttr("carbide_segment.test", "mtu", "9000"),
					resource.TestCheckResourceAttr("carbide_segment.test", "ranges.#", "2"),
					resource.TestCheckNoResourceAttr("carbide_segment.test", "reservations"),
					resource.TestCheckNoResourceAttr("carbide_segment.test", "dns_records"),
					func(*terraform.State) error {
						seg, err := getSegment(t, id)
						if err != nil {
							return err
						}
						if seg.GetMtu() != 9000 || len(seg.GetReservations()) != 0 || len(seg.GetDnsRecords()) != 0 ||
							seg.GetLeaseDuration().AsDuration() != 30*time.Minute || len(seg.GetNtpServers()) != 1 {
							return fmt.Errorf("the API did not take the update: %v", seg)
						}
						return nil
					},
				),
			},
			{
				// Import by id, then by name.
				ResourceName:      "carbide_segment.test",
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				ResourceName:      "carbide_segment.test",
				ImportState:       true,
				ImportStateId:     name,
				ImportStateVerify: true,
			},
			{
				// A new prefix replaces the segment.
				Config: replace,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_segment.test", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					saveID("carbide_segment.test", &id),
					resource.TestCheckResourceAttr("carbide_segment.test", "prefix", fmt.Sprintf("10.%d.0.0/24", n2)),
					func(*terraform.State) error {
						if id == firstID {
							return fmt.Errorf("the segment kept its id %s; want a new segment", id)
						}
						if _, err := getSegment(t, firstID); !isNotFound(err) {
							return fmt.Errorf("the replaced segment %s: want not found, got %v", firstID, err)
						}
						return nil
					},
				),
			},
		},
	})
}

// TestSegmentDrift changes and deletes a segment behind Terraform's back:
// the next plan shows the change, and apply puts the configuration back.
func TestSegmentDrift(t *testing.T) {
	a := api(t)
	n := segmentNet(t)
	config := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "drift" {
  name    = "tf-drift-%[1]d"
  prefix  = "10.%[1]d.0.0/24"
  gateway = "10.%[1]d.0.1"
  ranges  = [{ start = "10.%[1]d.0.10", end = "10.%[1]d.0.20" }]
}
`, n)
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             segmentsGone(t, &id),
		Steps: []resource.TestStep{
			{Config: config, Check: saveID("carbide_segment.drift", &id)},
			{
				// Someone changes the gateway and the ranges through the API.
				PreConfig: func() {
					ctx := context.Background()
					_, err := testAPI.client.Segments.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
						Segment: &networkv1.Segment{Id: id, Gateway: fmt.Sprintf("10.%d.0.9", n),
							Ranges: []*networkv1.AddressRange{{Start: fmt.Sprintf("10.%d.0.30", n), End: fmt.Sprintf("10.%d.0.40", n)}}},
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"gateway", "ranges"}},
					}))
					if err != nil {
						t.Fatalf("change the segment through the API: %v", err)
					}
				},
				RefreshState:       true,
				ExpectNonEmptyPlan: true,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("carbide_segment.drift", "gateway", fmt.Sprintf("10.%d.0.9", n)),
					resource.TestCheckResourceAttr("carbide_segment.drift", "ranges.0.start", fmt.Sprintf("10.%d.0.30", n)),
				),
			},
			{
				// The plan puts the configuration back, in place.
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_segment.drift", plancheck.ResourceActionUpdate),
				}},
				Check: func(*terraform.State) error {
					seg, err := getSegment(t, id)
					if err != nil {
						return err
					}
					if seg.GetGateway() != fmt.Sprintf("10.%d.0.1", n) || seg.GetRanges()[0].GetStart() != fmt.Sprintf("10.%d.0.10", n) {
						return fmt.Errorf("apply did not restore the configuration: %v", seg)
					}
					return nil
				},
			},
			{
				// Someone deletes it: the plan creates it again.
				PreConfig: func() {
					_, err := testAPI.client.Segments.DeleteSegment(context.Background(), connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: id}))
					if err != nil {
						t.Fatalf("delete the segment through the API: %v", err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("carbide_segment.drift", plancheck.ResourceActionCreate),
				}},
				Check: saveID("carbide_segment.drift", &id),
			},
		},
	})
}

// TestSegmentPlanValidation checks that the rules of the proto definitions
// reject bad input at plan time, before any call to the API.
func TestSegmentPlanValidation(t *testing.T) {
	a := api(t)
	tests := map[string]struct {
		attrs string
		want  string
	}{
		"name pattern":      {`name = "Rack_1"` + "\n" + `prefix = "10.250.0.0/24"`, `name.*must match the regular expression`},
		"prefix host bits":  {`name = "bad"` + "\n" + `prefix = "10.250.0.1/24"`, `prefix.*host bits zero, such as 10\.250\.0\.0/24`},
		"prefix missing":    {`name = "bad"`, `The argument "prefix" is required`},
		"gateway not ipv4":  {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `gateway = "router1"`, `gateway.*must be an IPv4 address`},
		"mtu out of range":  {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `mtu = 100`, `mtu.*between 576 and 9216`},
		"lease too short":   {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `lease_duration = "5s"`, `lease_duration.*at least 1m0s`},
		"lease not a time":  {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `lease_duration = "an hour"`, `lease_duration.*must be a duration`},
		"record type":       {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `dns_records = [{ name = "x", type = "mx", value = "10 mail.example.net." }]`, `dns_records\[0\]\.type.*value must be one of.*cname`},
		"reservation mac":   {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `reservations = [{ mac = "52-54-00-00-00-01", address = "10.250.0.5" }]`, `reservations\[0\]\.mac.*six colon-separated hex bytes`},
		"too many servers":  {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `ntp_servers = ["10.0.0.1","10.0.0.2","10.0.0.3","10.0.0.4","10.0.0.5","10.0.0.6","10.0.0.7","10.0.0.8","10.0.0.9"]`, `ntp_servers.*at most 8 elements`},
		"relays duplicated": {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `relay_addresses = ["10.1.1.1", "10.1.1.1"]`, `relay_addresses.*duplicate`},
		"output only id":    {`name = "bad"` + "\n" + `prefix = "10.250.0.0/24"` + "\n" + `id = "x"`, `Invalid Configuration for Read-Only Attribute`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: protoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      a.providerConfig() + "resource \"carbide_segment\" \"bad\" {\n" + tc.attrs + "\n}\n",
					PlanOnly:    true,
					ExpectError: expectError(tc.want),
				}},
			})
		})
	}
}

// TestSegmentAPIError checks that what only the API can check comes back
// with the API's message: a gateway outside the prefix, and a prefix that
// overlaps another segment's.
func TestSegmentAPIError(t *testing.T) {
	a := api(t)
	n := segmentNet(t)
	outside := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "bad" {
  name    = "tf-bad-%[1]d"
  prefix  = "10.%[1]d.0.0/24"
  gateway = "10.%[1]d.1.1"
}
`, n)
	overlap := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "a" {
  name   = "tf-overlap-a-%[1]d"
  prefix = "10.%[1]d.0.0/24"
}
resource "carbide_segment" "b" {
  name       = "tf-overlap-b-%[1]d"
  prefix     = "10.%[1]d.0.128/25"
  depends_on = [carbide_segment.a]
}
`, n)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: outside, ExpectError: expectError(fmt.Sprintf(`Cannot create the segment.*invalid_argument.*gateway: 10\.%d\.1\.1 is outside prefix`, n))},
			{Config: overlap, ExpectError: expectError(`Cannot create the segment.*failed_precondition.*overlaps segment "tf-overlap-a-`)},
		},
	})
}

func TestSegmentDataSource(t *testing.T) {
	a := api(t)
	n := segmentNet(t)
	config := a.providerConfig() + fmt.Sprintf(`
resource "carbide_segment" "src" {
  name    = "tf-ds-%[1]d"
  prefix  = "10.%[1]d.0.0/24"
  gateway = "10.%[1]d.0.1"
  domain  = "ds%[1]d.example.net"
  dns_records = [{ name = "txt", type = "txt", value = "\"hello\"" }]
}
data "carbide_segment" "by_name" {
  name = carbide_segment.src.name
}
data "carbide_segment" "by_id" {
  id = carbide_segment.src.id
}
`, n)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      a.providerConfig() + `data "carbide_segment" "none" { name = "tf-no-such-segment" }`,
				ExpectError: expectError(`Cannot find the segment.*no segment is named "tf-no-such-segment"`),
			},
			{
				Config:      a.providerConfig() + `data "carbide_segment" "both" {` + "\n" + `id = "3f6c1c8e-8b1f-4a43-9a59-2a8f5e0d6b21"` + "\n" + `name = "x"` + "\n}",
				ExpectError: expectError(`Invalid Attribute Combination`),
			},
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair("data.carbide_segment.by_name", "id", "carbide_segment.src", "id"),
					resource.TestCheckResourceAttrPair("data.carbide_segment.by_id", "name", "carbide_segment.src", "name"),
					resource.TestCheckResourceAttr("data.carbide_segment.by_name", "prefix", fmt.Sprintf("10.%d.0.0/24", n)),
					resource.TestCheckResourceAttr("data.carbide_segment.by_id", "gateway", fmt.Sprintf("10.%d.0.1", n)),
					resource.TestCheckResourceAttr("data.carbide_segment.by_id", "dns_records.0.type", "txt"),
					resource.TestCheckResourceAttr("data.carbide_segment.by_id", "lease_duration", "1h"),
				),
			},
		},
	})
}
