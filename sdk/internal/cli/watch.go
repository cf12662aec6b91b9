package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// newWatchCommand streams changes.
func newWatchCommand(a *app) *cobra.Command {
	var kinds []string
	var since int64
	var existing bool
	kindDesc := watchv1.ResourceKind(0).Descriptor()
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream changes to machines, segments, BMCs, BMC operations and instances",
		Long: `Stream changes as they commit, one line per change: the revision, what
happened, the kind, the id and a summary (hostname and state of a machine,
name and prefix of a segment, ...). With -o json each change is one line of
JSON (a carbide.watch.v1.WatchResponse); with -o yaml, one YAML document.
It runs until interrupted.

Calls carbide.watch.v1.WatchService/Watch. Resume after an interruption
with --since and the last revision printed.`,
		Example: `  carbide watch
  carbide watch --kind machine --kind instance
  carbide watch --existing -o json | jq -c 'select(.machine.state == "MACHINE_STATE_FAILED")'
  carbide watch --since 1042`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &watchv1.WatchRequest{SinceRevision: since}
			for _, k := range kinds {
				n, err := parseEnum(kindDesc, k)
				if err != nil {
					return usageErrorf("--kind: %v", err)
				}
				req.Kinds = append(req.Kinds, watchv1.ResourceKind(n))
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			return a.watch(cmd.Context(), c, req, existing)
		},
	}
	cmd.Flags().StringSliceVar(&kinds, "kind", nil, "kinds to watch: "+strings.Join(enumChoices(kindDesc), ", ")+" (default all; repeat or separate with commas)")
	cmd.Flags().Int64Var(&since, "since", 0, "replay the changes after this revision first")
	cmd.Flags().BoolVar(&existing, "existing", false, "print every existing resource first (type existing)")
	_ = cmd.RegisterFlagCompletionFunc("kind", fixedCompletion(enumChoices(kindDesc)...))
	return cmd
}

// watch prints the changes of req's stream until ctx ends. A stream that
// breaks after it delivered a change is resumed after the last revision
// printed, so no change is lost or printed twice.
func (a *app) watch(ctx context.Context, c *carbide.Client, req *watchv1.WatchRequest, existing bool) error {
	var last int64 // revision of the last change printed
	connected := false
	for {
		stream, err := c.Watch.Watch(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		for stream.Receive() {
			connected = true
			ev := stream.Msg()
			switch ev.GetType() {
			case watchv1.EventType_EVENT_TYPE_SYNCED:
				last = ev.GetRevision()
				continue
			case watchv1.EventType_EVENT_TYPE_EXISTING:
				if !existing {
					continue
				}
			default:
				last = ev.GetRevision()
			}
			if err := a.printEvent(ev); err != nil {
				stream.Close()
				return err
			}
		}
		err = stream.Err()
		stream.Close()
		if ctx.Err() != nil {
			return nil // interrupted: the normal end
		}
		code := connect.CodeOf(err)
		if !connected || (err != nil && code != connect.CodeUnavailable && code != connect.CodeUnknown && code != connect.CodeInternal) {
			if err == nil {
				err = errors.New("the API ended the watch")
			}
			return err
		}
		fmt.Fprintf(a.stderr, "watch: the stream broke (%v); resuming after revision %d\n", err, last)
		req.SinceRevision, existing = last, false
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// printEvent writes one change.
func (a *app) printEvent(ev *watchv1.WatchResponse) error {
	redact(ev.ProtoReflect())
	switch a.output {
	case formatJSON:
		_, err := fmt.Fprintf(a.stdout, "%s\n", compactJSON(ev))
		return err
	case formatYAML:
		b, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "---\n%s", y)
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%d\t%s\t%s\t%s\t%s\n", ev.GetRevision(),
		enumName(ev.GetType().Descriptor(), ev.GetType().Number()),
		enumName(ev.GetKind().Descriptor(), ev.GetKind().Number()),
		ev.GetId(), summary(ev))
	return err
}

// summary describes the resource of a change in a few words.
func summary(ev *watchv1.WatchResponse) string {
	st := func(e protoreflect.Enum) string { return enumName(e.Descriptor(), e.Number()) }
	switch r := ev.GetResource().(type) {
	case *watchv1.WatchResponse_Machine:
		m := r.Machine
		s := fmt.Sprintf("%s %s", orDash(m.GetHostname()), st(m.GetState()))
		if t := m.GetTask(); t != nil {
			s += " " + taskText(t)
		}
		return s
	case *watchv1.WatchResponse_Segment:
		return r.Segment.GetName() + " " + r.Segment.GetPrefix()
	case *watchv1.WatchResponse_Bmc:
		return fmt.Sprintf("machine %s %s power %s", r.Bmc.GetMachineId(), r.Bmc.GetAddress(), orDash(st(r.Bmc.GetPowerState())))
	case *watchv1.WatchResponse_Operation:
		return fmt.Sprintf("machine %s %s %s", r.Operation.GetMachineId(), st(r.Operation.GetType()), st(r.Operation.GetState()))
	case *watchv1.WatchResponse_Instance:
		in := r.Instance
		s := fmt.Sprintf("%s %s", in.GetHostname(), st(in.GetState()))
		if t := in.GetTask(); t != nil {
			s += " " + taskText(t)
		}
		return s
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// taskText is a machine's current step: "write_image 45% (writing the
// image)".
func taskText(t *machinev1.Task) string {
	s := t.GetStep()
	if t.GetTotal() > 0 {
		s += fmt.Sprintf(" %d%%", t.GetDone()*100/t.GetTotal())
	}
	if t.GetMessage() != "" {
		s += " (" + t.GetMessage() + ")"
	}
	return s
}

// What --wait waits for.
const (
	waitInstanceRunning  = "instance-running"
	waitInstanceReleased = "instance-released"
)

var waitHelp = map[string]string{
	waitInstanceRunning:  "wait until the instance is running, showing its progress on standard error; a failed instance exits with code 9",
	waitInstanceReleased: "wait until the instance is released (its machine wiped), showing the progress on standard error",
}

// waitKind says what the command's --wait waits for, if it has one.
func waitKind(s *rpcSpec) string {
	switch s.md.FullName() {
	case "carbide.instance.v1.InstanceService.CreateInstance":
		return waitInstanceRunning
	case "carbide.instance.v1.InstanceService.DeleteInstance":
		return waitInstanceReleased
	}
	return ""
}

// waitAfter waits after a create or delete, and returns the resource as
// it ended.
func (a *app) waitAfter(ctx context.Context, kind string, resp proto.Message, timeout time.Duration) (proto.Message, error) {
	var in *instancev1.Instance
	switch r := resp.(type) {
	case *instancev1.CreateInstanceResponse:
		in = r.GetInstance()
	case *instancev1.DeleteInstanceResponse:
		in = r.GetInstance()
	}
	if in == nil {
		return nil, errors.New("the response holds no instance to wait for")
	}
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	name := in.GetHostname()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	progress := carbide.WithProgress(a.progressPrinter(name))
	switch kind {
	case waitInstanceRunning:
		running, err := c.WaitInstanceRunning(wctx, in.GetId(), progress)
		if err != nil {
			return nil, waitError(err, timeout, "instance "+name+" to be running")
		}
		return &instancev1.GetInstanceResponse{Instance: running}, nil
	default:
		if err := c.WaitInstanceDeleted(wctx, in.GetId(), progress, carbide.WaitCleaned()); err != nil {
			return nil, waitError(err, timeout, "instance "+name+" to be released")
		}
		got, err := c.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: in.GetId()}))
		if err != nil {
			return nil, err
		}
		return got.Msg, nil
	}
}

// progressPrinter prints each change a waiter sees on standard error,
// with the time since the wait started.
func (a *app) progressPrinter(name string) func(carbide.Progress) {
	start := time.Now()
	return func(p carbide.Progress) {
		line := p.State
		if p.Step != "" {
			line += ": " + taskText(&machinev1.Task{Step: p.Step, Done: p.Done, Total: p.Total, Message: p.Message})
		}
		if p.Err != nil {
			// A transient error the waiter retries: say so, not the
			// state again.
			line = fmt.Sprintf("%v (retry %d in %s)", p.Err, p.Retry, p.RetryIn.Round(time.Millisecond))
		}
		who := name
		if p.Kind == "machine" && p.Machine.GetHostname() != "" && p.Machine.GetHostname() != name {
			who = p.Machine.GetHostname() // the machine of an instance being released
		}
		fmt.Fprintf(a.stderr, "[%s] %s %s: %s\n", time.Since(start).Round(time.Second), p.Kind, who, line)
	}
}

// waitError gives a failed wait its exit code: the timeout, or the
// resource's failure.
func waitError(err error, timeout time.Duration, what string) error {
	var se *carbide.StateError
	switch {
	case errors.As(err, &se):
		return &exitError{ExitWaitFailed, err}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{ExitWaitTimeout, fmt.Errorf("gave up after %s waiting for %s: %w (wait longer with --timeout)", timeout, what, err)}
	}
	return err
}

// newMachineWaitCommand waits for a machine to reach a state.
func newMachineWaitCommand(a *app) *cobra.Command {
	var states []string
	var timeout time.Duration
	stateDesc := machinev1.MachineState(0).Descriptor()
	cmd := &cobra.Command{
		Use:   "wait <id|hostname>",
		Short: "Wait until a machine is in one of the given states",
		Long: `Wait until a machine is in one of the given states, showing each change of
its state and current step on standard error, then print the machine. A
machine that fails (and failed is not one of the states) exits with code 9;
--timeout exits with code 8. Follows carbide.watch.v1.WatchService/Watch.`,
		Example: `  carbide machine wait node1 --state ready --timeout 20m
  carbide machine wait node1 --state ready,maintenance -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("%s takes one argument, <id|hostname>; got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		ValidArgsFunction: a.completeNames("machine"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(states) == 0 {
				return usageErrorf("give the state to wait for with --state (one of %s)", strings.Join(enumChoices(stateDesc), ", "))
			}
			var want []machinev1.MachineState
			for _, s := range states {
				n, err := parseEnum(stateDesc, s)
				if err != nil {
					return usageErrorf("--state: %v", err)
				}
				want = append(want, machinev1.MachineState(n))
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			id, err := resolveID(cmd.Context(), c, "machine", args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			m, err := c.WaitMachineState(ctx, id, want, carbide.WithProgress(a.progressPrinter(args[0])))
			if err != nil {
				return waitError(err, timeout, "machine "+args[0])
			}
			return (&printer{format: a.output, out: a.stdout}).print(&machinev1.GetMachineResponse{Machine: m})
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "states to wait for: "+strings.Join(enumChoices(stateDesc), ", ")+" (repeat or separate with commas)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this long (exit code 8)")
	_ = cmd.RegisterFlagCompletionFunc("state", fixedCompletion(enumChoices(stateDesc)...))
	return cmd
}

// completeNames completes the names of resources of kind, for arguments
// and -id flags. It stays quiet when the API cannot be reached.
func (a *app) completeNames(kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if kind == "" {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := a.getClient()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
		defer cancel()
		var names []string
		switch kind {
		case "machine":
			for m, err := range c.AllMachines(ctx, &machinev1.ListMachinesRequest{}) {
				if err != nil {
					break
				}
				if m.GetHostname() != "" {
					names = append(names, m.GetHostname())
				}
			}
		case "segment":
			for s, err := range c.AllSegments(ctx, &networkv1.ListSegmentsRequest{}) {
				if err != nil {
					break
				}
				names = append(names, s.GetName())
			}
		case "image":
			if resp, err := c.Images.ListImages(ctx, connect.NewRequest(&instancev1.ListImagesRequest{PageSize: 1000})); err == nil {
				for _, im := range resp.Msg.GetImages() {
					names = append(names, im.GetName()+":"+im.GetVersion())
				}
			}
		case "instance":
			if resp, err := c.Instances.ListInstances(ctx, connect.NewRequest(&instancev1.ListInstancesRequest{PageSize: 1000})); err == nil {
				for _, in := range resp.Msg.GetInstances() {
					names = append(names, in.GetHostname())
				}
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
