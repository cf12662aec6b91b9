package cli

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/carbide-dev/carbide/sdk/carbide"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// invoke calls the unary RPC md through the SDK client's typed service
// client, so the call goes through the client's authentication and
// protocol settings. req must be md's input type; the response is md's
// output type.
func invoke(ctx context.Context, c *carbide.Client, md protoreflect.MethodDescriptor, req proto.Message) (proto.Message, error) {
	svc, err := serviceClient(c, md.Parent().(protoreflect.ServiceDescriptor))
	if err != nil {
		return nil, err
	}
	m := svc.MethodByName(string(md.Name()))
	if !m.IsValid() {
		return nil, fmt.Errorf("the SDK client has no method %s", md.FullName())
	}
	// The method is func(context.Context, *connect.Request[In]) (*connect.Response[Out], error).
	reqType := m.Type().In(1)
	r := reflect.New(reqType.Elem())
	r.Elem().FieldByName("Msg").Set(reflect.ValueOf(req))
	out := m.Call([]reflect.Value{reflect.ValueOf(ctx), r})
	if e := out[1].Interface(); e != nil {
		return nil, e.(error)
	}
	return out[0].Elem().FieldByName("Msg").Interface().(proto.Message), nil
}

// serviceClient finds the field of c that holds the client of service sd:
// the field whose interface type is named <Service>Client.
func serviceClient(c *carbide.Client, sd protoreflect.ServiceDescriptor) (reflect.Value, error) {
	v := reflect.ValueOf(c).Elem()
	want := string(sd.Name()) + "Client"
	// The generated package is <proto package's last two parts>connect,
	// e.g. machinev1connect for carbide.machine.v1.
	parts := strings.Split(string(sd.ParentFile().Package()), ".")
	pkg := strings.Join(parts[len(parts)-2:], "") + "connect"
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type.Kind() == reflect.Interface && f.Type.Name() == want && strings.HasSuffix(f.Type.PkgPath(), "/"+pkg) {
			fv := v.Field(i)
			if fv.IsNil() {
				return reflect.Value{}, fmt.Errorf("the SDK client has no %s client", sd.FullName())
			}
			return fv, nil
		}
	}
	return reflect.Value{}, fmt.Errorf("the SDK client has no %s client", sd.FullName())
}
