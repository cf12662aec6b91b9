package carbide

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// pathOf builds a protovalidate field path from names and subscripts:
// a string element is a field name, an int the index of the element
// before it, and a key{} a map key of the element before it.
type key struct{ v any }

func pathOf(parts ...any) *validate.FieldPath {
	p := &validate.FieldPath{}
	var last *validate.FieldPathElement
	for _, part := range parts {
		switch v := part.(type) {
		case string:
			last = validate.FieldPathElement_builder{FieldName: proto.String(v)}.Build()
			p.SetElements(append(p.GetElements(), last))
		case int:
			last.SetIndex(uint64(v))
		case key:
			switch k := v.v.(type) {
			case string:
				last.SetStringKey(k)
			case bool:
				last.SetBoolKey(k)
			case int64:
				last.SetIntKey(k)
			case uint64:
				last.SetUintKey(k)
			}
		}
	}
	return p
}

func violation(field *validate.FieldPath, ruleID, msg string) *validate.Violation {
	return validate.Violation_builder{Field: field, RuleId: proto.String(ruleID), Message: proto.String(msg)}.Build()
}

// invalidArgument builds the error the API's validation interceptor
// returns: a message listing the violations, and the violations as a
// buf.validate.Violations detail.
func invalidArgument(t *testing.T, vs ...*validate.Violation) *connect.Error {
	t.Helper()
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fieldPath(v.GetField()) + ": " + v.GetMessage()
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("invalid request: "+strings.Join(parts, "; ")))
	d, err := connect.NewErrorDetail(validate.Violations_builder{Violations: vs}.Build())
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(d)
	return cerr
}

func TestAsError(t *testing.T) {
	t.Parallel()
	mapKey := violation(pathOf("labels", key{"Bad Key"}), "string.pattern", "value does not match regex pattern")
	mapKey.SetForKey(true)
	noRuleID := validate.Violation_builder{
		Field:   pathOf("mtu"),
		Rule:    pathOf("uint32", "gte"),
		Message: proto.String("value must be greater than or equal to 576"),
	}.Build()

	for name, tc := range map[string]struct {
		err            error
		want           *Error // without err
		wantString     string
		wantNotAnError bool
	}{
		"not found": {
			err:        connect.NewError(connect.CodeNotFound, errors.New("not found")),
			want:       &Error{Code: connect.CodeNotFound, Message: "not found"},
			wantString: "not_found: not found",
		},
		"wrapped": {
			err:        fmt.Errorf("create segment: %w", connect.NewError(connect.CodeAlreadyExists, errors.New("segment lab exists"))),
			want:       &Error{Code: connect.CodeAlreadyExists, Message: "segment lab exists"},
			wantString: "already_exists: segment lab exists",
		},
		"violations": {
			err: invalidArgument(t,
				violation(pathOf("segment", "name"), "string.min_len", "value length must be at least 1 characters"),
				violation(pathOf("segment", "ranges", 2, "start"), "string.ipv4", "value must be a valid IPv4 address"),
				mapKey,
				violation(pathOf("flags", key{true}), "bool.const", "must be false"),
				violation(pathOf("ints", key{int64(-3)}), "int.x", "bad"),
				violation(pathOf("uints", key{uint64(7)}), "uint.x", "bad"),
				violation(nil, "segment.gateway_in_prefix", "gateway must lie inside prefix"),
				noRuleID,
			),
			want: &Error{
				Code:    connect.CodeInvalidArgument,
				Message: "invalid request: segment.name: value length must be at least 1 characters; segment.ranges[2].start: value must be a valid IPv4 address; labels[\"Bad Key\"]: value does not match regex pattern; flags[true]: must be false; ints[-3]: bad; uints[7]: bad; : gateway must lie inside prefix; mtu: value must be greater than or equal to 576",
				Violations: []Violation{
					{Field: "segment.name", Rule: "string.min_len", Message: "value length must be at least 1 characters"},
					{Field: "segment.ranges[2].start", Rule: "string.ipv4", Message: "value must be a valid IPv4 address"},
					{Field: `labels["Bad Key"]`, Rule: "string.pattern", Message: "value does not match regex pattern", ForKey: true},
					{Field: "flags[true]", Rule: "bool.const", Message: "must be false"},
					{Field: "ints[-3]", Rule: "int.x", Message: "bad"},
					{Field: "uints[7]", Rule: "uint.x", Message: "bad"},
					{Rule: "segment.gateway_in_prefix", Message: "gateway must lie inside prefix"},
					{Field: "mtu", Rule: "uint32.gte", Message: "value must be greater than or equal to 576"},
				},
			},
			wantString: `invalid_argument: invalid request (segment.name: value length must be at least 1 characters; segment.ranges[2].start: value must be a valid IPv4 address; labels["Bad Key"]: value does not match regex pattern; flags[true]: must be false; ints[-3]: bad; uints[7]: bad; gateway must lie inside prefix; mtu: value must be greater than or equal to 576)`,
		},
		"violations, other message": {
			err: func() error {
				cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("check the request"))
				d, _ := connect.NewErrorDetail(validate.Violations_builder{Violations: []*validate.Violation{
					violation(pathOf("id"), "string.uuid", "value must be a valid UUID"),
				}}.Build())
				cerr.AddDetail(d)
				return cerr
			}(),
			want: &Error{Code: connect.CodeInvalidArgument, Message: "check the request", Violations: []Violation{
				{Field: "id", Rule: "string.uuid", Message: "value must be a valid UUID"},
			}},
			wantString: "invalid_argument: check the request (id: value must be a valid UUID)",
		},
		"other details ignored": {
			err: func() error {
				cerr := connect.NewError(connect.CodeFailedPrecondition, errors.New("segment in use"))
				d, _ := connect.NewErrorDetail(&machinev1.Machine{Id: "x"})
				cerr.AddDetail(d)
				return cerr
			}(),
			want:       &Error{Code: connect.CodeFailedPrecondition, Message: "segment in use"},
			wantString: "failed_precondition: segment in use",
		},
		"no message": {
			err:        connect.NewError(connect.CodeUnavailable, nil),
			want:       &Error{Code: connect.CodeUnavailable},
			wantString: "unavailable",
		},
		"not a connect error": {err: errors.New("boom"), wantNotAnError: true},
		"nil":                 {err: nil, wantNotAnError: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, ok := AsError(tc.err)
			if tc.wantNotAnError {
				if ok || got != nil {
					t.Errorf("AsError(%v) = %v, %v; want nil, false", tc.err, got, ok)
				}
				return
			}
			if !ok {
				t.Fatalf("AsError(%v) = false", tc.err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(Error{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".err"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("AsError (-want +got):\n%s", diff)
			}
			if got.Error() != tc.wantString {
				t.Errorf("Error() = %q\nwant      %q", got.Error(), tc.wantString)
			}
			// An Error still is the Connect error underneath, and AsError
			// of an Error (or of one wrapped) is that Error.
			if connect.CodeOf(got) != tc.want.Code {
				t.Errorf("connect.CodeOf(Error) = %v, want %v", connect.CodeOf(got), tc.want.Code)
			}
			var cerr *connect.Error
			if !errors.As(got, &cerr) {
				t.Errorf("errors.As(Error, *connect.Error) = false")
			}
			if again, ok := AsError(fmt.Errorf("x: %w", got)); !ok || again != got {
				t.Errorf("AsError of a wrapped *Error did not return it")
			}
		})
	}
}

func TestIsHelpers(t *testing.T) {
	t.Parallel()
	checks := map[string]func(error) bool{
		"IsNotFound": IsNotFound, "IsAlreadyExists": IsAlreadyExists, "IsInvalidArgument": IsInvalidArgument,
		"IsFailedPrecondition": IsFailedPrecondition, "IsPermissionDenied": IsPermissionDenied,
		"IsUnauthenticated": IsUnauthenticated, "IsRetryable": IsRetryable,
	}
	wantTrue := map[connect.Code][]string{
		connect.CodeNotFound:           {"IsNotFound"},
		connect.CodeAlreadyExists:      {"IsAlreadyExists"},
		connect.CodeInvalidArgument:    {"IsInvalidArgument"},
		connect.CodeFailedPrecondition: {"IsFailedPrecondition"},
		connect.CodePermissionDenied:   {"IsPermissionDenied"},
		connect.CodeUnauthenticated:    {"IsUnauthenticated"},
		connect.CodeUnavailable:        {"IsRetryable"},
		connect.CodeAborted:            {"IsRetryable"},
		connect.CodeResourceExhausted:  {"IsRetryable"},
		connect.CodeInternal:           nil,
	}
	for code, names := range wantTrue {
		err := fmt.Errorf("call: %w", connect.NewError(code, errors.New("x")))
		for name, check := range checks {
			want := false
			for _, n := range names {
				want = want || n == name
			}
			if got := check(err); got != want {
				t.Errorf("%s(%v) = %v, want %v", name, code, got, want)
			}
		}
	}
	for name, check := range checks {
		if check(nil) || check(errors.New("plain")) {
			t.Errorf("%s is true for a nil or non-Connect error", name)
		}
	}
}

// TestErrorsFromAPI checks AsError against the errors a real carbide-api
// returns, over each protocol.
func TestErrorsFromAPI(t *testing.T) {
	api := startAPI(t)
	for name, protocol := range map[string]string{"connect": "connect", "grpc": "grpc", "grpcweb": "grpc-web"} {
		t.Run(name, func(t *testing.T) {
			cfg := api.config("admin")
			cfg.Protocol = protocol
			c, err := cfg.NewClient()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			_, err = c.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
				Name:       "Not_A_Name",
				Prefix:     "10.0.0.1/24",
				Gateway:    "10.0.0.300",
				DnsServers: []string{"1.1.1.1", "nope"},
			}}))
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("CreateSegment of a bad segment: %v, want an API error", err)
			}
			if !IsInvalidArgument(err) {
				t.Errorf("code %v, want invalid_argument", e.Code)
			}
			got := map[string]string{}
			for _, v := range e.Violations {
				got[v.Field] = v.Rule
			}
			want := map[string]string{
				"segment.name":           "string.pattern",
				"segment.prefix":         "string.ipv4_prefix",
				"segment.gateway":        "string.ipv4",
				"segment.dns_servers[1]": "string.ipv4",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("violations field -> rule (-want +got):\n%s\nerror: %v", diff, e)
			}
			for _, w := range []string{"invalid_argument: ", "(segment.", "segment.dns_servers[1]: "} {
				if !strings.Contains(e.Error(), w) {
					t.Errorf("Error() = %q, want it to contain %q", e.Error(), w)
				}
			}

			_, err = c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: "7d8f6c39-52a3-4bd4-9a53-0b5d2f6e1c11"}))
			if !IsNotFound(err) {
				t.Errorf("GetMachine of an unknown id: %v, want not_found", err)
			}
			if e, ok := AsError(err); !ok || len(e.Violations) != 0 {
				t.Errorf("AsError(not found) = %+v, %v; want an Error without violations", e, ok)
			}
		})
	}

	// The dhcp role may not create segments.
	dhcp := api.client(t, "dhcp")
	_, err := dhcp.Segments.CreateSegment(context.Background(), connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "lab", Prefix: "10.0.0.0/24",
	}}))
	if !IsPermissionDenied(err) {
		t.Errorf("CreateSegment as dhcp: %v, want permission_denied", err)
	}

	// Without credentials.
	anon, err := Config{Endpoint: "https://" + api.addr, CACert: filepath.Join(api.pki, "ca.crt")}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.Machines.GetMachine(context.Background(), connect.NewRequest(&machinev1.GetMachineRequest{Id: "7d8f6c39-52a3-4bd4-9a53-0b5d2f6e1c11"}))
	if !IsUnauthenticated(err) {
		t.Errorf("GetMachine without credentials: %v, want unauthenticated", err)
	}
}
