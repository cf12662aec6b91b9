// Package tfproto converts between Terraform values (terraform-plugin-framework
// types) and protobuf values. The generated models in internal/generated call
// it; it holds the mapping rules in one place:
//
//   - A proto3 zero value ("", 0, false, an empty list or map, an unset
//     message) becomes null, unless the model already holds a known value
//     that means the same (such as a configured "" or []), which is kept:
//     Terraform then sees the value it planned.
//   - Timestamps are RFC 3339 strings, durations Go duration strings
//     without zero trailing units ("1h", "30m", "1m30s"); a model value
//     that denotes the same instant or length is kept as written.
//   - Enums are strings: the value's name without the prefix the enum's
//     values share, in lower case (MACHINE_STATE_READY is "ready"). The
//     zero value (*_UNSPECIFIED) is null.
package tfproto

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// known reports whether v is neither null nor unknown.
func known(v attr.Value) bool { return !v.IsNull() && !v.IsUnknown() }

// String is v as a Terraform string; "" is null unless prior is "".
func String(prior types.String, v string) types.String {
	if v == "" && !(known(prior) && prior.ValueString() == "") {
		return types.StringNull()
	}
	return types.StringValue(v)
}

// StringFold is String for a value the server keeps in a canonical case:
// a prior value that differs from v only in case is kept as written.
func StringFold(prior types.String, v string) types.String {
	if known(prior) && v != "" && strings.EqualFold(prior.ValueString(), v) {
		return prior
	}
	return String(prior, v)
}

// Bool is v as a Terraform bool; false is null unless prior is false.
func Bool(prior types.Bool, v bool) types.Bool {
	if !v && !(known(prior) && !prior.ValueBool()) {
		return types.BoolNull()
	}
	return types.BoolValue(v)
}

// Int64 is v as a Terraform number; 0 is null unless prior is 0.
func Int64(prior types.Int64, v int64) types.Int64 {
	if v == 0 && !(known(prior) && prior.ValueInt64() == 0) {
		return types.Int64Null()
	}
	return types.Int64Value(v)
}

// Float64 is v as a Terraform number; 0 is null unless prior is 0.
func Float64(prior types.Float64, v float64) types.Float64 {
	if v == 0 && !(known(prior) && prior.ValueFloat64() == 0) {
		return types.Float64Null()
	}
	return types.Float64Value(v)
}

// Bytes is the Terraform string s as bytes; null, unknown and "" are nil.
func Bytes(s types.String) []byte {
	if s.ValueString() == "" {
		return nil
	}
	return []byte(s.ValueString())
}

// Timestamp is ts as an RFC 3339 string; unset is null. A prior value that
// denotes the same instant is kept as written.
func Timestamp(prior types.String, ts *timestamppb.Timestamp) types.String {
	if ts == nil {
		return types.StringNull()
	}
	t := ts.AsTime()
	if known(prior) {
		if p, err := time.Parse(time.RFC3339Nano, prior.ValueString()); err == nil && p.Equal(t) {
			return prior
		}
	}
	return types.StringValue(t.UTC().Format(time.RFC3339Nano))
}

// TimestampProto parses the RFC 3339 string s; null, unknown and "" are nil.
func TimestampProto(s types.String, name string) (*timestamppb.Timestamp, diag.Diagnostics) {
	if s.ValueString() == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s.ValueString())
	if err != nil {
		return nil, diag.Diagnostics{diag.NewErrorDiagnostic("Invalid time in "+name,
			fmt.Sprintf("%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q.", name, s.ValueString()))}
	}
	return timestamppb.New(t), nil
}

// Duration is d as a Go duration string ("1h0m0s"); unset is null. A prior
// value of the same length ("1h", "60m") is kept as written.
func Duration(prior types.String, d *durationpb.Duration) types.String {
	if d == nil {
		return types.StringNull()
	}
	v := d.AsDuration()
	if known(prior) {
		if p, err := time.ParseDuration(prior.ValueString()); err == nil && p == v {
			return prior
		}
	}
	return types.StringValue(FormatDuration(v))
}

// FormatDuration is d as a Go duration string without zero trailing units:
// "1h", "30m", "1h30m", "1m30s".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// DurationProto parses the Go duration string s; null, unknown and "" are nil.
func DurationProto(s types.String, name string) (*durationpb.Duration, diag.Diagnostics) {
	if s.ValueString() == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s.ValueString())
	if err != nil {
		return nil, diag.Diagnostics{diag.NewErrorDiagnostic("Invalid duration in "+name,
			fmt.Sprintf("%s must be a duration such as \"90s\", \"30m\" or \"1h30m\", not %q.", name, s.ValueString()))}
	}
	return durationpb.New(d), nil
}

// Enum maps the values of a protobuf enum to Terraform strings and back.
type Enum struct {
	desc   protoreflect.EnumDescriptor
	names  map[protoreflect.EnumNumber]string
	values map[string]protoreflect.EnumNumber
	list   []string
}

// NewEnum returns the mapping of the enum ed.
func NewEnum(ed protoreflect.EnumDescriptor) *Enum {
	e := &Enum{desc: ed, names: map[protoreflect.EnumNumber]string{}, values: map[string]protoreflect.EnumNumber{}}
	vals := ed.Values()
	prefix := EnumPrefix(ed)
	for i := range vals.Len() {
		v := vals.Get(i)
		if v.Number() == 0 {
			continue
		}
		name := strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix))
		e.names[v.Number()] = name
		e.values[name] = v.Number()
		e.list = append(e.list, name)
	}
	return e
}

// EnumPrefix is the prefix that every value name of ed shares, up to and
// including its last "_" (MACHINE_STATE_ for MachineState).
func EnumPrefix(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	if vals.Len() == 0 {
		return ""
	}
	prefix := string(vals.Get(0).Name())
	for i := 1; i < vals.Len(); i++ {
		name := string(vals.Get(i).Name())
		n := 0
		for n < len(prefix) && n < len(name) && prefix[n] == name[n] {
			n++
		}
		prefix = prefix[:n]
	}
	return prefix[:strings.LastIndex(prefix, "_")+1]
}

// Names are the Terraform strings of the enum's values, the zero value
// aside, in declaration order.
func (e *Enum) Names() []string { return append([]string(nil), e.list...) }

// String is the enum number n as a Terraform string; the zero value is null.
func (e *Enum) String(prior types.String, n protoreflect.EnumNumber) types.String {
	if n == 0 {
		return types.StringNull()
	}
	if known(prior) {
		if p, ok := e.values[prior.ValueString()]; ok && p == n {
			return prior
		}
	}
	if name, ok := e.names[n]; ok {
		return types.StringValue(name)
	}
	return types.StringValue(fmt.Sprint(int32(n)))
}

// Number is the enum number of the Terraform string s; null, unknown and
// "" are the zero value.
func (e *Enum) Number(s types.String, name string) (protoreflect.EnumNumber, diag.Diagnostics) {
	if s.ValueString() == "" {
		return 0, nil
	}
	if n, ok := e.values[s.ValueString()]; ok {
		return n, nil
	}
	return 0, diag.Diagnostics{diag.NewErrorDiagnostic("Invalid value of "+name,
		fmt.Sprintf("%s must be one of %s, not %q.", name, strings.Join(e.list, ", "), s.ValueString()))}
}

// EnumList is the enum values vs as a list of Terraform strings.
func EnumList[E ~int32](ctx context.Context, prior types.List, e *Enum, vs []E) (types.List, diag.Diagnostics) {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = e.String(types.StringNull(), protoreflect.EnumNumber(v)).ValueString()
	}
	return List(ctx, prior, types.StringType, names)
}

// EnumListProto is the list of Terraform strings l as enum values.
func EnumListProto[E ~int32](ctx context.Context, l types.List, e *Enum, name string) ([]E, diag.Diagnostics) {
	names, diags := ListProto[types.String](ctx, l)
	if diags.HasError() || names == nil {
		return nil, diags
	}
	out := make([]E, len(names))
	for i, s := range names {
		n, d := e.Number(s, name)
		diags.Append(d...)
		out[i] = E(n)
	}
	return out, diags
}

// List is vs as a Terraform list of elem; empty is null unless prior is an
// empty list.
func List[T any](ctx context.Context, prior types.List, elem attr.Type, vs []T) (types.List, diag.Diagnostics) {
	if len(vs) == 0 {
		if known(prior) && len(prior.Elements()) == 0 {
			return prior, nil
		}
		return types.ListNull(elem), nil
	}
	return types.ListValueFrom(ctx, elem, vs)
}

// IntList is the integers vs as a Terraform list of numbers.
func IntList[T ~int32 | ~int64 | ~uint32 | ~uint64](ctx context.Context, prior types.List, vs []T) (types.List, diag.Diagnostics) {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = int64(v)
	}
	return List(ctx, prior, types.Int64Type, out)
}

// ListProto is the elements of the Terraform list l; null and unknown are nil.
func ListProto[T any](ctx context.Context, l types.List) ([]T, diag.Diagnostics) {
	if !known(l) {
		return nil, nil
	}
	var out []T
	diags := l.ElementsAs(ctx, &out, false)
	return out, diags
}

// IntListProto is the Terraform list of numbers l as integers of type T.
func IntListProto[T ~int32 | ~int64 | ~uint32 | ~uint64](ctx context.Context, l types.List) ([]T, diag.Diagnostics) {
	vs, diags := ListProto[int64](ctx, l)
	if vs == nil {
		return nil, diags
	}
	out := make([]T, len(vs))
	for i, v := range vs {
		out[i] = T(v)
	}
	return out, diags
}

// StringMap is m as a Terraform map of strings; empty is null unless prior
// is an empty map.
func StringMap(ctx context.Context, prior types.Map, m map[string]string) (types.Map, diag.Diagnostics) {
	if len(m) == 0 {
		if known(prior) && len(prior.Elements()) == 0 {
			return prior, nil
		}
		return types.MapNull(types.StringType), nil
	}
	return types.MapValueFrom(ctx, types.StringType, m)
}

// StringMapProto is the Terraform map of strings m; null and unknown are nil.
func StringMapProto(ctx context.Context, m types.Map) (map[string]string, diag.Diagnostics) {
	if !known(m) {
		return nil, nil
	}
	out := map[string]string{}
	diags := m.ElementsAs(ctx, &out, false)
	return out, diags
}

// FromProtoer is a generated model of the message P.
type FromProtoer[M any, P proto.Message] interface {
	*M
	FromProto(ctx context.Context, x P) diag.Diagnostics
}

// ToProtoer is a generated model of the message P.
type ToProtoer[M any, P proto.Message] interface {
	*M
	ToProto(ctx context.Context) (P, diag.Diagnostics)
}

// present reports whether the message x is set (not a nil pointer).
func present(x proto.Message) bool { return x != nil && x.ProtoReflect().IsValid() }

// Object is the message x as a Terraform object of the model M; unset is
// null. The fields of prior, when it is known, are the priors of x's.
func Object[M any, P proto.Message, PM FromProtoer[M, P]](ctx context.Context, prior types.Object, x P, attrTypes map[string]attr.Type) (types.Object, diag.Diagnostics) {
	if !present(x) {
		return types.ObjectNull(attrTypes), nil
	}
	var m M
	var diags diag.Diagnostics
	if known(prior) {
		diags.Append(prior.As(ctx, &m, basetypes.ObjectAsOptions{UnhandledNullAsEmpty: true, UnhandledUnknownAsEmpty: true})...)
	}
	diags.Append(PM(&m).FromProto(ctx, x)...)
	if diags.HasError() {
		return types.ObjectNull(attrTypes), diags
	}
	o, d := types.ObjectValueFrom(ctx, attrTypes, &m)
	diags.Append(d...)
	return o, diags
}

// ObjectProto is the Terraform object o of the model M as its message;
// null and unknown are nil.
func ObjectProto[M any, P proto.Message, PM ToProtoer[M, P]](ctx context.Context, o types.Object) (P, diag.Diagnostics) {
	var zero P
	if !known(o) {
		return zero, nil
	}
	var m M
	diags := o.As(ctx, &m, basetypes.ObjectAsOptions{UnhandledNullAsEmpty: true, UnhandledUnknownAsEmpty: true})
	if diags.HasError() {
		return zero, diags
	}
	x, d := PM(&m).ToProto(ctx)
	diags.Append(d...)
	return x, diags
}

// ObjectList is the messages xs as a Terraform list of objects of the model
// M; empty is null unless prior is an empty list. The elements of prior
// are the priors of xs's, by index.
func ObjectList[M any, P proto.Message, PM FromProtoer[M, P]](ctx context.Context, prior types.List, xs []P, attrTypes map[string]attr.Type) (types.List, diag.Diagnostics) {
	elem := types.ObjectType{AttrTypes: attrTypes}
	if len(xs) == 0 {
		if known(prior) && len(prior.Elements()) == 0 {
			return prior, nil
		}
		return types.ListNull(elem), nil
	}
	var priors []attr.Value
	if known(prior) {
		priors = prior.Elements()
	}
	var diags diag.Diagnostics
	objs := make([]attr.Value, len(xs))
	for i, x := range xs {
		p := types.ObjectNull(attrTypes)
		if i < len(priors) {
			if o, ok := priors[i].(types.Object); ok {
				p = o
			}
		}
		o, d := Object[M, P, PM](ctx, p, x, attrTypes)
		diags.Append(d...)
		if !present(x) {
			// A nil element of a repeated field is an empty message.
			o, d = types.ObjectValueFrom(ctx, attrTypes, new(M))
			diags.Append(d...)
		}
		objs[i] = o
	}
	if diags.HasError() {
		return types.ListNull(elem), diags
	}
	l, d := types.ListValue(elem, objs)
	diags.Append(d...)
	return l, diags
}

// ObjectListProto is the Terraform list of objects l of the model M as
// messages; null and unknown are nil.
func ObjectListProto[M any, P proto.Message, PM ToProtoer[M, P]](ctx context.Context, l types.List) ([]P, diag.Diagnostics) {
	if !known(l) {
		return nil, nil
	}
	var diags diag.Diagnostics
	out := make([]P, 0, len(l.Elements()))
	for _, e := range l.Elements() {
		o, ok := e.(types.Object)
		if !ok {
			diags.AddError("Unexpected list element", fmt.Sprintf("expected an object, got %T", e))
			continue
		}
		x, d := ObjectProto[M, P, PM](ctx, o)
		diags.Append(d...)
		if !present(x) {
			x = x.ProtoReflect().Type().New().Interface().(P)
		}
		out = append(out, x)
	}
	return out, diags
}
