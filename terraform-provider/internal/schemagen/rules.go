package schemagen

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/carbide-dev/carbide/terraform-provider/internal/tfproto"
)

// fieldRules are the protovalidate rules of fd, or nil.
func fieldRules(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	opts := fd.Options()
	if opts == nil || !proto.HasExtension(opts, validate.E_Field) {
		return nil
	}
	r, _ := proto.GetExtension(opts, validate.E_Field).(*validate.FieldRules)
	return r
}

// oneofRequired reports whether the oneof od must have a member set.
func oneofRequired(od protoreflect.OneofDescriptor) bool {
	opts := od.Options()
	if opts == nil || !proto.HasExtension(opts, validate.E_Oneof) {
		return false
	}
	r, _ := proto.GetExtension(opts, validate.E_Oneof).(*validate.OneofRules)
	return r.GetRequired()
}

// ignored reports whether the rules skip the zero value.
func ignored(r *validate.FieldRules) bool {
	switch r.GetIgnore() {
	case validate.Ignore_IGNORE_IF_ZERO_VALUE, validate.Ignore_IGNORE_ALWAYS:
		return true
	}
	return false
}

// celPattern matches the CEL rules that are a regular expression match:
// this.matches('re'), optionally allowing the empty string first.
var celPattern = regexp.MustCompile(`^\s*(this\s*==\s*''\s*\|\|\s*)?this\.matches\('((?:[^'\\]|\\.)*)'\)\s*$`)

// celRegexp is the regular expression of a CEL rule of the matches form,
// whether it allows "", and whether it is of that form at all.
func celRegexp(r *validate.Rule) (expr string, allowsEmpty, ok bool) {
	m := celPattern.FindStringSubmatch(r.GetExpression())
	if m == nil {
		return "", false, false
	}
	// CEL string literals escape a backslash as \\.
	expr = strings.ReplaceAll(m[2], `\\`, `\`)
	if _, err := regexp.Compile(expr); err != nil {
		return "", false, false
	}
	return expr, m[1] != "", true
}

// numberRules is the integer rule message of r (int32, uint64...), or nil.
func numberRules(r *validate.FieldRules) protoreflect.Message {
	if r == nil {
		return nil
	}
	m := r.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("type")
	fd := m.WhichOneof(od)
	if fd == nil || fd.Kind() != protoreflect.MessageKind {
		return nil
	}
	switch fd.Name() {
	case "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64":
		return m.Get(fd).Message()
	}
	return nil
}

// intBounds are the inclusive bounds the integer rules set (and the type's
// own range), and the allowed values of an in rule.
func intBounds(kind protoreflect.Kind, nr protoreflect.Message) (lo, hi int64, in []int64) {
	lo, hi = math.MinInt64, math.MaxInt64
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		lo, hi = math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		lo, hi = 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		lo = 0
	}
	if nr == nil {
		return lo, hi, nil
	}
	get := func(name protoreflect.Name) (int64, bool) {
		fd := nr.Descriptor().Fields().ByName(name)
		if fd == nil || !nr.Has(fd) {
			return 0, false
		}
		v := nr.Get(fd)
		switch fd.Kind() {
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			u := v.Uint()
			if u > math.MaxInt64 {
				u = math.MaxInt64
			}
			return int64(u), true
		}
		return v.Int(), true
	}
	if v, ok := get("gte"); ok {
		lo = max(lo, v)
	}
	if v, ok := get("gt"); ok {
		lo = max(lo, v+1)
	}
	if v, ok := get("lte"); ok {
		hi = min(hi, v)
	}
	if v, ok := get("lt"); ok {
		hi = min(hi, v-1)
	}
	if v, ok := get("const"); ok {
		lo, hi = v, v
	}
	if fd := nr.Descriptor().Fields().ByName("in"); fd != nil {
		l := nr.Get(fd).List()
		for i := range l.Len() {
			v := l.Get(i)
			switch fd.Kind() {
			case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
				in = append(in, int64(v.Uint()))
			default:
				in = append(in, v.Int())
			}
		}
	}
	return lo, hi, in
}

// stringRequired reports whether the string rules reject "".
func stringRequired(r *validate.FieldRules) bool {
	sr := r.GetString()
	if sr != nil {
		if sr.GetMinLen() > 0 || sr.GetLen() > 0 || sr.GetMinBytes() > 0 || sr.GetLenBytes() > 0 {
			return true
		}
		if sr.GetWellKnown() != nil {
			return true
		}
		if p := sr.GetPattern(); p != "" {
			if re, err := regexp.Compile(p); err == nil && !re.MatchString("") {
				return true
			}
		}
		if sr.HasConst() && sr.GetConst() != "" {
			return true
		}
		if in := sr.GetIn(); len(in) > 0 && !slices.Contains(in, "") {
			return true
		}
	}
	for _, c := range r.GetCel() {
		if expr, allowsEmpty, ok := celRegexp(c); ok && !allowsEmpty && !regexp.MustCompile(expr).MatchString("") {
			return true
		}
	}
	return false
}

// required reports whether the rules r reject the zero value of fd, so
// that the attribute is required.
func required(fd protoreflect.FieldDescriptor, r *validate.FieldRules) bool {
	if r == nil || ignored(r) {
		return false
	}
	if r.GetRequired() {
		return true
	}
	switch {
	case fd.IsMap():
		return r.GetMap().GetMinPairs() > 0
	case fd.IsList():
		return r.GetRepeated().GetMinItems() > 0
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return stringRequired(r)
	case protoreflect.BytesKind:
		return r.GetBytes().GetMinLen() > 0 || r.GetBytes().GetLen() > 0
	case protoreflect.EnumKind:
		er := r.GetEnum()
		if er == nil {
			return false
		}
		if er.HasConst() && er.GetConst() != 0 || slices.Contains(er.GetNotIn(), 0) {
			return true
		}
		return len(er.GetIn()) > 0 && !slices.Contains(er.GetIn(), 0)
	}
	if nr := numberRules(r); nr != nil {
		lo, hi, in := intBounds(fd.Kind(), nr)
		return lo > 0 || hi < 0 || len(in) > 0 && !slices.Contains(in, 0)
	}
	return false
}

// Import paths of the packages the generated code uses.
const (
	fwPath       = "github.com/hashicorp/terraform-plugin-framework/"
	fwvPath      = "github.com/hashicorp/terraform-plugin-framework-validators/"
	tfvalidateIP = "github.com/carbide-dev/carbide/terraform-provider/internal/tfvalidate"
	tfprotoIP    = "github.com/carbide-dev/carbide/terraform-provider/internal/tfproto"
)

// stringValidators are the Go expressions of the validators that stand for
// the string rules r (and its CEL rules). The caller wraps them for
// IGNORE_IF_ZERO_VALUE.
func (e *emitter) stringValidators(r *validate.FieldRules) []string {
	var out []string
	sv := func(name string, args ...any) string {
		return e.call(fwvPath+"stringvalidator", name, args...)
	}
	tv := func(name string, args ...any) string { return e.call(tfvalidateIP, name, args...) }
	if sr := r.GetString(); sr != nil {
		switch {
		case sr.HasLen():
			out = append(out, sv("LengthBetween", sr.GetLen(), sr.GetLen()))
		case sr.HasMinLen() && sr.HasMaxLen():
			out = append(out, sv("LengthBetween", sr.GetMinLen(), sr.GetMaxLen()))
		case sr.HasMinLen():
			out = append(out, sv("LengthAtLeast", sr.GetMinLen()))
		case sr.HasMaxLen():
			out = append(out, sv("LengthAtMost", sr.GetMaxLen()))
		}
		if sr.HasLenBytes() {
			out = append(out, tv("MinBytes", sr.GetLenBytes()), tv("MaxBytes", sr.GetLenBytes()))
		}
		if sr.HasMinBytes() {
			out = append(out, tv("MinBytes", sr.GetMinBytes()))
		}
		if sr.HasMaxBytes() {
			out = append(out, tv("MaxBytes", sr.GetMaxBytes()))
		}
		if sr.HasPattern() {
			out = append(out, tv("Pattern", sr.GetPattern(), ""))
		}
		if sr.HasPrefix() {
			out = append(out, tv("Pattern", "^"+regexp.QuoteMeta(sr.GetPrefix()), "must start with "+strconv.Quote(sr.GetPrefix())))
		}
		if sr.HasSuffix() {
			out = append(out, tv("Pattern", regexp.QuoteMeta(sr.GetSuffix())+"$", "must end with "+strconv.Quote(sr.GetSuffix())))
		}
		if sr.HasContains() {
			out = append(out, tv("Pattern", regexp.QuoteMeta(sr.GetContains()), "must contain "+strconv.Quote(sr.GetContains())))
		}
		if sr.HasConst() {
			out = append(out, sv("OneOf", sr.GetConst()))
		}
		if in := sr.GetIn(); len(in) > 0 {
			out = append(out, sv("OneOf", anys(in)...))
		}
		if in := sr.GetNotIn(); len(in) > 0 {
			out = append(out, sv("NoneOf", anys(in)...))
		}
		switch {
		case sr.GetHostname():
			out = append(out, tv("Hostname"))
		case sr.GetIp():
			out = append(out, tv("IP"))
		case sr.GetIpv4():
			out = append(out, tv("IPv4"))
		case sr.GetIpv6():
			out = append(out, tv("IPv6"))
		case sr.GetUri():
			out = append(out, tv("URI"))
		case sr.GetAddress():
			out = append(out, tv("Address"))
		case sr.GetUuid():
			out = append(out, tv("UUID"))
		case sr.GetIpPrefix():
			out = append(out, tv("IPPrefix"))
		case sr.GetIpv4Prefix():
			out = append(out, tv("IPv4Prefix"))
		case sr.GetIpv6Prefix():
			out = append(out, tv("IPv6Prefix"))
		}
	}
	if br := r.GetBytes(); br != nil {
		if br.HasMinLen() {
			out = append(out, tv("MinBytes", br.GetMinLen()))
		}
		if br.HasMaxLen() {
			out = append(out, tv("MaxBytes", br.GetMaxLen()))
		}
		if br.HasPattern() {
			out = append(out, tv("Pattern", br.GetPattern(), ""))
		}
	}
	for _, c := range r.GetCel() {
		if expr, allowsEmpty, ok := celRegexp(c); ok {
			v := tv("Pattern", expr, c.GetMessage())
			if allowsEmpty {
				v = tv("IgnoringEmpty", rawExpr(v))
			}
			out = append(out, v)
		}
	}
	if ignored(r) && len(out) > 0 {
		return []string{tv("IgnoringEmpty", rawExprs(out)...)}
	}
	return out
}

// enumNames are the Terraform names an enum field with rules r accepts.
func enumNames(ed protoreflect.EnumDescriptor, r *validate.FieldRules) []string {
	e := tfproto.NewEnum(ed)
	er := r.GetEnum()
	var out []string
	for _, name := range e.Names() {
		n, _ := e.Number(typesString(name), "")
		if len(er.GetIn()) > 0 && !slices.Contains(er.GetIn(), int32(n)) || slices.Contains(er.GetNotIn(), int32(n)) {
			continue
		}
		if er.HasConst() && er.GetConst() != int32(n) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// int64Validators stand for the integer rules of a field of the kind.
func (e *emitter) int64Validators(kind protoreflect.Kind, r *validate.FieldRules) []string {
	lo, hi, in := intBounds(kind, numberRules(r))
	iv := func(name string, args ...any) string { return e.call(fwvPath+"int64validator", name, args...) }
	var out []string
	switch {
	case lo != math.MinInt64 && hi != math.MaxInt64:
		out = append(out, iv("Between", lo, hi))
	case lo != math.MinInt64:
		out = append(out, iv("AtLeast", lo))
	case hi != math.MaxInt64:
		out = append(out, iv("AtMost", hi))
	}
	if len(in) > 0 {
		out = append(out, iv("OneOf", anys(in)...))
	}
	if ignored(r) && len(out) > 0 {
		return []string{e.call(tfvalidateIP, "IgnoringZero", rawExprs(out)...)}
	}
	return out
}

// durationValidator stands for the duration rules r.
func (e *emitter) durationValidator(r *validate.FieldRules) string {
	dr := r.GetDuration()
	var lo, hi time.Duration
	if dr.HasGte() {
		lo = dr.GetGte().AsDuration()
	}
	if dr.HasGt() {
		lo = dr.GetGt().AsDuration() + 1
	}
	if dr.HasLte() {
		hi = dr.GetLte().AsDuration()
	}
	if dr.HasLt() {
		hi = dr.GetLt().AsDuration() - 1
	}
	return e.call(tfvalidateIP, "Duration", durationExpr(lo), durationExpr(hi))
}

// listValidators stand for the repeated rules r of fd (and its items').
func (e *emitter) listValidators(fd protoreflect.FieldDescriptor, r *validate.FieldRules) []string {
	lv := func(name string, args ...any) string { return e.call(fwvPath+"listvalidator", name, args...) }
	var out []string
	rr := r.GetRepeated()
	switch {
	case rr.HasMinItems() && rr.HasMaxItems():
		out = append(out, lv("SizeBetween", rr.GetMinItems(), rr.GetMaxItems()))
	case rr.HasMinItems():
		out = append(out, lv("SizeAtLeast", rr.GetMinItems()))
	case rr.HasMaxItems():
		out = append(out, lv("SizeAtMost", rr.GetMaxItems()))
	}
	if rr.GetUnique() {
		out = append(out, lv("UniqueValues"))
	}
	items := rr.GetItems()
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		if vs := e.stringValidators(items); len(vs) > 0 {
			out = append(out, lv("ValueStringsAre", rawExprs(vs)...))
		}
	case protoreflect.EnumKind:
		names := enumNames(fd.Enum(), items)
		out = append(out, lv("ValueStringsAre", rawExpr(e.call(fwvPath+"stringvalidator", "OneOf", anys(names)...))))
	case protoreflect.MessageKind:
	case protoreflect.BoolKind, protoreflect.FloatKind, protoreflect.DoubleKind:
	default:
		if vs := e.int64Validators(fd.Kind(), items); len(vs) > 0 {
			out = append(out, lv("ValueInt64sAre", rawExprs(vs)...))
		}
	}
	return out
}

// mapValidators stand for the map rules r.
func (e *emitter) mapValidators(fd protoreflect.FieldDescriptor, r *validate.FieldRules) []string {
	mv := func(name string, args ...any) string { return e.call(fwvPath+"mapvalidator", name, args...) }
	var out []string
	mr := r.GetMap()
	switch {
	case mr.HasMinPairs() && mr.HasMaxPairs():
		out = append(out, mv("SizeBetween", mr.GetMinPairs(), mr.GetMaxPairs()))
	case mr.HasMinPairs():
		out = append(out, mv("SizeAtLeast", mr.GetMinPairs()))
	case mr.HasMaxPairs():
		out = append(out, mv("SizeAtMost", mr.GetMaxPairs()))
	}
	if vs := e.stringValidators(mr.GetKeys()); len(vs) > 0 {
		out = append(out, mv("KeysAre", rawExprs(vs)...))
	}
	if fd.MapValue().Kind() == protoreflect.StringKind {
		if vs := e.stringValidators(mr.GetValues()); len(vs) > 0 {
			out = append(out, mv("ValueStringsAre", rawExprs(vs)...))
		}
	}
	return out
}

// rawExpr is a Go expression passed as an argument as it is.
type rawExpr string

func rawExprs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = rawExpr(s)
	}
	return out
}

func anys[T any](vs []T) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// durationExpr is the Go expression of d.
func durationExpr(d time.Duration) rawExpr {
	if d == 0 {
		return "0"
	}
	return rawExpr(fmt.Sprintf("%d /* %s */", int64(d), d))
}
