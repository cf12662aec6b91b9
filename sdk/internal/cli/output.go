package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// Output formats of -o.
const (
	formatTable = "table"
	formatWide  = "wide"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

var formats = []string{formatTable, formatWide, formatJSON, formatYAML}

// column is one column of a table: a header and the dotted path of the
// field it shows (through repeated messages, whose values are joined).
type column struct {
	header string
	path   string
	wide   bool // only with -o wide
}

// tables are the columns of each resource type. Types not listed get
// their scalar fields.
var tables = map[protoreflect.FullName][]column{
	"carbide.machine.v1.Machine": {
		{"ID", "id", false}, {"HOSTNAME", "hostname", false}, {"STATE", "state", false},
		{"MAINTENANCE", "maintenance", false}, {"ADDRESS", "interfaces.address", false}, {"MAC", "interfaces.mac", false},
		{"LABELS", "labels", true}, {"HARDWARE-ID", "hardware_id", true}, {"TASK", "task.step", true},
		{"INSTANCE", "task.instance_id", true}, {"STATE-TIME", "state_time", true}, {"CREATED", "create_time", true},
	},
	"carbide.network.v1.Segment": {
		{"ID", "id", false}, {"NAME", "name", false}, {"PREFIX", "prefix", false}, {"GATEWAY", "gateway", false},
		{"DOMAIN", "domain", false}, {"RANGES", "ranges", false},
		{"DNS", "dns_servers", true}, {"NTP", "ntp_servers", true}, {"MTU", "mtu", true}, {"LEASE", "lease_duration", true},
		{"RESERVATIONS", "reservations", true}, {"RELAYS", "relay_addresses", true}, {"CREATED", "create_time", true},
	},
	"carbide.network.v1.Lease": {
		{"ADDRESS", "address", false}, {"MAC", "mac", false}, {"RESERVED", "reserved", false},
		{"EXPIRES", "expire_time", false},
		{"SEGMENT", "segment_id", true}, {"RENEWED", "renew_time", true}, {"CREATED", "create_time", true},
	},
	"carbide.instance.v1.Image": {
		{"ID", "id", false}, {"NAME", "name", false}, {"VERSION", "version", false}, {"ARCH", "architecture", false},
		{"DEPRECATED", "deprecated", false}, {"DESCRIPTION", "description", true}, {"CREATED", "create_time", true},
	},
	"carbide.instance.v1.Instance": {
		{"ID", "id", false}, {"HOSTNAME", "hostname", false}, {"STATE", "state", false}, {"MACHINE", "machine_id", false},
		{"ADDRESS", "address", false}, {"IMAGE", "image_id", false},
		{"TASK", "task.step", true}, {"FAILURE", "failure_reason", true}, {"LABELS", "labels", true},
		{"WIPE", "wipe_mode", true}, {"CREATED", "create_time", true}, {"RUNNING-SINCE", "running_time", true},
	},
	"carbide.bmc.v1.BMC": {
		{"MACHINE", "machine_id", false}, {"ADDRESS", "address", false}, {"PROTOCOL", "protocol", false},
		{"USERNAME", "username", false}, {"PASSWORD", "has_password", false}, {"POWER", "power_state", false},
		{"MAC", "mac", true}, {"POWER-ERROR", "power_error", true}, {"DRIFT", "power_drift", true},
		{"CREDENTIALS", "credential_source", true}, {"UPDATED", "update_time", true},
	},
	"carbide.bmc.v1.Operation": {
		{"ID", "id", false}, {"MACHINE", "machine_id", false}, {"TYPE", "type", false}, {"STATE", "state", false},
		{"ERROR", "error", false}, {"REQUESTER", "requester", true}, {"WORKER", "worker", true},
		{"CREATED", "create_time", true}, {"ENDED", "end_time", true},
	},
	"carbide.audit.v1.AuditRecord": {
		{"TIME", "time", false}, {"PRINCIPAL", "principal", false}, {"PROCEDURE", "procedure", false},
		{"CODE", "code", false}, {"RESOURCES", "resource_ids", false},
		{"ROLES", "roles", true}, {"AUTH", "auth_method", true}, {"PEER", "peer", true}, {"ERROR", "error", true},
	},
	"carbide.machine.v1.StateTransition": {
		{"TIME", "time", false}, {"FROM", "from_state", false}, {"TO", "to_state", false},
		{"ACTOR", "actor", false}, {"REASON", "reason", false},
	},
}

// printer writes responses in the chosen format.
type printer struct {
	format string
	out    io.Writer
	// notes receives what a table would otherwise leave unsaid: that a
	// list is empty, that a call with an empty response succeeded.
	notes io.Writer
	// done describes a call whose response is empty, e.g. "segment rack1
	// deleted".
	done string
}

// items unwraps a response: the items of its one list field, the message
// of its one message field, or the response itself. list says whether
// the result is a list.
func items(resp proto.Message) (out []protoreflect.Message, list bool) {
	m := resp.ProtoReflect()
	fields := m.Descriptor().Fields()
	var lists, singles []protoreflect.FieldDescriptor
	others := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			lists = append(lists, fd)
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind && fd.ContainingOneof() == nil:
			singles = append(singles, fd)
		case fd.Name() == "next_page_token":
		default:
			others++
		}
	}
	switch {
	case len(lists) == 1 && len(singles) == 0 && others == 0:
		l := m.Get(lists[0]).List()
		for i := range l.Len() {
			out = append(out, l.Get(i).Message())
		}
		return out, true
	case len(singles) == 1 && len(lists) == 0 && others == 0:
		if !m.Has(singles[0]) {
			return nil, false
		}
		return []protoreflect.Message{m.Get(singles[0]).Message()}, false
	}
	if fields.Len() == 0 {
		return nil, false
	}
	return []protoreflect.Message{m}, false
}

// print writes resp.
func (p *printer) print(resp proto.Message) error {
	redact(resp.ProtoReflect())
	its, list := items(resp)
	switch p.format {
	case formatJSON, formatYAML:
		var js []byte
		if list {
			parts := make([]json.RawMessage, len(its))
			for i, it := range its {
				b, err := protojson.Marshal(it.Interface())
				if err != nil {
					return err
				}
				parts[i] = b
			}
			b, err := json.Marshal(parts)
			if err != nil {
				return err
			}
			js = b
		} else if len(its) == 1 {
			b, err := protojson.Marshal(its[0].Interface())
			if err != nil {
				return err
			}
			js = b
		} else {
			js = []byte("{}")
		}
		return p.writeJSON(js)
	}
	if len(its) == 0 && p.notes != nil {
		if list {
			fmt.Fprintln(p.notes, "none found")
		} else if p.done != "" {
			fmt.Fprintln(p.notes, p.done)
		}
	}
	if len(its) == 0 {
		return nil
	}
	return writeTable(p.out, its, p.format == formatWide)
}

// writeJSON writes a JSON document indented, or as YAML.
func (p *printer) writeJSON(js []byte) error {
	if p.format == formatYAML {
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return err
		}
		_, err = p.out.Write(y)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, js, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := p.out.Write(buf.Bytes())
	return err
}

// columnsOf are the columns of md's table.
func columnsOf(md protoreflect.MessageDescriptor, wide bool) []column {
	cols, ok := tables[md.FullName()]
	if !ok {
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			if fd.Kind() == protoreflect.MessageKind && !isScalarLike(fd) {
				continue
			}
			if fd.Kind() == protoreflect.BytesKind {
				continue
			}
			cols = append(cols, column{strings.ToUpper(strings.ReplaceAll(string(fd.Name()), "_", "-")), string(fd.Name()), i >= 6})
		}
	}
	var out []column
	for _, c := range cols {
		if wide || !c.wide {
			out = append(out, c)
		}
	}
	return out
}

// writeTable writes messages of one type as a table.
func writeTable(w io.Writer, msgs []protoreflect.Message, wide bool) error {
	cols := columnsOf(msgs[0].Descriptor(), wide)
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	headers := make([]string, len(cols))
	for i, c := range cols {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, m := range msgs {
		cells := make([]string, len(cols))
		for i, c := range cols {
			v := cellValue(m, strings.Split(c.path, "."))
			if v == "" {
				v = "-"
			}
			cells[i] = strings.ReplaceAll(v, "\t", " ")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// cellValue is the text of the field at path in m.
func cellValue(m protoreflect.Message, path []string) string {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil {
		return ""
	}
	if len(path) > 1 && fd.Kind() == protoreflect.MessageKind {
		if fd.IsList() {
			var parts []string
			l := m.Get(fd).List()
			for i := range l.Len() {
				if s := cellValue(l.Get(i).Message(), path[1:]); s != "" {
					parts = append(parts, s)
				}
			}
			return strings.Join(parts, ",")
		}
		if !m.Has(fd) {
			return ""
		}
		return cellValue(m.Get(fd).Message(), path[1:])
	}
	if isSecretField(fd) {
		return ""
	}
	v := m.Get(fd)
	switch {
	case fd.IsMap():
		var parts []string
		v.Map().Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
			parts = append(parts, k.String()+"="+val.String())
			return true
		})
		slices.Sort(parts)
		return strings.Join(parts, ",")
	case fd.IsList():
		var parts []string
		for i := range v.List().Len() {
			parts = append(parts, scalarText(fd, v.List().Get(i), m))
		}
		return strings.Join(parts, ",")
	}
	if fd.Kind() == protoreflect.MessageKind && !m.Has(fd) {
		return ""
	}
	return scalarText(fd, v, m)
}

// scalarText is one value as a table cell.
func scalarText(fd protoreflect.FieldDescriptor, v protoreflect.Value, _ protoreflect.Message) string {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		return enumName(fd.Enum(), v.Enum())
	case protoreflect.BoolKind:
		if v.Bool() {
			return "yes"
		}
		return "no"
	case protoreflect.BytesKind:
		return fmt.Sprintf("(%d bytes)", len(v.Bytes()))
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.MessageKind:
		switch msg := v.Message().Interface().(type) {
		case *timestamppb.Timestamp:
			return msg.AsTime().UTC().Format(time.RFC3339)
		case *durationpb.Duration:
			return msg.AsDuration().String()
		}
		m := v.Message()
		get := func(name protoreflect.Name) string { return m.Get(fd.Message().Fields().ByName(name)).String() }
		switch fd.Message().FullName() {
		case "carbide.network.v1.AddressRange":
			return get("start") + "-" + get("end")
		case "carbide.network.v1.Reservation":
			return get("mac") + "=" + get("address")
		}
		return compactJSON(m.Interface())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return v.String()
}

// redact clears every secret field of m and its nested messages, so no
// output format prints one.
func redact(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case isSecretField(fd) && (fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind):
			m.Clear(fd)
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			for i := range v.List().Len() {
				redact(v.List().Get(i).Message())
			}
		case fd.Kind() == protoreflect.MessageKind && fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					redact(mv.Message())
				}
				return true
			})
		case fd.Kind() == protoreflect.MessageKind:
			redact(v.Message())
		}
		return true
	})
}

// compactJSON is a message's JSON on one line, spaced the same way every
// time (protojson varies its spacing on purpose).
func compactJSON(m proto.Message) string {
	b, err := protojson.Marshal(m)
	if err != nil {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}
