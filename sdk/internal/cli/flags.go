package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fieldFlag is a command-line flag that sets one field of a request,
// possibly inside nested messages.
type fieldFlag struct {
	name  string                         // the flag's name
	path  []protoreflect.FieldDescriptor // from the request down to the field
	value *fieldValue                    // what was given
}

// fieldValue is the pflag.Value of a fieldFlag: it checks each value as it
// is given and keeps them for apply.
type fieldValue struct {
	fd   protoreflect.FieldDescriptor
	vals []string
}

func (v *fieldValue) String() string {
	if len(v.vals) == 0 {
		return ""
	}
	if isSecretField(v.fd) {
		return "<hidden>"
	}
	return strings.Join(v.vals, ",")
}

func (v *fieldValue) Set(s string) error {
	var items []string
	switch {
	case v.fd.IsList() && (v.fd.Kind() == protoreflect.EnumKind || isNumberKind(v.fd.Kind())):
		items = strings.Split(s, ",")
	default:
		items = []string{s}
	}
	for _, it := range items {
		if _, err := v.parse(it); err != nil {
			return err
		}
	}
	if v.fd.IsList() || v.fd.IsMap() {
		v.vals = append(v.vals, items...)
	} else {
		v.vals = items
	}
	return nil
}

func (v *fieldValue) Type() string {
	fd := v.fd
	switch {
	case fd.IsMap():
		return "key=value"
	case fd.Kind() == protoreflect.BoolKind && !fd.IsList():
		return "bool"
	case fd.Kind() == protoreflect.EnumKind:
		return "enum"
	case fd.Kind() == protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Duration":
			return "duration"
		case "google.protobuf.Timestamp":
			return "time"
		case "google.protobuf.FieldMask":
			return "fields"
		case "carbide.network.v1.AddressRange":
			return "start-end"
		case "carbide.network.v1.Reservation":
			return "mac=address"
		}
		return "json"
	case fd.Kind() == protoreflect.BytesKind:
		return "string|@file"
	}
	return strings.ToLower(fd.Kind().String())
}

// parse converts one command-line value to the field's (element) value.
func (v *fieldValue) parse(s string) (protoreflect.Value, error) {
	fd := v.fd
	if fd.IsMap() {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return protoreflect.Value{}, fmt.Errorf("want key=value, got %q", s)
		}
		return protoreflect.ValueOfString(s), nil
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil // a secret's "-" is read from stdin by apply
	case protoreflect.BytesKind:
		if name, ok := strings.CutPrefix(s, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return protoreflect.Value{}, fmt.Errorf("read %s: %w", name, err)
			}
			return protoreflect.ValueOfBytes(b), nil
		}
		return protoreflect.ValueOfBytes([]byte(s)), nil
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("want true or false, got %q", s)
		}
		return protoreflect.ValueOfBool(b), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("want an integer, got %q", s)
		}
		return protoreflect.ValueOfInt32(int32(n)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := parseSize(s, 63)
		if err != nil {
			return protoreflect.Value{}, err
		}
		return protoreflect.ValueOfInt64(int64(n)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("want a non-negative integer, got %q", s)
		}
		return protoreflect.ValueOfUint32(uint32(n)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := parseSize(s, 64)
		if err != nil {
			return protoreflect.Value{}, err
		}
		return protoreflect.ValueOfUint64(n), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("want a number, got %q", s)
		}
		if fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), nil
		}
		return protoreflect.ValueOfFloat64(f), nil
	case protoreflect.EnumKind:
		n, err := parseEnum(fd.Enum(), s)
		if err != nil {
			return protoreflect.Value{}, err
		}
		return protoreflect.ValueOfEnum(n), nil
	case protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Duration":
			d, err := time.ParseDuration(s)
			if err != nil {
				return protoreflect.Value{}, fmt.Errorf("want a duration such as 90s or 1h30m, got %q", s)
			}
			return protoreflect.ValueOfMessage(durationpb.New(d).ProtoReflect()), nil
		case "google.protobuf.Timestamp":
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				d, derr := time.ParseDuration(s)
				if derr != nil {
					return protoreflect.Value{}, fmt.Errorf("want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (1h), got %q", s)
				}
				t = time.Now().Add(-d)
			}
			return protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()), nil
		case "google.protobuf.FieldMask":
			var paths []string
			for p := range strings.SplitSeq(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					paths = append(paths, strings.ReplaceAll(p, "-", "_"))
				}
			}
			return protoreflect.ValueOfMessage((&fieldmaskpb.FieldMask{Paths: paths}).ProtoReflect()), nil
		}
		m := newMessage(fd.Message())
		if js, ok := shorthand(fd.Message(), s); ok {
			s = js
		}
		if err := protojson.Unmarshal([]byte(s), m.Interface()); err != nil {
			return protoreflect.Value{}, fmt.Errorf("want a JSON %s object: %w", fd.Message().Name(), err)
		}
		return protoreflect.ValueOfMessage(m), nil
	}
	return protoreflect.Value{}, fmt.Errorf("fields of kind %s cannot be set by a flag; use --from-file", fd.Kind())
}

// parseSize reads an integer, with an optional binary unit suffix
// (KiB, MiB, GiB, TiB) for sizes such as --min-memory-bytes 64GiB.
func parseSize(s string, bits int) (uint64, error) {
	orig, mult := s, uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("want a non-negative integer (optionally with KiB, MiB, GiB or TiB), got %q", orig)
	}
	if n > (1<<bits-1)/mult {
		return 0, fmt.Errorf("%s is too large", orig)
	}
	return n * mult, nil
}

// enumPrefix is the prefix every value name of e shares, such as
// MACHINE_STATE_ for MachineState.
func enumPrefix(e protoreflect.EnumDescriptor) string {
	vals := e.Values()
	if vals.Len() == 0 {
		return ""
	}
	prefix := string(vals.Get(0).Name())
	for i := 1; i < vals.Len(); i++ {
		name := string(vals.Get(i).Name())
		for !strings.HasPrefix(name, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	if i := strings.LastIndex(prefix, "_"); i >= 0 {
		return prefix[:i+1]
	}
	return ""
}

// enumChoices are the short names of e's values, such as ready and
// failed, without the UNSPECIFIED value.
func enumChoices(e protoreflect.EnumDescriptor) []string {
	prefix := enumPrefix(e)
	var out []string
	for i := range e.Values().Len() {
		v := e.Values().Get(i)
		if v.Number() == 0 {
			continue
		}
		out = append(out, enumShort(prefix, v))
	}
	return out
}

func enumShort(prefix string, v protoreflect.EnumValueDescriptor) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix)), "_", "-")
}

// enumName is the short name of n in e, as a table shows it.
func enumName(e protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	v := e.Values().ByNumber(n)
	if v == nil {
		return strconv.Itoa(int(n))
	}
	if n == 0 {
		return ""
	}
	return enumShort(enumPrefix(e), v)
}

// parseEnum accepts a value's short name (ready), its full name
// (MACHINE_STATE_READY) or its number, in any case.
func parseEnum(e protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, error) {
	prefix := enumPrefix(e)
	want := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	for i := range e.Values().Len() {
		v := e.Values().Get(i)
		if v.Number() == 0 {
			continue
		}
		if string(v.Name()) == want || string(v.Name()) == prefix+want {
			return v.Number(), nil
		}
	}
	if n, err := strconv.Atoi(s); err == nil && n != 0 && e.Values().ByNumber(protoreflect.EnumNumber(n)) != nil {
		return protoreflect.EnumNumber(n), nil
	}
	return 0, fmt.Errorf("want one of %s, got %q", strings.Join(enumChoices(e), ", "), s)
}

func isNumberKind(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.BoolKind, protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.EnumKind:
		return false
	}
	return true
}

// isSecretField says whether a field holds a secret: a password, a sealed
// password, a private key or a token. Such values are never printed.
func isSecretField(fd protoreflect.FieldDescriptor) bool {
	name := string(fd.Name())
	if fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind {
		return false // has_password says whether there is one
	}
	if name == "page_token" || name == "next_page_token" {
		return false
	}
	for _, s := range []string{"password", "secret", "token", "private_key"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// isScalarLike says whether a field is set by one flag (a scalar, an enum,
// a well-known type, a list or map of those).
func isScalarLike(fd protoreflect.FieldDescriptor) bool {
	if fd.IsMap() {
		return fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind
	}
	if fd.Kind() != protoreflect.MessageKind {
		return true
	}
	switch fd.Message().FullName() {
	case "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask":
		return true
	}
	return false
}

// flagName is the flag a field gets: its name in kebab case.
func flagName(prefix string, fd protoreflect.FieldDescriptor) string {
	name := strings.ReplaceAll(string(fd.Name()), "_", "-")
	if prefix != "" {
		return prefix + "-" + name
	}
	return name
}

// singular is the name of one item of a list or map flag: --label for
// labels, --state for states, --mac for macs.
func singular(name string) string {
	switch {
	case strings.HasSuffix(name, "ses") || strings.HasSuffix(name, "xes"):
		// addresses, boxes
		return strings.TrimSuffix(name, "es")
	case strings.HasSuffix(name, "s") && !strings.HasSuffix(name, "ss"):
		return strings.TrimSuffix(name, "s")
	}
	return name
}

// flagUsage describes a field's flag.
func flagUsage(fd protoreflect.FieldDescriptor) string {
	var b strings.Builder
	if doc := shortDoc(fieldDoc(fd)); doc != "" {
		b.WriteString(strings.TrimSuffix(doc, "."))
	} else {
		b.WriteString(strings.ReplaceAll(string(fd.Name()), "_", " "))
	}
	switch {
	case fd.IsMap():
		b.WriteString(" (repeat the flag for several)")
	case fd.Kind() == protoreflect.EnumKind:
		fmt.Fprintf(&b, ": %s", strings.Join(enumChoices(fd.Enum()), ", "))
		if fd.IsList() {
			b.WriteString(" (repeat or separate with commas)")
		}
	case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp":
		b.WriteString(", an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (90m)")
	case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Duration":
		b.WriteString(", such as 90s or 12h")
	case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.FieldMask":
		b.WriteString(" (field names separated by commas)")
	case fd.Kind() == protoreflect.MessageKind && !isScalarLike(fd):
		switch fd.Message().FullName() {
		case "carbide.network.v1.AddressRange":
			b.WriteString(", as START-END (or a JSON object)")
		case "carbide.network.v1.Reservation":
			b.WriteString(", as MAC=ADDRESS (or a JSON object)")
		default:
			fmt.Fprintf(&b, ", a JSON %s object", fd.Message().Name())
		}
		if fd.IsList() {
			b.WriteString(" (repeat the flag for several)")
		}
	case fd.IsList():
		b.WriteString(" (repeat the flag for several)")
	case fd.Kind() == protoreflect.BytesKind:
		b.WriteString(", or @file to read it from a file")
	}
	if isSecretField(fd) && fd.Kind() == protoreflect.StringKind {
		b.WriteString("; - reads it from standard input (keeps it out of the shell history)")
	}
	return b.String()
}

// addFieldFlag registers a flag for fd under name, with the singular as a
// second name for lists and maps, and returns it.
func addFieldFlag(fs *pflag.FlagSet, name string, path []protoreflect.FieldDescriptor) *fieldFlag {
	fd := path[len(path)-1]
	v := &fieldValue{fd: fd}
	ff := &fieldFlag{name: name, path: slices.Clone(path), value: v}
	primary := name
	if fd.IsList() || fd.IsMap() {
		if s := singular(name); s != name && fs.Lookup(s) == nil {
			primary = s
		}
	}
	f := fs.VarPF(v, primary, "", flagUsage(fd))
	if fd.Kind() == protoreflect.BoolKind && !fd.IsList() {
		f.NoOptDefVal = "true"
	}
	ff.name = primary
	if primary != name && fs.Lookup(name) == nil {
		alias := fs.VarPF(v, name, "", flagUsage(fd))
		alias.Hidden = true
	}
	return ff
}

// shorthand turns the short forms of a few messages into JSON: an address
// range as START-END, a reservation as MAC=ADDRESS.
func shorthand(md protoreflect.MessageDescriptor, s string) (string, bool) {
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		return "", false
	}
	var sep, k1, k2 string
	switch md.FullName() {
	case "carbide.network.v1.AddressRange":
		sep, k1, k2 = "-", "start", "end"
	case "carbide.network.v1.Reservation":
		sep, k1, k2 = "=", "mac", "address"
	default:
		return "", false
	}
	a, b, ok := strings.Cut(s, sep)
	if !ok {
		return "", false
	}
	js, err := json.Marshal(map[string]string{k1: strings.TrimSpace(a), k2: strings.TrimSpace(b)})
	if err != nil {
		return "", false
	}
	return string(js), true
}

// shortDoc is a proto comment short enough for a flag's line: all of it,
// or its first sentence when it is long.
func shortDoc(doc string) string {
	if len(doc) <= 160 {
		return doc
	}
	if i := strings.Index(doc, ". "); i > 0 {
		return doc[:i+1]
	}
	return doc
}

// fieldDoc is the comment of a field, or of the field of the same name of
// the resource the request is about (CreateInstanceRequest.hostname has
// Instance.hostname's).
func fieldDoc(fd protoreflect.FieldDescriptor) string {
	if doc := protoDocs[fd.FullName()]; doc != "" {
		return doc
	}
	msg := string(fd.ContainingMessage().Name())
	base, ok := strings.CutSuffix(msg, "Request")
	if !ok {
		return ""
	}
	// Drop the verb: the first word.
	for i := 1; i < len(base); i++ {
		if base[i] >= 'A' && base[i] <= 'Z' {
			base = base[i:]
			break
		}
	}
	pkg := fd.ParentFile().Package()
	for _, res := range []string{base, strings.TrimSuffix(base, "s")} {
		if doc := protoDocs[pkg.Append(protoreflect.Name(res)).Append(fd.Name())]; doc != "" {
			return doc
		}
	}
	return ""
}
