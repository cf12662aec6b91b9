package segments

import (
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/ent/schema"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/google/go-cmp/cmp"
)

const (
	cname = networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME
	txt   = networkv1.DNSRecordType_DNS_RECORD_TYPE_TXT
	srv   = networkv1.DNSRecordType_DNS_RECORD_TYPE_SRV
)

func TestCheckDNSRecordsCanonical(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in   *networkv1.DNSRecord
		want schema.DNSRecord
	}{
		"cname lower-cased":  {&networkv1.DNSRecord{Name: "WWW", Type: cname, Value: " Web1.Example.NET. "}, schema.DNSRecord{Name: "www", Type: "CNAME", Value: "web1.example.net."}},
		"apex txt as @":      {&networkv1.DNSRecord{Name: "@", Type: txt, Ttl: 60, Value: `"v=spf1 -all"`}, schema.DNSRecord{Type: "TXT", TTL: 60, Value: `"v=spf1 -all"`}},
		"txt several":        {&networkv1.DNSRecord{Type: txt, Value: `"a b"   "c\"d" "\\" ""`}, schema.DNSRecord{Type: "TXT", Value: `"a b" "c\"d" "\\" ""`}},
		"txt decimal escape": {&networkv1.DNSRecord{Type: txt, Value: `"\065\009x\y"`}, schema.DNSRecord{Type: "TXT", Value: `"A\009xy"`}},
		"txt utf-8":          {&networkv1.DNSRecord{Type: txt, Value: `"é"`}, schema.DNSRecord{Type: "TXT", Value: `"\195\169"`}},
		"srv":                {&networkv1.DNSRecord{Name: "_ldap._tcp", Type: srv, Value: "10  5 389\tLDAP1.example.net."}, schema.DNSRecord{Name: "_ldap._tcp", Type: "SRV", Value: "10 5 389 ldap1.example.net."}},
		"srv no service":     {&networkv1.DNSRecord{Name: "_http._tcp", Type: srv, Value: "0 0 0 ."}, schema.DNSRecord{Name: "_http._tcp", Type: "SRV", Value: "0 0 0 ."}},
		"ttl one week":       {&networkv1.DNSRecord{Name: "a", Type: txt, Ttl: 604800, Value: `"x"`}, schema.DNSRecord{Name: "a", Type: "TXT", TTL: 604800, Value: `"x"`}},
		"txt 255 bytes":      {&networkv1.DNSRecord{Type: txt, Value: `"` + strings.Repeat("x", 255) + `"`}, schema.DNSRecord{Type: "TXT", Value: `"` + strings.Repeat("x", 255) + `"`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := checkDNSRecords("rack1.example.net", []*networkv1.DNSRecord{tc.in})
			if err != nil {
				t.Fatalf("checkDNSRecords: %v", err)
			}
			if diff := cmp.Diff([]schema.DNSRecord{tc.want}, got); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			// The canonical form reads back as itself.
			again, err := checkDNSRecords("rack1.example.net", []*networkv1.DNSRecord{{
				Name: got[0].Name, Type: tc.in.Type, Ttl: got[0].TTL, Value: got[0].Value,
			}})
			if err != nil || !cmp.Equal(got, again) {
				t.Errorf("canonical form %+v reads back as %+v, %v", got, again, err)
			}
		})
	}
}

func TestCheckDNSRecordsRefuses(t *testing.T) {
	t.Parallel()
	rec := func(name string, typ networkv1.DNSRecordType, value string) []*networkv1.DNSRecord {
		return []*networkv1.DNSRecord{{Name: name, Type: typ, Value: value}}
	}
	tests := map[string]struct {
		domain string
		in     []*networkv1.DNSRecord
		want   string // part of the message
	}{
		"no domain":          {"", rec("www", cname, "a.example."), "set segment.domain"},
		"unspecified type":   {"d.example", rec("www", 0, "x"), "must be CNAME, TXT or SRV"},
		"absolute name":      {"d.example", rec("www.d.example.", cname, "a.example."), "ends in a dot"},
		"empty label":        {"d.example", rec("a..b", txt, `"x"`), "empty label"},
		"underscore inside":  {"d.example", rec("a_b", txt, `"x"`), `label "a_b"`},
		"dash first":         {"d.example", rec("-a", txt, `"x"`), `label "-a"`},
		"long label":         {"d.example", rec(strings.Repeat("a", 64), txt, `"x"`), "longer than 63"},
		"long name":          {strings.Repeat("d", 60) + ".example", rec(strings.Repeat("a.", 95)+"a", txt, `"x"`), "at most 253"},
		"ttl over a week":    {"d.example", []*networkv1.DNSRecord{{Name: "a", Type: txt, Ttl: 604801, Value: `"x"`}}, "more than a week"},
		"cname at apex":      {"d.example", rec("@", cname, "a.example."), "apex"},
		"cname relative":     {"d.example", rec("www", cname, "web1"), "ending in a dot"},
		"cname root":         {"d.example", rec("www", cname, "."), "ending in a dot"},
		"cname bad target":   {"d.example", rec("www", cname, "we b.example."), "not allowed"},
		"txt unquoted":       {"d.example", rec("a", txt, "v=spf1 -all"), "double-quoted"},
		"txt unclosed":       {"d.example", rec("a", txt, `"abc`), "no closing quote"},
		"txt lone backslash": {"d.example", rec("a", txt, `"abc\`), "lone backslash"},
		"txt short escape":   {"d.example", rec("a", txt, `"\12"`), "three digits"},
		"txt escape 256":     {"d.example", rec("a", txt, `"\256"`), "above 255"},
		"txt glued":          {"d.example", rec("a", txt, `"a""b"`), "separated by a space"},
		"txt control":        {"d.example", rec("a", txt, "\"a\nb\""), "control character"},
		"txt 256 bytes":      {"d.example", rec("a", txt, `"`+strings.Repeat("x", 256)+`"`), "at most 255"},
		"txt empty":          {"d.example", rec("a", txt, "  "), "empty"},
		"txt too long":       {"d.example", rec("a", txt, strings.Repeat(`"x" `, 1025)), "at most 4096"},
		"srv three fields":   {"d.example", rec("_a._tcp", srv, "10 5 389"), "four fields"},
		"srv port too big":   {"d.example", rec("_a._tcp", srv, "10 5 65536 a.example."), "port"},
		"srv negative":       {"d.example", rec("_a._tcp", srv, "-1 5 1 a.example."), "priority"},
		"srv relative":       {"d.example", rec("_a._tcp", srv, "1 5 1 ldap"), "ending in a dot"},
		"duplicate": {"d.example", []*networkv1.DNSRecord{
			{Name: "a", Type: txt, Value: `"x"`}, {Name: "A", Type: txt, Ttl: 5, Value: `"x"`},
		}, "same record as dns_records[0]"},
		"too many": {"d.example", make([]*networkv1.DNSRecord, 1025), "at most 1024"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := checkDNSRecords(tc.domain, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("checkDNSRecords = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
