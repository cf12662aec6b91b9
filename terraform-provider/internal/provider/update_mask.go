package provider

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// changedFields are the names among candidates of the fields whose values
// differ between the messages have and want (of one type): the paths of
// an update's FieldMask.
func changedFields(have, want proto.Message, candidates []string) []string {
	var out []string
	fields := want.ProtoReflect().Descriptor().Fields()
	for _, name := range candidates {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			continue
		}
		if !proto.Equal(only(have, fd), only(want, fd)) {
			out = append(out, name)
		}
	}
	return out
}

// only is a message of x's type with only x's field fd set.
func only(x proto.Message, fd protoreflect.FieldDescriptor) proto.Message {
	m := x.ProtoReflect().Type().New()
	if x.ProtoReflect().Has(fd) {
		m.Set(fd, x.ProtoReflect().Get(fd))
	}
	return m.Interface()
}
