package cli

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"connectrpc.com/connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// resolveID turns a name into the id of the resource of kind it names: a
// segment's name, a machine's or an instance's hostname, an image's
// name or name:version. An id is returned as it is. No match is a
// not-found error; several are an error that lists them.
func resolveID(ctx context.Context, c *carbide.Client, kind, ref string) (string, error) {
	if ref == "" || uuidRE.MatchString(ref) {
		return ref, nil
	}
	type candidate struct{ id, what string }
	var found []candidate
	switch kind {
	case "segment":
		for s, err := range c.AllSegments(ctx, &networkv1.ListSegmentsRequest{Name: ref}) {
			if err != nil {
				return "", fmt.Errorf("look up segment %q: %w", ref, err)
			}
			found = append(found, candidate{s.GetId(), s.GetName() + " " + s.GetPrefix()})
		}
	case "machine":
		for m, err := range c.AllMachines(ctx, &machinev1.ListMachinesRequest{Hostname: ref}) {
			if connect.CodeOf(err) == connect.CodeInvalidArgument && len(found) == 0 {
				// Not a valid hostname: no machine can have it.
				break
			}
			if err != nil {
				return "", fmt.Errorf("look up machine %q: %w", ref, err)
			}
			found = append(found, candidate{m.GetId(), m.GetHostname() + " " + enumName(m.GetState().Descriptor(), m.GetState().Number())})
		}
	case "image":
		name, version, _ := strings.Cut(ref, ":")
		req := &instancev1.ListImagesRequest{Name: name, IncludeDeprecated: true}
		for {
			resp, err := c.Images.ListImages(ctx, connect.NewRequest(req))
			if err != nil {
				return "", fmt.Errorf("look up image %q: %w", ref, err)
			}
			for _, im := range resp.Msg.GetImages() {
				if im.GetName() == name && (version == "" || im.GetVersion() == version) {
					found = append(found, candidate{im.GetId(), im.GetName() + ":" + im.GetVersion()})
				}
			}
			if resp.Msg.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.Msg.GetNextPageToken()
		}
	case "instance":
		req := &instancev1.ListInstancesRequest{Hostname: ref}
		var released []candidate
		for {
			resp, err := c.Instances.ListInstances(ctx, connect.NewRequest(req))
			if connect.CodeOf(err) == connect.CodeInvalidArgument && req.PageToken == "" {
				// Not a valid hostname: no instance can have it.
				break
			}
			if err != nil {
				return "", fmt.Errorf("look up instance %q: %w", ref, err)
			}
			for _, in := range resp.Msg.GetInstances() {
				cand := candidate{in.GetId(), in.GetHostname() + " " + enumName(in.GetState().Descriptor(), in.GetState().Number())}
				if in.GetState() == instancev1.InstanceState_INSTANCE_STATE_RELEASED {
					released = append(released, cand)
				} else {
					found = append(found, cand)
				}
			}
			if resp.Msg.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.Msg.GetNextPageToken()
		}
		// A hostname is reused after its instance is released: the live
		// instance wins, and a released one is taken when it is alone.
		if len(found) == 0 {
			found = released
		}
	default:
		return ref, nil
	}
	switch len(found) {
	case 0:
		return "", &exitError{ExitNotFound, fmt.Errorf("no %s is named %q (give an id or an existing name; carbide %s list shows them)", kind, ref, kind)}
	case 1:
		return found[0].id, nil
	}
	lines := make([]string, len(found))
	for i, f := range found {
		lines[i] = "  " + f.id + "  " + f.what
	}
	slices.Sort(lines)
	hint := "give the id"
	if kind == "image" {
		hint = "give name:version or the id"
	}
	return "", &exitError{ExitConflict, fmt.Errorf("%q names %d %ss; %s:\n%s", ref, len(found), kind, hint, strings.Join(lines, "\n"))}
}
