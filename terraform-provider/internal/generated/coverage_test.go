package generated

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	rschema "github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	terraformv1 "github.com/carbide-dev/carbide/gen/carbide/terraform/v1"
)

// fieldOptions are the Terraform options of fd (empty when it has none).
func fieldOptions(fd protoreflect.FieldDescriptor) *terraformv1.FieldOptions {
	o, _ := proto.GetExtension(fd.Options(), terraformv1.E_Field).(*terraformv1.FieldOptions)
	return o
}

// uncovered are the fields of md that have neither an attribute in attrs
// nor an exclude annotation.
func uncovered[A any](md protoreflect.MessageDescriptor, attrs map[string]A) []string {
	var out []string
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if _, ok := attrs[string(fd.Name())]; ok || fieldOptions(fd).GetExclude() {
			continue
		}
		out = append(out, string(fd.FullName()))
	}
	return out
}

// unknownAttributes are the attributes in attrs that are no field of md.
func unknownAttributes[A any](md protoreflect.MessageDescriptor, attrs map[string]A) []string {
	var out []string
	for name := range attrs {
		if md.Fields().ByName(protoreflect.Name(name)) == nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// annotated are the messages of every registered file that the Terraform
// options ask to generate, with the messages their kept fields use.
func annotated(t *testing.T) map[protoreflect.FullName]protoreflect.MessageDescriptor {
	t.Helper()
	out := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	var add func(md protoreflect.MessageDescriptor)
	add = func(md protoreflect.MessageDescriptor) {
		if out[md.FullName()] != nil {
			return
		}
		out[md.FullName()] = md
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fieldOptions(fd).GetExclude() || fd.Message() == nil || fd.IsMap() {
				continue
			}
			if !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
				add(fd.Message())
			}
		}
	}
	var walk func(ms protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			md := ms.Get(i)
			if o, _ := proto.GetExtension(md.Options(), terraformv1.E_Message).(*terraformv1.MessageOptions); o.GetGenerate() {
				add(md)
			}
			walk(md.Messages())
		}
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(fd.Package()), "carbide.") {
			walk(fd.Messages())
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("no message of the registered carbide.* files is annotated with (carbide.terraform.v1.message).generate")
	}
	return out
}

// TestEveryFieldHasAnAttribute fails when a field of a generated message
// has no attribute in its schemas and no exclude annotation, or when a
// message that should be generated is not.
func TestEveryFieldHasAnAttribute(t *testing.T) {
	t.Parallel()
	want := annotated(t)
	got := map[protoreflect.FullName]Message{}
	for _, m := range Messages {
		got[m.Descriptor.FullName()] = m
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s should be generated (it is annotated, or an annotated message uses it) but is not: run make generate", name)
		}
	}
	for name, m := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is generated but neither annotated nor used by an annotated message", name)
		}
		md := m.Descriptor
		for what, missing := range map[string][]string{
			"resource schema":          uncovered(md, m.ResourceAttributes()),
			"computed resource schema": uncovered(md, m.ComputedResourceAttributes()),
			"data source schema":       uncovered(md, m.DataSourceAttributes()),
			"attribute types":          uncovered(md, m.AttrTypes()),
		} {
			for _, f := range missing {
				t.Errorf("field %s has no attribute in the %s of %s; generate it, or annotate it [(carbide.terraform.v1.field).exclude = true]", f, what, name)
			}
		}
		if extra := unknownAttributes(md, m.AttrTypes()); len(extra) > 0 {
			t.Errorf("%s: attributes %v are no field of the message", name, extra)
		}
	}
}

// TestUncoveredFindsMissingFields shows that the coverage check fails: a
// message with a field that has no attribute and no exclude annotation.
func TestUncoveredFindsMissingFields(t *testing.T) {
	t.Parallel()
	excluded := &descriptorpb.FieldOptions{}
	proto.SetExtension(excluded, terraformv1.E_Field, &terraformv1.FieldOptions{Exclude: true})
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("coverage_test.proto"),
		Package: proto.String("carbide.coveragetest"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Thing"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("kept"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("kept")},
				{Name: proto.String("excluded"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("excluded"), Options: excluded},
				{Name: proto.String("forgotten"), Number: proto.Int32(3), Type: str, Label: opt, JsonName: proto.String("forgotten")},
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	md := fd.Messages().Get(0)
	tests := map[string]struct {
		attrs map[string]rschema.Attribute
		want  []string
	}{
		"one forgotten": {
			attrs: map[string]rschema.Attribute{"kept": rschema.StringAttribute{Optional: true}},
			want:  []string{"carbide.coveragetest.Thing.forgotten"},
		},
		"all there": {
			attrs: map[string]rschema.Attribute{"kept": rschema.StringAttribute{Optional: true}, "forgotten": rschema.StringAttribute{Optional: true}},
		},
		"none": {
			attrs: map[string]rschema.Attribute{},
			want:  []string{"carbide.coveragetest.Thing.kept", "carbide.coveragetest.Thing.forgotten"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := uncovered(md, tc.attrs); !slices.Equal(got, tc.want) {
				t.Errorf("uncovered = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSchemasAreValid builds a resource and a data source schema from each
// generated message and has the framework check them.
func TestSchemasAreValid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, m := range Messages {
		t.Run(string(m.Descriptor.Name()), func(t *testing.T) {
			t.Parallel()
			for _, d := range (rschema.Schema{Attributes: m.ResourceAttributes()}).ValidateImplementation(ctx) {
				t.Errorf("resource schema: %s: %s", d.Summary(), d.Detail())
			}
			for _, d := range (rschema.Schema{Attributes: m.ComputedResourceAttributes()}).ValidateImplementation(ctx) {
				t.Errorf("computed resource schema: %s: %s", d.Summary(), d.Detail())
			}
			for _, d := range (dschema.Schema{Attributes: m.DataSourceAttributes()}).ValidateImplementation(ctx) {
				t.Errorf("data source schema: %s: %s", d.Summary(), d.Detail())
			}
		})
	}
}

// fill sets every field of m to a value that is not the zero value (the
// first member of each oneof only), nested messages to depth levels.
func fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(0) != fd {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			mp.Set(protoreflect.ValueOfString("key").MapKey(), protoreflect.ValueOfString("value-"+string(fd.Name())))
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range 2 {
				if fd.Message() != nil {
					if depth == 0 {
						break
					}
					e := l.NewElement()
					fill(e.Message(), depth-1)
					l.Append(e)
					continue
				}
				l.Append(scalar(fd, j))
			}
		case fd.Message() != nil:
			switch fd.Message().FullName() {
			case "google.protobuf.Timestamp":
				m.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)).ProtoReflect()))
			case "google.protobuf.Duration":
				m.Set(fd, protoreflect.ValueOfMessage(durationpb.New(90*time.Second).ProtoReflect()))
			default:
				if depth > 0 {
					fill(m.Mutable(fd).Message(), depth-1)
				}
			}
		default:
			m.Set(fd, scalar(fd, 0))
		}
	}
}

// scalar is a non-zero value of the scalar field fd; j tells list
// elements apart.
func scalar(fd protoreflect.FieldDescriptor, j int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d", fd.Name(), j))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fmt.Sprintf("%s-%d", fd.Name(), j)))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(1 + j%(vals.Len()-1)).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(7 + j))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(7 + j))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(7 + j))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(7 + j))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(7.5 + float64(j)))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(7.5 + float64(j))
	}
	panic(fmt.Sprintf("no test value for %s", fd.Kind()))
}

// clearUnkept clears the fields of m, recursively, that a model does not
// keep: excluded and write-only ones.
func clearUnkept(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		o := fieldOptions(fd)
		switch {
		case o.GetExclude() || o.GetWriteOnly():
			m.Clear(fd)
		case fd.IsMap():
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				clearUnkept(v.List().Get(i).Message())
			}
		case !fd.IsList() && fd.Message() != nil:
			clearUnkept(v.Message())
		}
		return true
	})
}

// TestRoundTrip converts a message with every field set to its model, puts
// the model into a Terraform state of the resource schema (which checks the
// model's tags against the schema), and back: the message must come back
// as it was, but for the fields a model does not keep.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, m := range Messages {
		t.Run(string(m.Descriptor.Name()), func(t *testing.T) {
			t.Parallel()
			in := m.FromProto
			x := (*nilMessage(m)).ProtoReflect().Type().New()
			fill(x, 3)
			model, diags := in(ctx, x.Interface())
			for _, d := range diags {
				t.Fatalf("FromProto: %s: %s", d.Summary(), d.Detail())
			}
			for _, attrs := range []map[string]rschema.Attribute{m.ResourceAttributes(), m.ComputedResourceAttributes()} {
				state := tfsdk.State{Schema: rschema.Schema{Attributes: attrs}}
				for _, d := range state.Set(ctx, model) {
					t.Errorf("state.Set: %s: %s", d.Summary(), d.Detail())
				}
			}
			dstate := tfsdk.State{Schema: dschema.Schema{Attributes: m.DataSourceAttributes()}}
			for _, d := range dstate.Set(ctx, model) {
				t.Errorf("data source state.Set: %s: %s", d.Summary(), d.Detail())
			}
			out, diags := m.ToProto(ctx, model)
			for _, d := range diags {
				t.Fatalf("ToProto: %s: %s", d.Summary(), d.Detail())
			}
			want := proto.Clone(x.Interface())
			clearUnkept(want.ProtoReflect())
			if !proto.Equal(out, want) {
				t.Errorf("round trip changed the message:\n got: %s\nwant: %s", prototext.Format(out), prototext.Format(want))
			}
		})
	}
}

// nilMessage is a typed nil message of m's type, to make new ones from.
func nilMessage(m Message) *proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Descriptor.FullName())
	if err != nil {
		panic(err)
	}
	x := mt.Zero().Interface()
	return &x
}
