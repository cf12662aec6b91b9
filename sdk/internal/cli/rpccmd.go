package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// examples are the hand-written examples of the commands people type
// most; the others get examples made from their flags.
var examples = map[string]string{
	"machine create": `  carbide machine create --hostname node1 --mac 52:54:00:12:34:56 --label rack=r1
  carbide machine create -f machine.yaml`,
	"machine get": `  carbide machine get node1
  carbide machine get 5b2c6d1e-8f0a-4c1e-9d2b-3a4f5e6d7c8b -o yaml`,
	"machine list": `  carbide machine list
  carbide machine list --state ready --label rack=r1 -o wide
  carbide machine list --mac 52:54:00:12:34:56 -o json`,
	"machine update": `  # Only the fields given change; --label replaces all the labels
  carbide machine update node1 --label rack=r2 --label role=worker
  carbide machine update node1 --maintenance
  carbide machine update node1 --maintenance=false`,
	"machine delete":                  `  carbide machine delete node1`,
	"machine list-transitions":        `  carbide machine list-transitions node1`,
	"machine retry":                   `  carbide machine retry node1 --reason "replaced the failed DIMM"`,
	"machine list-identity-conflicts": `  carbide machine list-identity-conflicts -o yaml`,
	"machine resolve-identity-conflict": `  carbide machine resolve-identity-conflict node7 --resolution merge
  carbide machine resolve-identity-conflict node7 --resolution reject`,
	"segment create": `  carbide segment create --name rack1 --prefix 10.0.1.0/24 --gateway 10.0.1.1 \
    --dns-server 10.0.0.53 --domain rack1.example.net --range 10.0.1.100-10.0.1.200
  carbide segment create -f segment.yaml`,
	"segment get":      `  carbide segment get rack1`,
	"segment list":     `  carbide segment list -o wide`,
	"segment update":   `  carbide segment update rack1 --mtu 9000 --ntp-server 10.0.0.123`,
	"segment delete":   `  carbide segment delete rack1`,
	"address allocate": `  carbide address allocate --segment-id rack1 --mac 52:54:00:12:34:56`,
	"address release":  `  carbide address release --segment-id rack1 --mac 52:54:00:12:34:56`,
	"address list-leases": `  carbide address list-leases rack1
  carbide address list-leases rack1 --include-expired -o json`,
	"image create": `  carbide image create --name debian --version 12 --architecture amd64 \
    --firmware uefi --disk-format raw --disk-compression zstd \
    --disk-file-url http://pxe.example:8080/artifacts/debian-12.raw.zst \
    --disk-file-sha256 "$(sha256sum debian-12.raw.zst | cut -d' ' -f1)"
  carbide image create -f image.yaml`,
	"image get":       `  carbide image get debian:12`,
	"image list":      `  carbide image list --include-deprecated`,
	"image deprecate": `  carbide image deprecate debian:11 --deprecated`,
	"image delete":    `  carbide image delete debian:11`,
	"instance create": `  # On any Ready machine with the label rack=r1, waiting until it runs
  carbide instance create --hostname web1 --image-id debian:12 --selector-label rack=r1 \
    --ssh-authorized-key "$(cat ~/.ssh/id_ed25519.pub)" --user-data @cloud-init.yaml --wait
  # On one machine
  carbide instance create --hostname web2 --image-id debian:12 --machine-id node1`,
	"instance get":  `  carbide instance get web1 -o wide`,
	"instance list": `  carbide instance list --state running --label team=web`,
	"instance delete": `  carbide instance delete web1
  # Wait until its machine is wiped and the instance released
  carbide instance delete web1 --wipe-mode full --wait --timeout 2h`,
	"bmc set": `  # The password is read from standard input
  carbide bmc set node1 --address 10.0.9.21 --protocol ipmi --username admin --password - < bmc-password`,
	"bmc get":                     `  carbide bmc get node1`,
	"bmc list":                    `  carbide bmc list --power-state off`,
	"bmc delete":                  `  carbide bmc delete node1`,
	"bmc set-segment-credentials": `  carbide bmc set-segment-credentials rack1 --username admin --password - < bmc-password`,
	"bmc request-operation": `  carbide bmc request-operation node1 --type power-cycle
  carbide bmc request-operation node1 --type set-boot-device --boot-device pxe`,
	"bmc list-operations": `  carbide bmc list-operations --machine-id node1`,
	"audit list": `  carbide audit list --since 1h
  carbide audit list --principal spiffe://carbide.local/user/admin/alice --procedure /carbide.instance.v1.InstanceService/CreateInstance -o json`,
}

// newNounCommand groups the commands of one service.
func newNounCommand(a *app, sd protoreflect.ServiceDescriptor) *cobra.Command {
	noun := nounOf(sd)
	cmd := &cobra.Command{
		Use:     noun,
		Short:   nounShort[noun],
		Long:    fmt.Sprintf("%s.\n\n%s\n\nThe commands call %s of the Carbide API.", nounShort[noun], wrap(protoDocs[sd.FullName()]), sd.FullName()),
		GroupID: "api",
		Example: fmt.Sprintf("  carbide %s --help", noun),
		Args:    noSubcommand,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	switch noun {
	case "agent", "boot", "dhcp":
		cmd.GroupID = "daemon"
	}
	for i := range sd.Methods().Len() {
		md := sd.Methods().Get(i)
		if md.IsStreamingClient() || md.IsStreamingServer() {
			continue
		}
		cmd.AddCommand(newRPCCommand(a, newSpec(md)))
	}
	if noun == "machine" {
		cmd.AddCommand(newMachineWaitCommand(a))
	}
	return cmd
}

// noSubcommand rejects arguments of a command that only groups others.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// newRPCCommand is the command of one RPC.
func newRPCCommand(a *app, s *rpcSpec) *cobra.Command {
	var flags []*fieldFlag
	var fromFile string
	var wait bool
	var timeout time.Duration
	use := s.verb
	if arg := s.argName(); arg != "" {
		use += " [" + arg + "]"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: words(string(s.md.Name())),
		Args: func(cmd *cobra.Command, args []string) error {
			max := 0
			if s.positional != nil {
				max = 1
			}
			if len(args) > max {
				if max == 0 {
					return usageErrorf("%s takes no arguments, got %q (request fields are flags: see --help)", cmd.CommandPath(), args)
				}
				return usageErrorf("%s takes one argument, %s; got %d", cmd.CommandPath(), s.argName(), len(args))
			}
			return nil
		},
	}
	cmd.Long = cmd.Short + "."
	if doc := protoDocs[s.md.FullName()]; doc != "" {
		cmd.Long = wrap(doc)
	}
	cmd.Long += rpcLong(s)
	bindFields(cmd, s, s.md.Input(), nil, "", &flags)
	cmd.Flags().StringVarP(&fromFile, "from-file", "f", "", "read the whole request from a JSON or YAML file (- for standard input); flags given as well override its fields")
	waitable := waitKind(s)
	if waitable != "" {
		cmd.Flags().BoolVar(&wait, "wait", false, waitHelp[waitable])
		cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait, give up after this long (exit code 8)")
	}
	if ex, ok := examples[s.noun+" "+s.verb]; ok {
		cmd.Example = ex
	} else {
		cmd.Example = generatedExample(s, flags)
	}
	if s.positional != nil {
		kind := idKind(s.noun, s.positional[len(s.positional)-1])
		cmd.ValidArgsFunction = a.completeNames(kind)
	}
	for _, ff := range flags {
		if k := idKind(s.noun, ff.path[len(ff.path)-1]); k != "" {
			_ = cmd.RegisterFlagCompletionFunc(ff.name, a.completeNames(k))
		}
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		req := newMessage(s.md.Input())
		if fromFile != "" {
			if err := readBody(fromFile, a.stdin, req.Interface()); err != nil {
				return err
			}
		}
		var changed []*fieldFlag
		for _, ff := range flags {
			if ff.value.vals != nil { // given, under its name or its alias
				changed = append(changed, ff)
			}
		}
		for _, ff := range changed {
			if err := ff.apply(req, a.stdin); err != nil {
				return usageErrorf("--%s: %v", ff.name, err)
			}
		}
		if len(args) == 1 {
			for _, ff := range changed {
				if samePath(ff.path, s.positional) {
					return usageErrorf("give %s either as the argument or as --%s, not both", s.argName(), ff.name)
				}
			}
			setPath(req, s.positional, args[0])
		}
		if mask := req.Descriptor().Fields().ByName("update_mask"); mask != nil && s.body != nil && !req.Has(mask) {
			m := updateMask(s, changed)
			if len(m.Paths) == 0 {
				return usageErrorf("nothing to update: give the fields to change as flags (see --help), or --update-mask with -f")
			}
			req.Set(mask, protoreflect.ValueOfMessage(m.ProtoReflect()))
		}
		if err := resolveNames(ctx, a, s, req); err != nil {
			return err
		}
		resp, err := a.call(ctx, s, req.Interface(), cmd.Flags().Changed("page-token") || cmd.Flags().Changed("page-size"))
		if err != nil {
			return err
		}
		if wait {
			done, err := a.waitAfter(ctx, waitable, resp, timeout)
			if err != nil {
				return err
			}
			if done != nil {
				resp = done
			}
		}
		done := s.noun
		if len(args) == 1 {
			done += " " + args[0]
		}
		switch rest, del := strings.CutPrefix(s.verb, "delete"); {
		case del && rest == "":
			done += " deleted"
		case del:
			done += ": " + strings.ReplaceAll(strings.TrimPrefix(rest, "-"), "-", " ") + " deleted"
		default:
			done += ": " + strings.ReplaceAll(s.verb, "-", " ") + " done"
		}
		return (&printer{format: a.output, out: a.stdout, notes: a.stderr, done: done}).print(resp)
	}
	return cmd
}

func samePath(a, b []protoreflect.FieldDescriptor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// setPath sets the string field at path in m.
func setPath(m protoreflect.Message, path []protoreflect.FieldDescriptor, v string) {
	for _, fd := range path[:len(path)-1] {
		m = m.Mutable(fd).Message()
	}
	m.Set(path[len(path)-1], protoreflect.ValueOfString(v))
}

// rpcLong is the part of a command's long help that says what it calls.
func rpcLong(s *rpcSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calls %s/%s.", s.md.Parent().FullName(), s.md.Name())
	if s.positional != nil {
		fd := s.positional[len(s.positional)-1]
		fmt.Fprintf(&b, " The argument sets %s", strings.ReplaceAll(string(fd.Name()), "_", "-"))
		if k := idKind(s.noun, fd); k != "" {
			fmt.Fprintf(&b, "; it is an id or the %s's %s", k, map[string]string{"machine": "hostname", "instance": "hostname", "segment": "name", "image": "name or name:version"}[k])
		}
		b.WriteString(".")
	}
	if s.body != nil && s.md.Input().Fields().ByName("update_mask") != nil {
		b.WriteString(" Only the fields given as flags change (their names make the update mask); with -f, give --update-mask.")
	}
	if s.md.Input().Fields().ByName("page_token") != nil {
		b.WriteString(" Every page is fetched unless --page-size or --page-token is given.")
	}
	b.WriteString(" Flags ending in -id accept names as well as ids.")
	return "\n\n" + wrap(b.String())
}

// generatedExample makes an example from a command's argument and first
// flags.
func generatedExample(s *rpcSpec, flags []*fieldFlag) string {
	line := "  carbide " + s.noun + " " + s.verb
	if s.positional != nil {
		line += " " + map[bool]string{true: "node1", false: "<" + strings.ReplaceAll(string(s.positional[len(s.positional)-1].Name()), "_", "-") + ">"}[idKind(s.noun, s.positional[len(s.positional)-1]) == "machine"]
	}
	return line + "\n  carbide " + s.noun + " " + s.verb + " -f request.yaml -o json"
}

// call runs the RPC; for list RPCs without an explicit page it fetches
// every page and returns one response holding all the items.
func (a *app) call(ctx context.Context, s *rpcSpec, req proto.Message, onePage bool) (proto.Message, error) {
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	resp, err := invoke(ctx, c, s.md, req)
	if err != nil {
		return nil, err
	}
	in, out := s.md.Input(), s.md.Output()
	tokIn, tokOut := in.Fields().ByName("page_token"), out.Fields().ByName("next_page_token")
	if tokIn == nil || tokOut == nil {
		return resp, nil
	}
	var list protoreflect.FieldDescriptor
	for i := range out.Fields().Len() {
		if fd := out.Fields().Get(i); fd.IsList() {
			list = fd
		}
	}
	if onePage || list == nil {
		if tok := resp.ProtoReflect().Get(tokOut).String(); tok != "" {
			fmt.Fprintf(a.stderr, "more: --page-token %s\n", tok)
		}
		return resp, nil
	}
	all := resp.ProtoReflect()
	for tok := all.Get(tokOut).String(); tok != ""; {
		req.ProtoReflect().Set(tokIn, protoreflect.ValueOfString(tok))
		next, err := invoke(ctx, c, s.md, req)
		if err != nil {
			return nil, err
		}
		l := next.ProtoReflect().Get(list).List()
		dst := all.Mutable(list).List()
		for i := range l.Len() {
			dst.Append(l.Get(i))
		}
		tok = next.ProtoReflect().Get(tokOut).String()
	}
	all.Clear(tokOut)
	return resp, nil
}

// resolveNames replaces names by ids in the request's id fields (at the
// top level and in the request's resource).
func resolveNames(ctx context.Context, a *app, s *rpcSpec, req protoreflect.Message) error {
	c, err := a.getClient()
	if err != nil {
		return err
	}
	var walk func(m protoreflect.Message, depth int) error
	walk = func(m protoreflect.Message, depth int) error {
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && m.Has(fd) && depth < 2 {
				if err := walk(m.Mutable(fd).Message(), depth+1); err != nil {
					return err
				}
				continue
			}
			kind := idKind(s.noun, fd)
			if kind == "" || fd.IsList() || !m.Has(fd) {
				continue
			}
			if fd.Name() == "id" && depth > 0 && (s.body == nil || m.Descriptor() != s.body.Message()) {
				continue // the id of some nested message, not the resource's
			}
			id, err := resolveID(ctx, c, kind, m.Get(fd).String())
			if err != nil {
				return err
			}
			m.Set(fd, protoreflect.ValueOfString(id))
		}
		return nil
	}
	return walk(req, 0)
}

// wrap breaks text into lines of at most 76 characters.
func wrap(text string) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(text) {
		if i > 0 && n+1+len(w) > 76 {
			b.WriteByte('\n')
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
