package cli

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"

	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"sigs.k8s.io/yaml"
)

// services are the API's unary services, in the order the help lists
// them. WatchService has its own command (watch).
var services = []protoreflect.ServiceDescriptor{
	machinev1.File_carbide_machine_v1_machine_proto.Services().ByName("MachineService"),
	networkv1.File_carbide_network_v1_segment_proto.Services().ByName("SegmentService"),
	networkv1.File_carbide_network_v1_address_proto.Services().ByName("AddressService"),
	instancev1.File_carbide_instance_v1_image_proto.Services().ByName("ImageService"),
	instancev1.File_carbide_instance_v1_instance_proto.Services().ByName("InstanceService"),
	bmcv1.File_carbide_bmc_v1_bmc_proto.Services().ByName("BMCService"),
	auditv1.File_carbide_audit_v1_audit_proto.Services().ByName("AuditService"),
	agentv1.File_carbide_agent_v1_agent_proto.Services().ByName("AgentService"),
	bootv1.File_carbide_boot_v1_boot_proto.Services().ByName("BootService"),
	dhcpv1.File_carbide_dhcp_v1_dhcp_proto.Services().ByName("DHCPService"),
}

// nounShort describes each noun command.
var nounShort = map[string]string{
	"machine":  "Physical servers: register, list, label, maintenance, retry, state history",
	"segment":  "Network segments and their address pools",
	"address":  "IPv4 address leases on segments",
	"image":    "Operating system images that instances install",
	"instance": "Instances: machines allocated to tenants with an installed image",
	"bmc":      "Machines' BMCs, their credentials and power or boot operations",
	"audit":    "The audit log of API calls",
	"agent":    "Calls of the discovery agent (for debugging and tests)",
	"boot":     "Calls of the PXE daemon and booted systems (for debugging and tests)",
	"dhcp":     "Calls of the DHCP daemon (for debugging and tests)",
}

// verbOverride renames the few verbs the general rule names badly.
var verbOverride = map[protoreflect.FullName]string{
	"carbide.audit.v1.AuditService.ListAuditRecords": "list",
}

// resolvable are the nouns whose names the CLI turns into ids.
var resolvable = map[string]bool{"machine": true, "segment": true, "image": true, "instance": true}

// rpcSpec is one RPC as a command.
type rpcSpec struct {
	md   protoreflect.MethodDescriptor
	noun string
	verb string
	// body is the request field that holds the resource itself
	// (CreateSegmentRequest.segment), whose fields become flags without a
	// prefix; nil when there is none.
	body protoreflect.FieldDescriptor
	// positional is the path to the field the optional argument sets (an
	// id or a name); nil when the command takes no argument.
	positional []protoreflect.FieldDescriptor
}

// nounOf is the command name of a service: MachineService -> machine.
func nounOf(sd protoreflect.ServiceDescriptor) string {
	return strings.ToLower(strings.TrimSuffix(string(sd.Name()), "Service"))
}

// nounWord is the service's resource as it appears in method names:
// Machine, BMC, DHCP.
func nounWord(sd protoreflect.ServiceDescriptor) string {
	return strings.TrimSuffix(string(sd.Name()), "Service")
}

// verbOf names a method's command: the method name without the noun, in
// kebab case (ListMachineTransitions -> list-transitions).
func verbOf(md protoreflect.MethodDescriptor) string {
	if v, ok := verbOverride[md.FullName()]; ok {
		return v
	}
	name := string(md.Name())
	word := nounWord(md.Parent().(protoreflect.ServiceDescriptor))
	for _, w := range []string{word + "es", word + "s", word} {
		// Only a whole word: Machine in ListMachineTransitions, not
		// Address in AddressRange.
		re := regexp.MustCompile(w + `([A-Z]|$)`)
		if loc := re.FindStringSubmatchIndex(name); loc != nil && loc[0] > 0 {
			name = name[:loc[0]] + name[loc[0]+len(w):]
			break
		}
	}
	return kebab(name)
}

// kebab turns CamelCase into kebab-case, keeping acronyms together:
// EnrollBMC -> enroll-bmc, GetBootConfig -> get-boot-config.
func kebab(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prevLower := unicode.IsLower(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				b.WriteByte('-')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// words is a method name as a sentence: ListMachineTransitions -> "List
// machine transitions"; acronyms stay upper case.
func words(s string) string {
	parts := strings.Split(kebab(s), "-")
	for i, p := range parts {
		switch p {
		case "bmc", "bmcs", "dhcp":
			parts[i] = strings.ToUpper(strings.TrimSuffix(p, "s"))
			if strings.HasSuffix(p, "s") {
				parts[i] += "s"
			}
		}
	}
	out := strings.Join(parts, " ")
	return strings.ToUpper(out[:1]) + out[1:]
}

// newSpec works out how method md is driven from the command line.
func newSpec(md protoreflect.MethodDescriptor) *rpcSpec {
	sd := md.Parent().(protoreflect.ServiceDescriptor)
	s := &rpcSpec{md: md, noun: nounOf(sd), verb: verbOf(md)}
	in := md.Input()
	if fd := in.Fields().ByName(protoreflect.Name(s.noun)); fd != nil && fd.Kind() == protoreflect.MessageKind && !fd.IsList() {
		s.body = fd
	}
	switch {
	case in.Fields().ByName("id") != nil:
		s.positional = []protoreflect.FieldDescriptor{in.Fields().ByName("id")}
	case s.body != nil && s.body.Message().Fields().ByName("id") != nil && !s.creates():
		s.positional = []protoreflect.FieldDescriptor{s.body, s.body.Message().Fields().ByName("id")}
	case s.verb != "list":
		var ids []protoreflect.FieldDescriptor
		for i := range in.Fields().Len() {
			fd := in.Fields().Get(i)
			if fd.Kind() == protoreflect.StringKind && !fd.IsList() && strings.HasSuffix(string(fd.Name()), "_id") && fd.Name() != "request_id" {
				ids = append(ids, fd)
			}
		}
		if len(ids) == 1 {
			s.positional = ids
		}
	}
	return s
}

// creates says whether the RPC creates its resource, whose id the
// server assigns.
func (s *rpcSpec) creates() bool {
	return strings.HasPrefix(string(s.md.Name()), "Create")
}

// argName is how help shows the positional argument.
func (s *rpcSpec) argName() string {
	if s.positional == nil {
		return ""
	}
	fd := s.positional[len(s.positional)-1]
	kind := idKind(s.noun, fd)
	switch kind {
	case "machine", "instance":
		return "<id|hostname>"
	case "segment":
		return "<id|name>"
	case "image":
		return "<id|name[:version]>"
	}
	return "<" + strings.ReplaceAll(string(fd.Name()), "_", "-") + ">"
}

// idKind is the kind of resource whose id field fd holds, if the CLI can
// resolve its names: id in the machine commands is a machine's,
// segment_id a segment's.
func idKind(noun string, fd protoreflect.FieldDescriptor) string {
	if fd.Kind() != protoreflect.StringKind {
		return ""
	}
	name := string(fd.Name())
	if name == "id" {
		if resolvable[noun] {
			return noun
		}
		return ""
	}
	if k, ok := strings.CutSuffix(name, "_id"); ok && resolvable[k] {
		return k
	}
	return ""
}

// outputOnly are resource fields the server sets; they get no flags.
var outputOnly = map[protoreflect.FullName]bool{
	"carbide.machine.v1.Machine.state":       true,
	"carbide.machine.v1.Machine.interfaces":  true,
	"carbide.machine.v1.Machine.inventory":   true,
	"carbide.machine.v1.Machine.hardware_id": true,
	"carbide.machine.v1.Machine.task":        true,
	"carbide.instance.v1.Image.deprecated":   true,
}

// bindFields adds a flag for each field of md (and of its nested
// messages, with the nested field's name as prefix).
func bindFields(cmd *cobra.Command, s *rpcSpec, md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor, prefix string, flags *[]*fieldFlag) {
	fs := cmd.Flags()
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		if outputOnly[fd.FullName()] {
			continue
		}
		if len(path) == 1 && path[0] == s.body && fd.Name() == "id" && s.creates() {
			continue // assigned by the server
		}
		if len(path) > 0 && fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp" {
			continue // create_time and the like: output only
		}
		p := append(slices.Clone(path), fd)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && !isScalarLike(fd) && len(path) < 3 {
			sub := flagName(prefix, fd)
			if len(path) == 0 && fd == s.body {
				sub = ""
			}
			bindFields(cmd, s, fd.Message(), p, sub, flags)
			continue
		}
		name := flagName(prefix, fd)
		if fs.Lookup(name) != nil {
			name = flagName(flagName(prefix, path[len(path)-1]), fd)
		}
		if fs.Lookup(name) != nil {
			continue
		}
		*flags = append(*flags, addFieldFlag(fs, name, p))
		if fd.Kind() == protoreflect.EnumKind {
			choices := enumChoices(fd.Enum())
			_ = cmd.RegisterFlagCompletionFunc((*flags)[len(*flags)-1].name, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return choices, cobra.ShellCompDirectiveNoFileComp
			})
		}
	}
}

// newMessage returns an empty message of md's Go type (or a dynamic one).
func newMessage(md protoreflect.MessageDescriptor) protoreflect.Message {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil {
		return mt.New()
	}
	return dynamicpb.NewMessage(md)
}

// readBody reads a whole request from a JSON or YAML file ("-" is
// standard input) into msg.
func readBody(name string, stdin io.Reader, msg proto.Message) error {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return usageErrorf("read the request from %s: not JSON or YAML: %v", name, err)
	}
	if err := protojson.Unmarshal(js, msg); err != nil {
		return usageErrorf("read the request from %s: %v (want a %s in its JSON form)", name, err, msg.ProtoReflect().Descriptor().FullName())
	}
	return nil
}

// apply sets the field of ff in req from its flag's values.
func (ff *fieldFlag) apply(req protoreflect.Message, stdin io.Reader) error {
	m := req
	for _, fd := range ff.path[:len(ff.path)-1] {
		m = m.Mutable(fd).Message()
	}
	fd := ff.path[len(ff.path)-1]
	v := ff.value
	switch {
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { mp.Clear(k); return true })
		for _, s := range v.vals {
			k, val, _ := strings.Cut(s, "=")
			mp.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(val))
		}
	case fd.IsList():
		l := m.Mutable(fd).List()
		l.Truncate(0)
		for _, s := range v.vals {
			pv, err := v.parse(s)
			if err != nil {
				return err
			}
			l.Append(pv)
		}
	default:
		if len(v.vals) == 0 {
			return nil
		}
		s := v.vals[0]
		if isSecretField(fd) && fd.Kind() == protoreflect.StringKind && s == "-" {
			secret, err := readLine(stdin)
			if err != nil {
				return fmt.Errorf("read --%s from standard input: %w", ff.name, err)
			}
			m.Set(fd, protoreflect.ValueOfString(secret))
			return nil
		}
		pv, err := v.parse(s)
		if err != nil {
			return err
		}
		m.Set(fd, pv)
	}
	return nil
}

// readLine reads one line, without its line end.
func readLine(r io.Reader) (string, error) {
	var b []byte
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b = append(b, buf[0])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(string(b), "\r"), nil
}

// updateMask names the body fields whose flags were given, for
// UpdateX requests that were not given a mask.
func updateMask(s *rpcSpec, changed []*fieldFlag) *fieldmaskpb.FieldMask {
	var paths []string
	for _, ff := range changed {
		if len(ff.path) < 2 || ff.path[0] != s.body || ff.path[1].Name() == "id" {
			continue
		}
		if p := string(ff.path[1].Name()); !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	return &fieldmaskpb.FieldMask{Paths: paths}
}
