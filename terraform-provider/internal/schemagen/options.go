package schemagen

import (
	"fmt"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The options of carbide/terraform/v1/options.proto. The plugin reads them
// through the descriptors of the request rather than generated Go code, so
// that it never depends on code it generates itself.
const (
	messageExtension = "carbide.terraform.v1.message"
	fieldExtension   = "carbide.terraform.v1.field"
)

// messageOptions are a message's carbide.terraform.v1.MessageOptions.
type messageOptions struct {
	Generate  bool
	RulesFrom string
}

// fieldOptions are a field's carbide.terraform.v1.FieldOptions.
type fieldOptions struct {
	Exclude         bool
	OutputOnly      bool
	Immutable       bool
	Sensitive       bool
	WriteOnly       bool
	RequiresReplace bool
	ServerDefault   bool
	CaseInsensitive bool
}

// optionReader reads the Terraform options of the request's descriptors.
type optionReader struct {
	message, field protoreflect.ExtensionType
	types          *protoregistry.Types
}

// newOptionReader finds the option extensions among the request's files;
// without them no message is annotated.
func newOptionReader(gen *protogen.Plugin) (*optionReader, error) {
	r := &optionReader{types: new(protoregistry.Types)}
	for _, f := range gen.Files {
		exts := f.Desc.Extensions()
		for i := range exts.Len() {
			xd := exts.Get(i)
			var xt protoreflect.ExtensionType
			switch xd.FullName() {
			case messageExtension:
				xt = dynamicpb.NewExtensionType(xd)
				r.message = xt
			case fieldExtension:
				xt = dynamicpb.NewExtensionType(xd)
				r.field = xt
			default:
				continue
			}
			if err := r.types.RegisterExtension(xt); err != nil {
				return nil, fmt.Errorf("register %s: %w", xd.FullName(), err)
			}
		}
	}
	return r, nil
}

// read returns the extension xt of the options opts, or nil.
func (r *optionReader) read(opts proto.Message, xt protoreflect.ExtensionType) (protoreflect.Message, error) {
	if xt == nil || opts == nil || !opts.ProtoReflect().IsValid() {
		return nil, nil
	}
	b, err := proto.Marshal(opts)
	if err != nil {
		return nil, err
	}
	fresh := opts.ProtoReflect().Type().New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: r.types}).Unmarshal(b, fresh); err != nil {
		return nil, err
	}
	m := fresh.ProtoReflect()
	if !m.Has(xt.TypeDescriptor()) {
		return nil, nil
	}
	return m.Get(xt.TypeDescriptor()).Message(), nil
}

// boolField is the bool field name of m (false when m is nil).
func boolField(m protoreflect.Message, name protoreflect.Name) bool {
	if m == nil {
		return false
	}
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil {
		return false
	}
	return m.Get(fd).Bool()
}

// messageOpts are the Terraform options of the message md.
func (r *optionReader) messageOpts(md protoreflect.MessageDescriptor) (messageOptions, error) {
	m, err := r.read(md.Options(), r.message)
	if err != nil || m == nil {
		return messageOptions{}, err
	}
	o := messageOptions{Generate: boolField(m, "generate")}
	if fd := m.Descriptor().Fields().ByName("rules_from"); fd != nil {
		o.RulesFrom = m.Get(fd).String()
	}
	return o, nil
}

// fieldOpts are the Terraform options of the field fd.
func (r *optionReader) fieldOpts(fd protoreflect.FieldDescriptor) (fieldOptions, error) {
	m, err := r.read(fd.Options(), r.field)
	if err != nil || m == nil {
		return fieldOptions{}, err
	}
	return fieldOptions{
		Exclude:         boolField(m, "exclude"),
		OutputOnly:      boolField(m, "output_only"),
		Immutable:       boolField(m, "immutable"),
		Sensitive:       boolField(m, "sensitive"),
		WriteOnly:       boolField(m, "write_only"),
		RequiresReplace: boolField(m, "requires_replace"),
		ServerDefault:   boolField(m, "server_default"),
		CaseInsensitive: boolField(m, "case_insensitive"),
	}, nil
}
