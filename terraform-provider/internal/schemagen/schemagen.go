// Package schemagen generates the Terraform provider's schemas and model
// conversions from the API's proto definitions; protoc-gen-carbide-terraform
// runs it. Every message annotated with
// (carbide.terraform.v1.message).generate, and every message its fields use,
// becomes, in package generated:
//
//   - XModel, a struct with tfsdk tags, one field per attribute;
//   - XResourceAttributes and XComputedResourceAttributes (every attribute
//     computed, for a nested object the server sets), XDataSourceAttributes;
//   - XAttrTypes, the attribute types of the object;
//   - (*XModel).FromProto and (*XModel).ToProto.
//
// Field types, descriptions (from the proto comments), required or optional
// and validators (from protovalidate rules) come from the proto definitions;
// the field options of carbide/terraform/v1/options.proto add what they
// cannot say: excluded, output-only, sensitive, write-only, requires
// replace, server default.
package schemagen

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/pluginpb"
)

// goPackage is the import path of the generated code.
const goPackage = "github.com/carbide-dev/carbide/terraform-provider/internal/generated"

// kind is how a field is represented in Terraform.
type kind int

const (
	kString kind = iota
	kBytes
	kBool
	kInt
	kFloat
	kEnum
	kTimestamp
	kDuration
	kMessage
	kListString
	kListInt
	kListEnum
	kListMessage
	kMapString
)

// message is a message to generate.
type message struct {
	m         *protogen.Message
	rulesFrom *protogen.Message
	fields    []*field
}

// field is a field of a generated message.
type field struct {
	f       *protogen.Field
	opts    fieldOptions
	rules   *validate.FieldRules
	inOneof bool // its rules come from a oneof member (never required)
	kind    kind
}

func typesString(s string) types.String { return types.StringValue(s) }

// Generate is the plugin: it writes one file per proto file with generated
// messages, one for their data source schemas, and the registry.
func Generate(gen *protogen.Plugin) error {
	gen.SupportedFeatures = uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL)
	r, err := newOptionReader(gen)
	if err != nil {
		return err
	}
	all := map[protoreflect.FullName]*protogen.Message{}
	fileOf := map[protoreflect.FullName]*protogen.File{}
	var index func(f *protogen.File, ms []*protogen.Message)
	index = func(f *protogen.File, ms []*protogen.Message) {
		for _, m := range ms {
			all[m.Desc.FullName()] = m
			fileOf[m.Desc.FullName()] = f
			index(f, m.Messages)
		}
	}
	for _, f := range gen.Files {
		index(f, f.Messages)
	}

	selected := map[protoreflect.FullName]*message{}
	var queue []*protogen.Message
	for _, f := range gen.Files {
		if !f.Generate {
			continue
		}
		var roots func(ms []*protogen.Message) error
		roots = func(ms []*protogen.Message) error {
			for _, m := range ms {
				o, err := r.messageOpts(m.Desc)
				if err != nil {
					return fmt.Errorf("%s: %w", m.Desc.FullName(), err)
				}
				if o.Generate {
					queue = append(queue, m)
				}
				if err := roots(m.Messages); err != nil {
					return err
				}
			}
			return nil
		}
		if err := roots(f.Messages); err != nil {
			return err
		}
	}
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		if selected[m.Desc.FullName()] != nil {
			continue
		}
		msg, err := newMessage(r, all, m)
		if err != nil {
			return err
		}
		selected[m.Desc.FullName()] = msg
		for _, fi := range msg.fields {
			if fi.kind == kMessage || fi.kind == kListMessage {
				queue = append(queue, fi.f.Message)
			}
		}
	}

	names := map[string]protoreflect.FullName{}
	byFile := map[*protogen.File][]*message{}
	var order []*message
	for _, msg := range selected {
		name := msg.m.GoIdent.GoName
		if other, ok := names[name]; ok {
			return fmt.Errorf("%s and %s both generate %sModel; rename one", other, msg.m.Desc.FullName(), name)
		}
		names[name] = msg.m.Desc.FullName()
		f := fileOf[msg.m.Desc.FullName()]
		byFile[f] = append(byFile[f], msg)
		order = append(order, msg)
	}
	slices.SortFunc(order, func(a, b *message) int { return cmp.Compare(a.m.GoIdent.GoName, b.m.GoIdent.GoName) })
	for f, msgs := range byFile {
		slices.SortFunc(msgs, func(a, b *message) int { return cmp.Compare(a.m.Desc.Index(), b.m.Desc.Index()) })
		base := strings.TrimSuffix(strings.TrimPrefix(f.Desc.Path(), "carbide/"), ".proto")
		base = strings.ReplaceAll(base, "/", "_")
		if err := writeFile(gen, f, base+".gen.go", msgs, false); err != nil {
			return err
		}
		if err := writeFile(gen, f, base+"_datasource.gen.go", msgs, true); err != nil {
			return err
		}
	}
	return writeRegistry(gen, order)
}

// newMessage works out how each field of m is generated.
func newMessage(r *optionReader, all map[protoreflect.FullName]*protogen.Message, m *protogen.Message) (*message, error) {
	msg := &message{m: m}
	mo, err := r.messageOpts(m.Desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Desc.FullName(), err)
	}
	if mo.RulesFrom != "" {
		msg.rulesFrom = all[protoreflect.FullName(mo.RulesFrom)]
		if msg.rulesFrom == nil {
			return nil, fmt.Errorf("%s: rules_from names %s, which is not a message of the request", m.Desc.FullName(), mo.RulesFrom)
		}
	}
	for _, f := range m.Fields {
		o, err := r.fieldOpts(f.Desc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Desc.FullName(), err)
		}
		if o.Exclude {
			continue
		}
		fi := &field{f: f, opts: o, rules: fieldRules(f.Desc)}
		if fi.rules == nil && msg.rulesFrom != nil {
			if rf := msg.rulesFrom.Desc.Fields().ByName(f.Desc.Name()); rf != nil {
				fi.rules = fieldRules(rf)
				fi.inOneof = rf.ContainingOneof() != nil && !rf.ContainingOneof().IsSynthetic()
			}
		}
		if od := f.Desc.ContainingOneof(); od != nil && !od.IsSynthetic() {
			fi.inOneof = true
		}
		if f.Desc.HasOptionalKeyword() {
			return nil, fmt.Errorf("%s: proto3 optional fields are not supported; exclude the field", f.Desc.FullName())
		}
		if fi.kind, err = kindOf(f.Desc); err != nil {
			return nil, fmt.Errorf("%s: %w; exclude the field", f.Desc.FullName(), err)
		}
		if o.WriteOnly && o.OutputOnly {
			return nil, fmt.Errorf("%s: a field cannot be both write_only and output_only", f.Desc.FullName())
		}
		msg.fields = append(msg.fields, fi)
	}
	return msg, nil
}

// kindOf is how the field fd is represented.
func kindOf(fd protoreflect.FieldDescriptor) (kind, error) {
	if fd.IsMap() {
		if fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind {
			return kMapString, nil
		}
		return 0, fmt.Errorf("only map<string, string> is supported")
	}
	scalar := func(fd protoreflect.FieldDescriptor) (kind, error) {
		switch fd.Kind() {
		case protoreflect.StringKind:
			return kString, nil
		case protoreflect.BytesKind:
			return kBytes, nil
		case protoreflect.BoolKind:
			return kBool, nil
		case protoreflect.EnumKind:
			return kEnum, nil
		case protoreflect.FloatKind, protoreflect.DoubleKind:
			return kFloat, nil
		case protoreflect.MessageKind, protoreflect.GroupKind:
			switch fd.Message().FullName() {
			case "google.protobuf.Timestamp":
				return kTimestamp, nil
			case "google.protobuf.Duration":
				return kDuration, nil
			}
			if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
				return 0, fmt.Errorf("%s is not supported", fd.Message().FullName())
			}
			return kMessage, nil
		}
		return kInt, nil
	}
	k, err := scalar(fd)
	if err != nil || !fd.IsList() {
		return k, err
	}
	switch k {
	case kString:
		return kListString, nil
	case kInt:
		return kListInt, nil
	case kEnum:
		return kListEnum, nil
	case kMessage:
		return kListMessage, nil
	}
	return 0, fmt.Errorf("repeated %s is not supported", fd.Kind())
}

// emitter writes Go code into one generated file.
type emitter struct {
	g *protogen.GeneratedFile
}

// q is the qualified name of name in the package at path (imported).
func (e *emitter) q(importPath, name string) string {
	return e.g.QualifiedGoIdent(protogen.GoIdent{GoName: name, GoImportPath: protogen.GoImportPath(importPath)})
}

// call is the Go expression calling name of the package at path with args.
func (e *emitter) call(importPath, name string, args ...any) string {
	var as []string
	for _, a := range args {
		switch a := a.(type) {
		case rawExpr:
			as = append(as, string(a))
		case string:
			as = append(as, goString(a))
		default:
			as = append(as, fmt.Sprint(a))
		}
	}
	return e.q(importPath, name) + "(" + strings.Join(as, ", ") + ")"
}

// goString is s as a Go string literal: a raw one when s has backslashes.
func goString(s string) string {
	if strings.Contains(s, `\`) && !strings.ContainsAny(s, "`\n\r") && strconv.CanBackquote(s) {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}

func (e *emitter) types(name string) string { return e.q(fwPath+"types", name) }

// mode says which schema an attribute is generated for.
type mode int

const (
	modeResource         mode = iota
	modeComputedResource      // every attribute computed, without validators
	modeDataSource
)

// funcName is the name of the attributes function of m for the mode.
func funcName(m *protogen.Message, md mode) string {
	switch md {
	case modeComputedResource:
		return m.GoIdent.GoName + "ComputedResourceAttributes"
	case modeDataSource:
		return m.GoIdent.GoName + "DataSourceAttributes"
	}
	return m.GoIdent.GoName + "ResourceAttributes"
}

// attrType is the Go expression of the Terraform type of fi.
func (e *emitter) attrType(fi *field) string {
	switch fi.kind {
	case kBool:
		return e.types("BoolType")
	case kInt:
		return e.types("Int64Type")
	case kFloat:
		return e.types("Float64Type")
	case kMessage:
		return e.types("ObjectType") + "{AttrTypes: " + fi.f.Message.GoIdent.GoName + "AttrTypes()}"
	case kListString, kListEnum:
		return e.types("ListType") + "{ElemType: " + e.types("StringType") + "}"
	case kListInt:
		return e.types("ListType") + "{ElemType: " + e.types("Int64Type") + "}"
	case kListMessage:
		return e.types("ListType") + "{ElemType: " + e.types("ObjectType") + "{AttrTypes: " + fi.f.Message.GoIdent.GoName + "AttrTypes()}}"
	case kMapString:
		return e.types("MapType") + "{ElemType: " + e.types("StringType") + "}"
	}
	return e.types("StringType")
}

// valueType is the Go type of fi's model field.
func (e *emitter) valueType(fi *field) string {
	switch fi.kind {
	case kBool:
		return e.types("Bool")
	case kInt:
		return e.types("Int64")
	case kFloat:
		return e.types("Float64")
	case kMessage:
		return e.types("Object")
	case kListString, kListEnum, kListInt, kListMessage:
		return e.types("List")
	case kMapString:
		return e.types("Map")
	}
	return e.types("String")
}

// family is the name the framework's packages use for fi's type: String,
// Int64, Object, List...
func family(fi *field) string {
	switch fi.kind {
	case kBool:
		return "Bool"
	case kInt:
		return "Int64"
	case kFloat:
		return "Float64"
	case kMessage:
		return "Object"
	case kListString, kListEnum, kListInt, kListMessage:
		return "List"
	case kMapString:
		return "Map"
	}
	return "String"
}

// comment is a proto comment as one line of text.
func comment(c protogen.Comments) string {
	var words []string
	for _, line := range strings.Split(string(c), "\n") {
		words = append(words, strings.Fields(line)...)
	}
	return strings.Join(words, " ")
}

// description is the attribute description of fi.
func description(fi *field) string {
	d := comment(fi.f.Comments.Leading)
	if d == "" && fi.f.Message != nil && (fi.kind == kMessage || fi.kind == kListMessage) {
		d = comment(fi.f.Message.Comments.Leading)
	}
	if d == "" {
		name := strings.ReplaceAll(string(fi.f.Desc.Name()), "_", " ")
		d = string(unicode.ToUpper(rune(name[0]))) + name[1:] + "."
	}
	if !strings.HasSuffix(d, ".") {
		d += "."
	}
	switch fi.kind {
	case kEnum, kListEnum:
		names := enumNames(fi.f.Desc.Enum(), nil)
		d += " One of: " + strings.Join(names, ", ") + "."
	case kTimestamp:
		d += " An RFC 3339 time."
	case kDuration:
		d += ` A duration such as "90s" or "1h30m".`
	}
	if fi.opts.WriteOnly {
		d += " Write-only: sent to the API, never kept in the state."
	}
	return d
}

// validators are the Go expressions of fi's validators in a resource.
func (e *emitter) validators(msg *message, fi *field) []string {
	var out []string
	r := fi.rules
	switch fi.kind {
	case kString:
		out = e.stringValidators(r)
	case kBytes:
		out = e.stringValidators(r)
	case kInt:
		out = e.int64Validators(fi.f.Desc.Kind(), r)
	case kEnum:
		out = []string{e.call(fwvPath+"stringvalidator", "OneOf", anys(enumNames(fi.f.Desc.Enum(), r))...)}
	case kTimestamp:
		out = []string{e.call(tfvalidateIP, "RFC3339")}
	case kDuration:
		out = []string{e.durationValidator(r)}
	case kListString, kListInt, kListEnum, kListMessage:
		out = e.listValidators(fi.f.Desc, r)
	case kMapString:
		out = e.mapValidators(fi.f.Desc, r)
	}
	if od := fi.f.Desc.ContainingOneof(); od != nil && !od.IsSynthetic() {
		var members []string
		for _, other := range msg.fields {
			if other.f.Desc.ContainingOneof() == od && !other.opts.OutputOnly {
				members = append(members, strconv.Quote(string(other.f.Desc.Name())))
			}
		}
		if len(members) > 1 {
			out = append(out, e.call(tfvalidateIP, "OneofMember",
				rawExpr("[]string{"+strings.Join(members, ", ")+"}"), string(fi.f.Desc.Name()), oneofRequired(od)))
		}
	}
	return out
}

// attribute writes the schema attribute of fi for the mode.
func (e *emitter) attribute(msg *message, fi *field, md mode, schemaPath string) {
	g := e.g
	fam := family(fi)
	typeName := fam + "Attribute"
	switch fi.kind {
	case kMessage:
		typeName = "SingleNestedAttribute"
	case kListMessage:
		typeName = "ListNestedAttribute"
	}
	g.P(strconv.Quote(string(fi.f.Desc.Name())), ": ", e.q(schemaPath, typeName), "{")
	g.P("Description: ", strconv.Quote(description(fi)), ",")
	nestedMode := md
	computed := md != modeResource || fi.opts.OutputOnly
	if md == modeResource && fi.opts.OutputOnly {
		nestedMode = modeComputedResource
	}
	switch fi.kind {
	case kMessage:
		g.P("Attributes: ", funcName(fi.f.Message, nestedMode), "(),")
	case kListMessage:
		g.P("NestedObject: ", e.q(schemaPath, "NestedAttributeObject"), "{Attributes: ", funcName(fi.f.Message, nestedMode), "()},")
	case kListString, kListEnum, kListInt, kMapString:
		g.P("ElementType: ", strings.TrimSuffix(strings.SplitN(e.attrType(fi), "{ElemType: ", 2)[1], "}"), ",")
	}
	var plan []string
	pm := func(name string) string {
		return e.call(fwPath+"resource/schema/"+strings.ToLower(fam)+"planmodifier", name)
	}
	switch {
	case computed:
		g.P("Computed: true,")
		if md == modeResource && fi.opts.Immutable {
			plan = append(plan, pm("UseStateForUnknown"))
		}
	case fi.opts.WriteOnly:
		if required(fi.f.Desc, fi.rules) && !fi.inOneof {
			g.P("Required: true,")
		} else {
			g.P("Optional: true,")
		}
		g.P("WriteOnly: true,")
	case fi.opts.ServerDefault:
		g.P("Optional: true,")
		g.P("Computed: true,")
		plan = append(plan, pm("UseStateForUnknown"))
	case required(fi.f.Desc, fi.rules) && !fi.inOneof:
		g.P("Required: true,")
	default:
		g.P("Optional: true,")
	}
	if fi.opts.Sensitive || fi.opts.WriteOnly {
		g.P("Sensitive: true,")
	}
	if md == modeResource && !computed {
		if vs := e.validators(msg, fi); len(vs) > 0 {
			g.P("Validators: []", e.q(fwPath+"schema/validator", fam), "{")
			for _, v := range vs {
				g.P(v, ",")
			}
			g.P("},")
		}
		if fi.opts.RequiresReplace && !fi.opts.WriteOnly {
			plan = append(plan, pm("RequiresReplace"))
		}
	}
	if len(plan) > 0 {
		g.P("PlanModifiers: []", e.q(fwPath+"resource/schema/planmodifier", fam), "{")
		for _, p := range plan {
			g.P(p, ",")
		}
		g.P("},")
	}
	g.P("},")
}

// writeFile writes the generated code of the messages of the proto file f:
// models, resource schemas and conversions, or (dataSource) the data
// source schemas.
func writeFile(gen *protogen.Plugin, f *protogen.File, name string, msgs []*message, dataSource bool) error {
	g := gen.NewGeneratedFile(name, goPackage)
	e := &emitter{g: g}
	g.P("// Code generated by protoc-gen-carbide-terraform from ", f.Desc.Path(), ". DO NOT EDIT.")
	g.P()
	g.P("package generated")
	g.P()
	if dataSource {
		for _, msg := range msgs {
			e.attributesFunc(msg, modeDataSource)
		}
		return nil
	}
	for _, msg := range msgs {
		e.model(msg)
		e.attributesFunc(msg, modeResource)
		e.attributesFunc(msg, modeComputedResource)
		e.fromProto(msg)
		e.toProto(msg)
	}
	return nil
}

// enumsOf are the enums the fields of msgs use, once each.
func enumsOf(msgs []*message) []*protogen.Enum {
	seen := map[protoreflect.FullName]bool{}
	var out []*protogen.Enum
	for _, msg := range msgs {
		for _, fi := range msg.fields {
			if (fi.kind == kEnum || fi.kind == kListEnum) && !seen[fi.f.Enum.Desc.FullName()] {
				seen[fi.f.Enum.Desc.FullName()] = true
				out = append(out, fi.f.Enum)
			}
		}
	}
	return out
}

// enumVar is the name of the variable holding the mapping of the enum ed.
func enumVar(ed *protogen.Enum) string {
	return "enum" + ed.GoIdent.GoName
}

// model writes XModel and XAttrTypes.
func (e *emitter) model(msg *message) {
	g := e.g
	name := msg.m.GoIdent.GoName
	g.P("// ", name, "Model is ", msg.m.Desc.FullName(), " as a Terraform object.")
	if c := comment(msg.m.Comments.Leading); c != "" {
		g.P("// ", msg.m.Desc.Name(), ": ", c)
	}
	g.P("type ", name, "Model struct {")
	for _, fi := range msg.fields {
		if c := comment(fi.f.Comments.Leading); c != "" {
			g.P("// ", c)
		}
		g.P(fi.f.GoName, " ", e.valueType(fi), " `tfsdk:", strconv.Quote(string(fi.f.Desc.Name())), "`")
	}
	g.P("}")
	g.P()
	g.P("// ", name, "AttrTypes are the attribute types of ", name, "Model.")
	g.P("func ", name, "AttrTypes() map[string]", e.q(fwPath+"attr", "Type"), " {")
	g.P("return map[string]", e.q(fwPath+"attr", "Type"), "{")
	for _, fi := range msg.fields {
		g.P(strconv.Quote(string(fi.f.Desc.Name())), ": ", e.attrType(fi), ",")
	}
	g.P("}")
	g.P("}")
	g.P()
}

// attributesFunc writes the attributes function of msg for the mode.
func (e *emitter) attributesFunc(msg *message, md mode) {
	g := e.g
	schemaPath := fwPath + "resource/schema"
	what := "resource"
	switch md {
	case modeDataSource:
		schemaPath = fwPath + "datasource/schema"
		what = "data source, every attribute computed"
	case modeComputedResource:
		what = "resource, every attribute computed (an object the server sets)"
	}
	fn := funcName(msg.m, md)
	g.P("// ", fn, " are the attributes of ", msg.m.Desc.FullName(), " in a ", what, ".")
	g.P("func ", fn, "() map[string]", e.q(schemaPath, "Attribute"), " {")
	g.P("return map[string]", e.q(schemaPath, "Attribute"), "{")
	for _, fi := range msg.fields {
		e.attribute(msg, fi, md, schemaPath)
	}
	g.P("}")
	g.P("}")
	g.P()
}

// protoGoType is the Go type of a scalar field of fd's kind.
func protoGoType(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return "int32"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return "uint32"
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "uint64"
	case protoreflect.FloatKind:
		return "float32"
	case protoreflect.DoubleKind:
		return "float64"
	}
	return "int64"
}

// fromProto writes (*XModel).FromProto.
func (e *emitter) fromProto(msg *message) {
	g := e.g
	name := msg.m.GoIdent.GoName
	ctx := e.q("context", "Context")
	diags := e.q(fwPath+"diag", "Diagnostics")
	g.P("// FromProto sets m from x. Where a field is unset or zero, m keeps a")
	g.P("// known value that means the same and is null otherwise; write-only")
	g.P("// attributes are always null.")
	g.P("func (m *", name, "Model) FromProto(ctx ", ctx, ", x *", g.QualifiedGoIdent(msg.m.GoIdent), ") ", diags, " {")
	g.P("var diags ", diags)
	g.P("var d ", diags)
	g.P("_ = ctx")
	g.P("_ = d")
	tp := func(n string) string { return e.q(tfprotoIP, n) }
	for _, fi := range msg.fields {
		mf := "m." + fi.f.GoName
		get := "x.Get" + fi.f.GoName + "()"
		if fi.opts.WriteOnly {
			g.P(mf, " = ", e.types(family(fi)+"Null"), "(", nullArg(e, fi), ")")
			continue
		}
		switch fi.kind {
		case kString:
			if fi.opts.CaseInsensitive {
				g.P(mf, " = ", tp("StringFold"), "(", mf, ", ", get, ")")
				break
			}
			g.P(mf, " = ", tp("String"), "(", mf, ", ", get, ")")
		case kBytes:
			g.P(mf, " = ", tp("String"), "(", mf, ", string(", get, "))")
		case kBool:
			g.P(mf, " = ", tp("Bool"), "(", mf, ", ", get, ")")
		case kInt:
			g.P(mf, " = ", tp("Int64"), "(", mf, ", int64(", get, "))")
		case kFloat:
			g.P(mf, " = ", tp("Float64"), "(", mf, ", float64(", get, "))")
		case kEnum:
			g.P(mf, " = ", enumVar(fi.f.Enum), ".String(", mf, ", ", get, ".Number())")
		case kTimestamp:
			g.P(mf, " = ", tp("Timestamp"), "(", mf, ", ", get, ")")
		case kDuration:
			g.P(mf, " = ", tp("Duration"), "(", mf, ", ", get, ")")
		case kMessage:
			g.P(mf, ", d = ", tp("Object"), "[", fi.f.Message.GoIdent.GoName, "Model](ctx, ", mf, ", ", get, ", ", fi.f.Message.GoIdent.GoName, "AttrTypes())")
			g.P("diags.Append(d...)")
		case kListMessage:
			g.P(mf, ", d = ", tp("ObjectList"), "[", fi.f.Message.GoIdent.GoName, "Model](ctx, ", mf, ", ", get, ", ", fi.f.Message.GoIdent.GoName, "AttrTypes())")
			g.P("diags.Append(d...)")
		case kListString:
			g.P(mf, ", d = ", tp("List"), "(ctx, ", mf, ", ", e.types("StringType"), ", ", get, ")")
			g.P("diags.Append(d...)")
		case kListInt:
			g.P(mf, ", d = ", tp("IntList"), "(ctx, ", mf, ", ", get, ")")
			g.P("diags.Append(d...)")
		case kListEnum:
			g.P(mf, ", d = ", tp("EnumList"), "(ctx, ", mf, ", ", enumVar(fi.f.Enum), ", ", get, ")")
			g.P("diags.Append(d...)")
		case kMapString:
			g.P(mf, ", d = ", tp("StringMap"), "(ctx, ", mf, ", ", get, ")")
			g.P("diags.Append(d...)")
		}
	}
	g.P("return diags")
	g.P("}")
	g.P()
}

// nullArg is the argument of types.XNull for fi's type.
func nullArg(e *emitter, fi *field) string {
	switch fi.kind {
	case kMessage:
		return fi.f.Message.GoIdent.GoName + "AttrTypes()"
	case kListString, kListEnum, kListInt, kListMessage, kMapString:
		return strings.TrimSuffix(strings.SplitN(e.attrType(fi), "{ElemType: ", 2)[1], "}")
	}
	return ""
}

// toProto writes (*XModel).ToProto.
func (e *emitter) toProto(msg *message) {
	g := e.g
	name := msg.m.GoIdent.GoName
	ctx := e.q("context", "Context")
	diags := e.q(fwPath+"diag", "Diagnostics")
	pb := g.QualifiedGoIdent(msg.m.GoIdent)
	g.P("// ToProto is m as a message; null and unknown attributes are unset.")
	g.P("func (m *", name, "Model) ToProto(ctx ", ctx, ") (*", pb, ", ", diags, ") {")
	g.P("var diags ", diags)
	g.P("var d ", diags)
	g.P("_ = ctx")
	g.P("_ = d")
	g.P("x := &", pb, "{}")
	tp := func(n string) string { return e.q(tfprotoIP, n) }
	for _, fi := range msg.fields {
		mf := "m." + fi.f.GoName
		attrName := strconv.Quote(string(fi.f.Desc.Name()))
		var val string // the Go expression of the value, after any statements
		switch fi.kind {
		case kString:
			val = mf + ".ValueString()"
		case kBytes:
			val = tp("Bytes") + "(" + mf + ")"
		case kBool:
			val = mf + ".ValueBool()"
		case kInt:
			val = protoGoType(fi.f.Desc) + "(" + mf + ".ValueInt64())"
		case kFloat:
			val = protoGoType(fi.f.Desc) + "(" + mf + ".ValueFloat64())"
		case kEnum:
			g.P("v", fi.f.GoName, ", d := ", enumVar(fi.f.Enum), ".Number(", mf, ", ", attrName, ")")
			g.P("diags.Append(d...)")
			val = g.QualifiedGoIdent(fi.f.Enum.GoIdent) + "(v" + fi.f.GoName + ")"
		case kTimestamp, kDuration:
			fn := "TimestampProto"
			if fi.kind == kDuration {
				fn = "DurationProto"
			}
			g.P("v", fi.f.GoName, ", d := ", tp(fn), "(", mf, ", ", attrName, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kMessage:
			g.P("v", fi.f.GoName, ", d := ", tp("ObjectProto"), "[", fi.f.Message.GoIdent.GoName, "Model, *", g.QualifiedGoIdent(fi.f.Message.GoIdent), "](ctx, ", mf, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kListMessage:
			g.P("v", fi.f.GoName, ", d := ", tp("ObjectListProto"), "[", fi.f.Message.GoIdent.GoName, "Model, *", g.QualifiedGoIdent(fi.f.Message.GoIdent), "](ctx, ", mf, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kListString:
			g.P("v", fi.f.GoName, ", d := ", tp("ListProto"), "[string](ctx, ", mf, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kListInt:
			g.P("v", fi.f.GoName, ", d := ", tp("IntListProto"), "[", protoGoType(fi.f.Desc), "](ctx, ", mf, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kListEnum:
			g.P("v", fi.f.GoName, ", d := ", tp("EnumListProto"), "[", g.QualifiedGoIdent(fi.f.Enum.GoIdent), "](ctx, ", mf, ", ", enumVar(fi.f.Enum), ", ", attrName, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		case kMapString:
			g.P("v", fi.f.GoName, ", d := ", tp("StringMapProto"), "(ctx, ", mf, ")")
			g.P("diags.Append(d...)")
			val = "v" + fi.f.GoName
		}
		if od := fi.f.Oneof; od != nil && !od.Desc.IsSynthetic() {
			g.P("if !", mf, ".IsNull() && !", mf, ".IsUnknown() {")
			g.P("x.", od.GoName, " = &", g.QualifiedGoIdent(fi.f.GoIdent), "{", fi.f.GoName, ": ", val, "}")
			g.P("}")
			continue
		}
		g.P("x.", fi.f.GoName, " = ", val)
	}
	g.P("return x, diags")
	g.P("}")
	g.P()
}

// writeRegistry writes the list of generated messages, which the coverage
// test walks.
func writeRegistry(gen *protogen.Plugin, msgs []*message) error {
	g := gen.NewGeneratedFile("registry.gen.go", goPackage)
	e := &emitter{g: g}
	g.P("// Code generated by protoc-gen-carbide-terraform. DO NOT EDIT.")
	g.P()
	g.P("// Package generated holds the Terraform schemas and model conversions")
	g.P("// that protoc-gen-carbide-terraform generates from the API's proto")
	g.P("// definitions (see docs/terraform.md). Run make generate; never edit it.")
	g.P("package generated")
	g.P()
	ctx := e.q("context", "Context")
	diags := e.q(fwPath+"diag", "Diagnostics")
	pm := e.q("google.golang.org/protobuf/proto", "Message")
	g.P("// Message is one generated message: its descriptor, schemas and")
	g.P("// conversions, for code that handles every generated message alike.")
	g.P("type Message struct {")
	g.P("Descriptor ", e.q("google.golang.org/protobuf/reflect/protoreflect", "MessageDescriptor"))
	g.P("ResourceAttributes func() map[string]", e.q(fwPath+"resource/schema", "Attribute"))
	g.P("ComputedResourceAttributes func() map[string]", e.q(fwPath+"resource/schema", "Attribute"))
	g.P("DataSourceAttributes func() map[string]", e.q(fwPath+"datasource/schema", "Attribute"))
	g.P("AttrTypes func() map[string]", e.q(fwPath+"attr", "Type"))
	g.P("// FromProto is a new model (a pointer to XModel) set from x.")
	g.P("FromProto func(ctx ", ctx, ", x ", pm, ") (any, ", diags, ")")
	g.P("// ToProto is the message of the model m (a pointer to XModel).")
	g.P("ToProto func(ctx ", ctx, ", m any) (", pm, ", ", diags, ")")
	g.P("}")
	g.P()
	enums := enumsOf(msgs)
	seen := map[string]protoreflect.FullName{}
	for _, ed := range enums {
		if other, ok := seen[enumVar(ed)]; ok {
			return fmt.Errorf("enums %s and %s have the same Go name; rename one", other, ed.Desc.FullName())
		}
		seen[enumVar(ed)] = ed.Desc.FullName()
		g.P("// ", enumVar(ed), " maps ", ed.Desc.FullName(), " to Terraform strings.")
		g.P("var ", enumVar(ed), " = ", e.call(tfprotoIP, "NewEnum", rawExpr(g.QualifiedGoIdent(ed.GoIdent)+"(0).Descriptor()")))
		g.P()
	}
	g.P("// Messages are the generated messages, by Go name.")
	g.P("var Messages = []Message{")
	for _, msg := range msgs {
		name := msg.m.GoIdent.GoName
		g.P("{")
		g.P("Descriptor: (*", g.QualifiedGoIdent(msg.m.GoIdent), ")(nil).ProtoReflect().Descriptor(),")
		g.P("ResourceAttributes: ", name, "ResourceAttributes,")
		g.P("ComputedResourceAttributes: ", name, "ComputedResourceAttributes,")
		g.P("DataSourceAttributes: ", name, "DataSourceAttributes,")
		g.P("AttrTypes: ", name, "AttrTypes,")
		g.P("FromProto: func(ctx ", ctx, ", x ", pm, ") (any, ", diags, ") {")
		g.P("var m ", name, "Model")
		g.P("d := m.FromProto(ctx, x.(*", g.QualifiedGoIdent(msg.m.GoIdent), "))")
		g.P("return &m, d")
		g.P("},")
		g.P("ToProto: func(ctx ", ctx, ", m any) (", pm, ", ", diags, ") {")
		g.P("return m.(*", name, "Model).ToProto(ctx)")
		g.P("},")
		g.P("},")
	}
	g.P("}")
	return nil
}
