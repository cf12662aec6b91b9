package schemagen

import (
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/reflect/protoreflect"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// fieldOf is the descriptor of the field name of the message of x.
func fieldOf(x interface {
	ProtoReflect() protoreflect.Message
}, name string) protoreflect.FieldDescriptor {
	return x.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
}

func TestRequired(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		fd   protoreflect.FieldDescriptor
		want bool
	}{
		"min_len":                    {fieldOf(&networkv1.Segment{}, "name"), true},
		"well-known format":          {fieldOf(&networkv1.Segment{}, "prefix"), true},
		"ignored when empty":         {fieldOf(&networkv1.Segment{}, "gateway"), false},
		"ignored zero number":        {fieldOf(&networkv1.Segment{}, "mtu"), false},
		"max_items only":             {fieldOf(&networkv1.Segment{}, "dns_servers"), false},
		"min_items":                  {fieldOf(&instancev1.Image{}, "firmware"), true},
		"enum not_in 0":              {fieldOf(&networkv1.DNSRecord{}, "type"), true},
		"enum defined_only":          {fieldOf(&instancev1.DiskImage{}, "compression"), false},
		"required message":           {fieldOf(&instancev1.DiskImage{}, "file"), true},
		"pattern matching empty":     {fieldOf(&machinev1.Machine{}, "hostname"), false},
		"pattern not matching empty": {fieldOf(&instancev1.Artifact{}, "sha256"), true},
		"cel matches":                {fieldOf(&networkv1.Reservation{}, "mac"), true},
		"cel allowing empty":         {fieldOf(&machinev1.ListMachinesRequest{}, "mac"), false},
		"no rules":                   {fieldOf(&networkv1.Segment{}, "create_time"), false},
		"int range not containing 0": {fieldOf(&instancev1.Artifact{}, "size_bytes"), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := required(tc.fd, fieldRules(tc.fd)); got != tc.want {
				t.Errorf("required(%s) = %v, want %v", tc.fd.FullName(), got, tc.want)
			}
		})
	}
}

func TestCELRegexp(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		expr        string
		want        string
		allowsEmpty bool
		ok          bool
	}{
		"matches":       {`this.matches('^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$')`, `^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`, false, true},
		"or empty":      {`this == '' || this.matches('^a+$')`, `^a+$`, true, true},
		"escaped":       {`this.matches('^a\\.b$')`, `^a\.b$`, false, true},
		"other rule":    {`size(this) > 3`, "", false, false},
		"bad regexp":    {`this.matches('(')`, "", false, false},
		"and something": {`this.matches('^a$') && size(this) < 3`, "", false, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := &validate.Rule{}
			r.SetExpression(tc.expr)
			got, allowsEmpty, ok := celRegexp(r)
			if got != tc.want || allowsEmpty != tc.allowsEmpty || ok != tc.ok {
				t.Errorf("celRegexp(%s) = %q, %v, %v; want %q, %v, %v", tc.expr, got, allowsEmpty, ok, tc.want, tc.allowsEmpty, tc.ok)
			}
		})
	}
}

func TestIntBounds(t *testing.T) {
	t.Parallel()
	fd := fieldOf(&networkv1.Segment{}, "mtu")
	lo, hi, in := intBounds(fd.Kind(), numberRules(fieldRules(fd)))
	if lo != 576 || hi != 9216 || in != nil {
		t.Errorf("mtu bounds = %d, %d, %v; want 576, 9216", lo, hi, in)
	}
	fd = fieldOf(&networkv1.DNSRecord{}, "ttl")
	if lo, hi, _ := intBounds(fd.Kind(), numberRules(fieldRules(fd))); lo != 0 || hi != 604800 {
		t.Errorf("ttl bounds = %d, %d; want the uint32 floor 0 and 604800", lo, hi)
	}
}

func TestEnumNames(t *testing.T) {
	t.Parallel()
	fd := fieldOf(&networkv1.DNSRecord{}, "type")
	if got := enumNames(fd.Enum(), fieldRules(fd)); len(got) != 3 || got[0] != "cname" || got[2] != "srv" {
		t.Errorf("enumNames(DNSRecordType) = %v", got)
	}
}
