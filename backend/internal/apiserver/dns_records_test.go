package apiserver

import (
	"testing"

	"connectrpc.com/connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

const (
	recCNAME = networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME
	recTXT   = networkv1.DNSRecordType_DNS_RECORD_TYPE_TXT
	recSRV   = networkv1.DNSRecordType_DNS_RECORD_TYPE_SRV
)

// TestSegmentDNSRecords stores static records in canonical form, returns
// them from Get and List, and replaces them through the update mask.
func TestSegmentDNSRecords(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := rack1()
		seg.DnsRecords = []*networkv1.DNSRecord{
			{Name: "WWW", Type: recCNAME, Ttl: 60, Value: "Web1.Example.net."},
			{Name: "@", Type: recTXT, Value: `"v=spf1 -all"  "second"`},
			{Name: "_ldap._tcp", Type: recSRV, Value: "10 5 389  ldap1.example.net."},
		}
		created := createSegment(t, e, seg)
		want := []*networkv1.DNSRecord{
			{Name: "www", Type: recCNAME, Ttl: 60, Value: "web1.example.net."},
			{Name: "", Type: recTXT, Value: `"v=spf1 -all" "second"`},
			{Name: "_ldap._tcp", Type: recSRV, Value: "10 5 389 ldap1.example.net."},
		}
		if diff := cmp.Diff(want, created.GetDnsRecords(), protocmp.Transform()); diff != "" {
			t.Fatalf("created records (-want +got):\n%s", diff)
		}
		// A retried create with the same records is the same segment.
		if again := createSegment(t, e, seg); again.GetId() != created.GetId() {
			t.Errorf("retried create made segment %s, want %s", again.GetId(), created.GetId())
		}
		got, err := e.Segments.GetSegment(t.Context(), connect.NewRequest(&networkv1.GetSegmentRequest{Id: created.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got.Msg.GetSegment().GetDnsRecords(), protocmp.Transform()); diff != "" {
			t.Errorf("GetSegment records (-want +got):\n%s", diff)
		}
		list, err := e.Segments.ListSegments(t.Context(), connect.NewRequest(&networkv1.ListSegmentsRequest{Name: "rack1"}))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, list.Msg.GetSegments()[0].GetDnsRecords(), protocmp.Transform()); diff != "" {
			t.Errorf("ListSegments records (-want +got):\n%s", diff)
		}

		upd := &networkv1.Segment{Id: created.GetId(), DnsRecords: []*networkv1.DNSRecord{{Name: "ntp", Type: recCNAME, Value: "time.example.net."}}}
		resp, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{Segment: upd, UpdateMask: mask("dns_records")}))
		if err != nil {
			t.Fatalf("UpdateSegment(dns_records): %v", err)
		}
		if diff := cmp.Diff(upd.GetDnsRecords(), resp.Msg.GetSegment().GetDnsRecords(), protocmp.Transform()); diff != "" {
			t.Errorf("updated records (-want +got):\n%s", diff)
		}
		if resp.Msg.GetSegment().GetGateway() != created.GetGateway() {
			t.Errorf("gateway = %q after a dns_records update, want %q kept", resp.Msg.GetSegment().GetGateway(), created.GetGateway())
		}
	})
}

func TestSegmentDNSRecordsRefused(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		existing := createSegment(t, e, rack1())
		// A second segment in the same domain, with a TXT named "mail".
		createSegment(t, e, withSegment(func(s *networkv1.Segment) {
			s.Name = "rack1b"
			s.DnsRecords = []*networkv1.DNSRecord{{Name: "mail", Type: recTXT, Value: `"x"`}}
		}))
		// A machine named "web" with an interface on rack1.
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: "web", Macs: []string{testMAC(1)}})
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: existing.GetId(), Mac: testMAC(1)})

		records := func(rs ...*networkv1.DNSRecord) func(t *testing.T) error {
			return func(t *testing.T) error {
				seg := &networkv1.Segment{Id: existing.GetId(), DnsRecords: rs}
				_, err := e.Segments.UpdateSegment(t.Context(), connect.NewRequest(&networkv1.UpdateSegmentRequest{Segment: seg, UpdateMask: mask("dns_records")}))
				return err
			}
		}
		create := func(rs ...*networkv1.DNSRecord) func(t *testing.T) error {
			return func(t *testing.T) error {
				seg := withSegment(func(s *networkv1.Segment) { s.Domain = ""; s.DnsRecords = rs })
				_, err := e.Segments.CreateSegment(t.Context(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: seg}))
				return err
			}
		}
		runBadRequests(t, map[string]badRequest{
			"unspecified type": {records(&networkv1.DNSRecord{Name: "a", Value: `"x"`}), connect.CodeInvalidArgument, "dns_records[0].type"},
			"bad name":         {records(&networkv1.DNSRecord{Name: "a b", Type: recTXT, Value: `"x"`}), connect.CodeInvalidArgument, "dns_records[0].name"},
			"ttl":              {records(&networkv1.DNSRecord{Name: "a", Type: recTXT, Ttl: 604801, Value: `"x"`}), connect.CodeInvalidArgument, "dns_records[0].ttl"},
			"empty value":      {records(&networkv1.DNSRecord{Name: "a", Type: recTXT}), connect.CodeInvalidArgument, "dns_records[0].value"},
			"unquoted txt":     {records(&networkv1.DNSRecord{Name: "a", Type: recTXT, Value: "x"}), connect.CodeInvalidArgument, "dns_records[0] (a TXT): value"},
			"srv value":        {records(&networkv1.DNSRecord{Name: "_a._tcp", Type: recSRV, Value: "1 2 a.example."}), connect.CodeInvalidArgument, "dns_records[0] (_a._tcp SRV): value"},
			"no domain":        {create(&networkv1.DNSRecord{Name: "a", Type: recTXT, Value: `"x"`}), connect.CodeInvalidArgument, "segment.domain"},
			"cname and txt": {records(
				&networkv1.DNSRecord{Name: "a", Type: recTXT, Value: `"x"`},
				&networkv1.DNSRecord{Name: "a", Type: recCNAME, Value: "b.example."},
			), connect.CodeFailedPrecondition, "dns_records[1] is a CNAME"},
			"two cnames": {records(
				&networkv1.DNSRecord{Name: "a", Type: recCNAME, Value: "b.example."},
				&networkv1.DNSRecord{Name: "a", Type: recCNAME, Value: "c.example."},
			), connect.CodeFailedPrecondition, "CNAME"},
			"cname and other segment's txt": {records(&networkv1.DNSRecord{Name: "mail", Type: recCNAME, Value: "b.example."}),
				connect.CodeFailedPrecondition, `segment "rack1b"`},
			"cname and machine": {records(&networkv1.DNSRecord{Name: "web", Type: recCNAME, Value: "b.example."}),
				connect.CodeFailedPrecondition, "machine " + m.GetId()},
		})
	})
}
