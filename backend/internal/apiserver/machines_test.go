package apiserver

import (
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/machine"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

const rackLabel = "topology.carbide.dev/rack"

func TestMachineBadRequests(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		existing := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:01"}})
		unknown := uuid.NewString()
		invalid := connect.CodeInvalidArgument

		create := func(req *machinev1.CreateMachineRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Machines.CreateMachine(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		get := func(id string) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
				return err
			}
		}
		update := func(m *machinev1.Machine, paths ...string) func(t *testing.T) error {
			return func(t *testing.T) error {
				req := &machinev1.UpdateMachineRequest{Machine: m}
				if paths != nil {
					req.UpdateMask = mask(paths...)
				}
				_, err := e.Machines.UpdateMachine(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		del := func(id string) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: id}))
				return err
			}
		}
		list := func(req *machinev1.ListMachinesRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		transitions := func(req *machinev1.ListMachineTransitionsRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Machines.ListMachineTransitions(t.Context(), connect.NewRequest(req))
				return err
			}
		}

		runBadRequests(t, map[string]badRequest{
			"create with short MAC":        {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:01"}}), invalid, "macs[0]"},
			"create with dashed MAC":       {create(&machinev1.CreateMachineRequest{Macs: []string{"02-00-00-00-00-09"}}), invalid, "macs[0]"},
			"create with non-hex MAC":      {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:09", "zz:00:00:00:00:00"}}), invalid, "macs[1]"},
			"create without MACs":          {create(&machinev1.CreateMachineRequest{Hostname: "node"}), invalid, "macs"},
			"create with a MAC twice":      {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:0a", "02:00:00:00:00:0A"}}), invalid, "macs"},
			"create with bad hostname":     {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:09"}, Hostname: "Node_1"}), invalid, "hostname"},
			"create with bad label key":    {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:09"}, Labels: map[string]string{"-x": "1"}}), invalid, "labels"},
			"create with another's MAC":    {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:09", "02:00:00:00:00:01"}}), connect.CodeAlreadyExists, "02:00:00:00:00:01"},
			"create with another's MAC uc": {create(&machinev1.CreateMachineRequest{Macs: []string{"02:00:00:00:00:01"}}), connect.CodeAlreadyExists, "macs"},

			"get unknown id":   {get(unknown), connect.CodeNotFound, unknown},
			"get malformed id": {get("machine-1"), invalid, "id"},
			"get empty id":     {get(""), invalid, "id"},

			"update unknown id":     {update(&machinev1.Machine{Id: unknown, Hostname: "x"}, "hostname"), connect.CodeNotFound, unknown},
			"update malformed id":   {update(&machinev1.Machine{Id: "m1", Hostname: "x"}, "hostname"), invalid, "machine.id"},
			"update without mask":   {update(&machinev1.Machine{Id: existing.GetId(), Hostname: "x"}), invalid, "update_mask"},
			"update empty mask":     {update(&machinev1.Machine{Id: existing.GetId(), Hostname: "x"}, []string{}...), invalid, "update_mask"},
			"update state":          {update(&machinev1.Machine{Id: existing.GetId()}, "state"), invalid, "update_mask"},
			"update interfaces":     {update(&machinev1.Machine{Id: existing.GetId()}, "hostname", "interfaces"), invalid, "update_mask"},
			"update without mach.":  {update(nil, "hostname"), invalid, "machine"},
			"update bad hostname":   {update(&machinev1.Machine{Id: existing.GetId(), Hostname: "Node_1"}, "hostname"), invalid, "machine.hostname"},
			"update bad label key":  {update(&machinev1.Machine{Id: existing.GetId(), Labels: map[string]string{"a b": "c"}}, "labels"), invalid, "machine.labels"},
			"update long label val": {update(&machinev1.Machine{Id: existing.GetId(), Labels: map[string]string{"a": string(make([]byte, 256))}}, "labels"), invalid, "machine.labels"},

			"delete unknown id":   {del(unknown), connect.CodeNotFound, unknown},
			"delete malformed id": {del("x"), invalid, "id"},

			"list bad token":         {list(&machinev1.ListMachinesRequest{PageToken: "%%%"}), invalid, "page_token"},
			"list token not json":    {list(&machinev1.ListMachinesRequest{PageToken: "bm90IGpzb24"}), invalid, "page_token"},
			"list huge page":         {list(&machinev1.ListMachinesRequest{PageSize: 5000}), invalid, "page_size"},
			"list malformed MAC":     {list(&machinev1.ListMachinesRequest{Mac: "02:00:00:00:00"}), invalid, "mac"},
			"list bad hostname":      {list(&machinev1.ListMachinesRequest{Hostname: "Node_1"}), invalid, "hostname"},
			"list long hostname":     {list(&machinev1.ListMachinesRequest{Hostname: strings.Repeat("a", 64)}), invalid, "hostname"},
			"list unspecified state": {list(&machinev1.ListMachinesRequest{States: []machinev1.MachineState{machinev1.MachineState_MACHINE_STATE_UNSPECIFIED}}), invalid, "states"},
			"list undefined state":   {list(&machinev1.ListMachinesRequest{States: []machinev1.MachineState{42}}), invalid, "states"},
			"list bad label key":     {list(&machinev1.ListMachinesRequest{Labels: map[string]string{"a'b": "c"}}), invalid, "labels"},

			"transitions unknown id":   {transitions(&machinev1.ListMachineTransitionsRequest{MachineId: unknown}), connect.CodeNotFound, unknown},
			"transitions malformed id": {transitions(&machinev1.ListMachineTransitionsRequest{MachineId: "x"}), invalid, "machine_id"},
			"transitions bad token":    {transitions(&machinev1.ListMachineTransitionsRequest{MachineId: existing.GetId(), PageToken: "x"}), invalid, "page_token"},
		})
	})
}

func TestCreateMachine(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		got := createMachine(t, e, &machinev1.CreateMachineRequest{
			Hostname: "node-1",
			Macs:     []string{"02:AB:CD:EF:00:02", "02:ab:cd:ef:00:01"},
			Labels:   map[string]string{rackLabel: "r1"},
		})
		want := &machinev1.Machine{
			Hostname: "node-1",
			State:    machinev1.MachineState_MACHINE_STATE_DISCOVERED,
			Labels:   map[string]string{rackLabel: "r1"},
			Interfaces: []*machinev1.Interface{
				{Mac: "02:ab:cd:ef:00:01"},
				{Mac: "02:ab:cd:ef:00:02"},
			},
		}
		if diff := cmp.Diff(want, got, protocmp.Transform(),
			protocmp.IgnoreFields(&machinev1.Machine{}, "id", "create_time", "update_time", "state_time")); diff != "" {
			t.Errorf("created machine (-want +got):\n%s", diff)
		}
		if _, err := uuid.Parse(got.GetId()); err != nil {
			t.Errorf("id %q is not a UUID", got.GetId())
		}
		for name, ts := range map[string]interface{ IsValid() bool }{
			"create_time": got.GetCreateTime(), "update_time": got.GetUpdateTime(), "state_time": got.GetStateTime(),
		} {
			if !ts.IsValid() {
				t.Errorf("%s is not set", name)
			}
		}
		if diff := cmp.Diff(got, getMachine(t, e, got.GetId()), protocmp.Transform()); diff != "" {
			t.Errorf("GetMachine differs from CreateMachine (-create +get):\n%s", diff)
		}

		// The MAC is taken, whatever its case; the failed create leaves nothing behind.
		_, err := e.Machines.CreateMachine(t.Context(), connect.NewRequest(&machinev1.CreateMachineRequest{
			Macs: []string{"02:ab:cd:ef:00:03", "02:AB:CD:EF:00:01"},
		}))
		wantError(t, err, connect.CodeAlreadyExists, "02:ab:cd:ef:00:01")
		resp, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{}))
		if err != nil {
			t.Fatalf("ListMachines: %v", err)
		}
		if n := len(resp.Msg.GetMachines()); n != 1 {
			t.Errorf("%d machines after a rejected create, want 1", n)
		}
		createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{"02:ab:cd:ef:00:03"}})
	})
}

func TestListMachines(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		mk := func(hostname string, labels map[string]string, macs ...string) string {
			return createMachine(t, e, &machinev1.CreateMachineRequest{Hostname: hostname, Macs: macs, Labels: labels}).GetId()
		}
		// Machines on no segment with a domain may share a host name.
		m1 := mk("web", map[string]string{rackLabel: "r1", "role": "compute"}, testMAC(1))
		m2 := mk("db", map[string]string{rackLabel: "r1", "role": "storage"}, testMAC(0xab))
		m3 := mk("web", map[string]string{rackLabel: "r2", "role": "compute"}, testMAC(3))
		m4 := mk("", nil, testMAC(4))
		m5 := mk("web-2", map[string]string{"role": "compute", "a.b": "x.y"}, testMAC(5), testMAC(6))
		setMaintenance(t, e, m3, true)
		discovered, maintenance := machinev1.MachineState_MACHINE_STATE_DISCOVERED, machinev1.MachineState_MACHINE_STATE_MAINTENANCE

		tests := map[string]struct {
			req  *machinev1.ListMachinesRequest
			want []string
		}{
			"all":                 {&machinev1.ListMachinesRequest{}, []string{m1, m2, m3, m4, m5}},
			"discovered":          {&machinev1.ListMachinesRequest{States: []machinev1.MachineState{discovered}}, []string{m1, m2, m4, m5}},
			"maintenance":         {&machinev1.ListMachinesRequest{States: []machinev1.MachineState{maintenance}}, []string{m3}},
			"either state":        {&machinev1.ListMachinesRequest{States: []machinev1.MachineState{maintenance, discovered}}, []string{m1, m2, m3, m4, m5}},
			"ready":               {&machinev1.ListMachinesRequest{States: []machinev1.MachineState{machinev1.MachineState_MACHINE_STATE_READY}}, nil},
			"rack label":          {&machinev1.ListMachinesRequest{Labels: map[string]string{rackLabel: "r1"}}, []string{m1, m2}},
			"two labels":          {&machinev1.ListMachinesRequest{Labels: map[string]string{rackLabel: "r1", "role": "compute"}}, []string{m1}},
			"plain label":         {&machinev1.ListMachinesRequest{Labels: map[string]string{"role": "compute"}}, []string{m1, m3, m5}},
			"dotted label":        {&machinev1.ListMachinesRequest{Labels: map[string]string{"a.b": "x.y"}}, []string{m5}},
			"no such label value": {&machinev1.ListMachinesRequest{Labels: map[string]string{rackLabel: "r9"}}, nil},
			"label and state":     {&machinev1.ListMachinesRequest{Labels: map[string]string{"role": "compute"}, States: []machinev1.MachineState{discovered}}, []string{m1, m5}},
			"second MAC":          {&machinev1.ListMachinesRequest{Mac: testMAC(6)}, []string{m5}},
			"MAC upper case":      {&machinev1.ListMachinesRequest{Mac: "02:00:00:00:00:AB"}, []string{m2}},
			"unknown MAC":         {&machinev1.ListMachinesRequest{Mac: testMAC(99)}, nil},
			"MAC and wrong label": {&machinev1.ListMachinesRequest{Mac: testMAC(1), Labels: map[string]string{"role": "storage"}}, nil},
			"hostname":            {&machinev1.ListMachinesRequest{Hostname: "db"}, []string{m2}},
			"shared hostname":     {&machinev1.ListMachinesRequest{Hostname: "web"}, []string{m1, m3}},
			"hostname is exact":   {&machinev1.ListMachinesRequest{Hostname: "we"}, nil},
			"unknown hostname":    {&machinev1.ListMachinesRequest{Hostname: "nope"}, nil},
			"hostname and state":  {&machinev1.ListMachinesRequest{Hostname: "web", States: []machinev1.MachineState{discovered}}, []string{m1}},
			"hostname and label":  {&machinev1.ListMachinesRequest{Hostname: "web-2", Labels: map[string]string{"a.b": "x.y"}}, []string{m5}},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				want := slices.Sorted(slices.Values(tc.want)) // id order
				for _, size := range []int32{0, 1, 2} {
					got := listMachineIDs(t, e, tc.req, size)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("page_size %d: ids (-want +got):\n%s", size, diff)
					}
				}
			})
		}

		t.Run("token with other filter", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{
				PageSize: 1, Labels: map[string]string{"role": "compute"},
			}))
			if err != nil {
				t.Fatalf("ListMachines: %v", err)
			}
			_, err = e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{
				PageSize: 1, PageToken: resp.Msg.GetNextPageToken(), Labels: map[string]string{"role": "storage"},
			}))
			wantError(t, err, connect.CodeInvalidArgument, "page_token")
		})

		t.Run("token with other hostname", func(t *testing.T) {
			t.Parallel()
			resp, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{
				PageSize: 1, Hostname: "web",
			}))
			if err != nil {
				t.Fatalf("ListMachines: %v", err)
			}
			if resp.Msg.GetNextPageToken() == "" {
				t.Fatal("ListMachines(hostname web, page_size 1) returned no next_page_token")
			}
			_, err = e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{
				PageSize: 1, PageToken: resp.Msg.GetNextPageToken(), Hostname: "db",
			}))
			wantError(t, err, connect.CodeInvalidArgument, "page_token")
			_, err = e.Machines.ListMachines(t.Context(), connect.NewRequest(&machinev1.ListMachinesRequest{
				PageSize: 1, PageToken: resp.Msg.GetNextPageToken(),
			}))
			wantError(t, err, connect.CodeInvalidArgument, "page_token")
		})
	})
}

// listMachineIDs pages through ListMachines, size at a time.
func listMachineIDs(t *testing.T, e *env, req *machinev1.ListMachinesRequest, size int32) []string {
	t.Helper()
	req = proto.Clone(req).(*machinev1.ListMachinesRequest)
	req.PageSize = size
	var ids []string
	for range 100 {
		resp, err := e.Machines.ListMachines(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("ListMachines: %v", err)
		}
		if size > 0 && len(resp.Msg.GetMachines()) > int(size) {
			t.Fatalf("ListMachines returned %d machines, more than page_size %d", len(resp.Msg.GetMachines()), size)
		}
		for _, m := range resp.Msg.GetMachines() {
			ids = append(ids, m.GetId())
		}
		if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
			return ids
		}
	}
	t.Fatal("ListMachines never returned an empty next_page_token")
	return nil
}

// setMaintenance sets or clears a machine's maintenance hold.
func setMaintenance(t *testing.T, e *env, id string, on bool) *machinev1.Machine {
	t.Helper()
	resp, err := e.Machines.UpdateMachine(t.Context(), connect.NewRequest(&machinev1.UpdateMachineRequest{
		Machine: &machinev1.Machine{Id: id, Maintenance: on}, UpdateMask: mask("maintenance"),
	}))
	if err != nil {
		t.Fatalf("UpdateMachine(maintenance=%v): %v", on, err)
	}
	return resp.Msg.GetMachine()
}

// moveMachine walks a machine through lifecycle states the way the
// controllers do, in-process.
func moveMachine(t *testing.T, e *env, id string, states ...machine.State) {
	t.Helper()
	ctx := t.Context()
	err := e.Store.InTx(ctx, func(tx *ent.Tx) error {
		m, err := tx.Machine.Get(ctx, uuid.MustParse(id))
		if err != nil {
			return err
		}
		for _, s := range states {
			if m, err = lifecycle.Move(ctx, tx, m, s, "test", "controller"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("move machine to %v: %v", states, err)
	}
}

// transitionsOf lists a machine's whole state history, size at a time.
func transitionsOf(t *testing.T, e *env, id string, size int32) []*machinev1.StateTransition {
	t.Helper()
	var out []*machinev1.StateTransition
	token := ""
	for range 100 {
		resp, err := e.Machines.ListMachineTransitions(t.Context(), connect.NewRequest(&machinev1.ListMachineTransitionsRequest{
			MachineId: id, PageSize: size, PageToken: token,
		}))
		if err != nil {
			t.Fatalf("ListMachineTransitions: %v", err)
		}
		out = append(out, resp.Msg.GetTransitions()...)
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return out
		}
	}
	t.Fatal("ListMachineTransitions never returned an empty next_page_token")
	return nil
}

// hop is a transition without its time and reason.
type hop struct {
	From, To machinev1.MachineState
	Actor    string
}

func hops(ts []*machinev1.StateTransition) []hop {
	out := make([]hop, len(ts))
	for i, tr := range ts {
		out[i] = hop{tr.GetFromState(), tr.GetToState(), tr.GetActor()}
		if tr.GetReason() == "" || !tr.GetTime().IsValid() {
			// Every entry explains itself and is dated.
			out[i].Actor += " (no reason or time)"
		}
	}
	return out
}

func TestUpdateMachine(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in    *machinev1.Machine
		paths []string
		want  func(m *machinev1.Machine)
	}{
		"labels replaced": {
			&machinev1.Machine{Hostname: "ignored", Labels: map[string]string{rackLabel: "r2", "new": "1"}},
			[]string{"labels"},
			func(m *machinev1.Machine) { m.Labels = map[string]string{rackLabel: "r2", "new": "1"} },
		},
		"labels cleared": {
			&machinev1.Machine{}, []string{"labels"},
			func(m *machinev1.Machine) { m.Labels = nil },
		},
		"hostname": {
			&machinev1.Machine{Hostname: "node-2", Labels: map[string]string{"ignored": "yes"}},
			[]string{"hostname"},
			func(m *machinev1.Machine) { m.Hostname = "node-2" },
		},
		"hostname cleared": {
			&machinev1.Machine{}, []string{"hostname"},
			func(m *machinev1.Machine) { m.Hostname = "" },
		},
		"both": {
			&machinev1.Machine{Hostname: "node-3", Labels: map[string]string{"k": "v"}},
			[]string{"hostname", "labels"},
			func(m *machinev1.Machine) { m.Hostname, m.Labels = "node-3", map[string]string{"k": "v"} },
		},
		"output-only fields ignored": {
			&machinev1.Machine{Hostname: "node-4", State: machinev1.MachineState_MACHINE_STATE_READY,
				Interfaces: []*machinev1.Interface{{Mac: "02:ff:ff:ff:ff:ff"}}},
			[]string{"hostname"},
			func(m *machinev1.Machine) { m.Hostname = "node-4" },
		},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		i := 0
		for name, tc := range tests {
			i++
			mac := testMAC(i)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				created := createMachine(t, e, &machinev1.CreateMachineRequest{
					Hostname: "node-1", Macs: []string{mac}, Labels: map[string]string{rackLabel: "r1", "role": "compute"},
				})
				in := proto.Clone(tc.in).(*machinev1.Machine)
				in.Id = created.GetId()
				resp, err := e.Machines.UpdateMachine(t.Context(), connect.NewRequest(&machinev1.UpdateMachineRequest{
					Machine: in, UpdateMask: mask(tc.paths...),
				}))
				if err != nil {
					t.Fatalf("UpdateMachine: %v", err)
				}
				want := proto.Clone(created).(*machinev1.Machine)
				tc.want(want)
				got := resp.Msg.GetMachine()
				if diff := cmp.Diff(want, got, protocmp.Transform(),
					protocmp.IgnoreFields(&machinev1.Machine{}, "update_time")); diff != "" {
					t.Errorf("updated machine (-want +got):\n%s", diff)
				}
				if !got.GetUpdateTime().AsTime().After(created.GetUpdateTime().AsTime()) {
					t.Errorf("update_time %v not after %v", got.GetUpdateTime().AsTime(), created.GetUpdateTime().AsTime())
				}
				if diff := cmp.Diff(got, getMachine(t, e, created.GetId()), protocmp.Transform()); diff != "" {
					t.Errorf("GetMachine differs from UpdateMachine (-update +get):\n%s", diff)
				}
				if n := len(transitionsOf(t, e, created.GetId(), 0)); n != 1 {
					t.Errorf("%d transitions after an update that is not about state, want 1", n)
				}
			})
		}
	})
}

func TestMachineMaintenance(t *testing.T) {
	t.Parallel()
	const (
		unspecified = machinev1.MachineState_MACHINE_STATE_UNSPECIFIED
		discovered  = machinev1.MachineState_MACHINE_STATE_DISCOVERED
		inventoried = machinev1.MachineState_MACHINE_STATE_INVENTORIED
		ready       = machinev1.MachineState_MACHINE_STATE_READY
		failed      = machinev1.MachineState_MACHINE_STATE_FAILED
		maint       = machinev1.MachineState_MACHINE_STATE_MAINTENANCE
	)
	tests := map[string]struct {
		before []machine.State // moves made by a controller first
		want   machinev1.MachineState
		path   []hop // the history before maintenance, after creation
	}{
		"from discovered": {nil, discovered, nil},
		"from ready": {[]machine.State{machine.StateInventoried, machine.StateReady}, ready,
			[]hop{{discovered, inventoried, "controller"}, {inventoried, ready, "controller"}}},
		"from failed": {[]machine.State{machine.StateFailed}, failed,
			[]hop{{discovered, failed, "controller"}}},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		i := 0
		for name, tc := range tests {
			i++
			mac := testMAC(i)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{mac}})
				moveMachine(t, e, m.GetId(), tc.before...)

				held := setMaintenance(t, e, m.GetId(), true)
				if held.GetState() != maint || !held.GetMaintenance() {
					t.Errorf("after setting maintenance: state %s, maintenance %v; want MAINTENANCE, true", held.GetState(), held.GetMaintenance())
				}
				setMaintenance(t, e, m.GetId(), true) // again: nothing changes
				back := setMaintenance(t, e, m.GetId(), false)
				if back.GetState() != tc.want || back.GetMaintenance() {
					t.Errorf("after clearing maintenance: state %s, maintenance %v; want %s, false", back.GetState(), back.GetMaintenance(), tc.want)
				}
				if !back.GetStateTime().AsTime().After(held.GetStateTime().AsTime()) {
					t.Errorf("state_time %v not after %v", back.GetStateTime().AsTime(), held.GetStateTime().AsTime())
				}
				setMaintenance(t, e, m.GetId(), false) // again: nothing changes

				want := append([]hop{{unspecified, discovered, adminID}}, tc.path...)
				want = append(want, hop{tc.want, maint, adminID}, hop{maint, tc.want, adminID})
				for _, size := range []int32{0, 1, 2} {
					if diff := cmp.Diff(want, hops(transitionsOf(t, e, m.GetId(), size))); diff != "" {
						t.Errorf("page_size %d: transitions (-want +got):\n%s", size, diff)
					}
				}
			})
		}
	})
}

func TestUpdateMachineUnchanged(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		created := createMachine(t, e, &machinev1.CreateMachineRequest{
			Hostname: "node-1", Macs: []string{testMAC(1)}, Labels: map[string]string{rackLabel: "r1"},
		})
		changesBefore := e.Store.Client.Change.Query().CountX(t.Context())
		resp, err := e.Machines.UpdateMachine(t.Context(), connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine:    &machinev1.Machine{Id: created.GetId(), Hostname: "node-1", Labels: map[string]string{rackLabel: "r1"}},
			UpdateMask: mask("hostname", "labels", "maintenance"),
		}))
		if err != nil {
			t.Fatalf("UpdateMachine: %v", err)
		}
		if diff := cmp.Diff(created, resp.Msg.GetMachine(), protocmp.Transform()); diff != "" {
			t.Errorf("an update to the same values changed the machine (-before +after):\n%s", diff)
		}
		if n := len(transitionsOf(t, e, created.GetId(), 0)); n != 1 {
			t.Errorf("%d transitions, want only the creation", n)
		}
		if n := e.Store.Client.Change.Query().CountX(t.Context()); n != changesBefore {
			t.Errorf("the change log grew from %d to %d entries for an update that changed nothing", changesBefore, n)
		}
	})
}

func TestDeleteMachine(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		states []machine.State
		code   connect.Code // of the delete; 0 for success
	}{
		"discovered":   {nil, 0},
		"ready":        {[]machine.State{machine.StateInventoried, machine.StateReady}, 0},
		"failed":       {[]machine.State{machine.StateFailed}, 0},
		"maintenance":  {[]machine.State{machine.StateMaintenance}, 0},
		"provisioning": {[]machine.State{machine.StateInventoried, machine.StateReady, machine.StateProvisioning}, connect.CodeFailedPrecondition},
		"assigned":     {[]machine.State{machine.StateInventoried, machine.StateReady, machine.StateProvisioning, machine.StateAssigned}, connect.CodeFailedPrecondition},
		"cleaning":     {[]machine.State{machine.StateFailed, machine.StateCleaning}, connect.CodeFailedPrecondition},
	}
	forEachStore(t, func(t *testing.T, e *env) {
		i := 0
		for name, tc := range tests {
			i++
			mac := testMAC(i)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{mac}})
				moveMachine(t, e, m.GetId(), tc.states...)
				id := m.GetId()
				_, err := e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: id}))
				if tc.code != 0 {
					wantError(t, err, tc.code, string(tc.states[len(tc.states)-1]))
					getMachine(t, e, id) // still there
					return
				}
				if err != nil {
					t.Fatalf("DeleteMachine: %v", err)
				}
				_, err = e.Machines.GetMachine(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: id}))
				wantError(t, err, connect.CodeNotFound, id)
				_, err = e.Machines.DeleteMachine(t.Context(), connect.NewRequest(&machinev1.DeleteMachineRequest{Id: id}))
				wantError(t, err, connect.CodeNotFound, id)
				_, err = e.Machines.ListMachineTransitions(t.Context(), connect.NewRequest(&machinev1.ListMachineTransitionsRequest{MachineId: id}))
				wantError(t, err, connect.CodeNotFound, id)
				if ids := listMachineIDs(t, e, &machinev1.ListMachinesRequest{Mac: mac}, 0); len(ids) != 0 {
					t.Errorf("ListMachines by the deleted machine's MAC = %v, want none", ids)
				}
				// Its MAC is free again.
				again := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{mac}})
				if again.GetId() == id {
					t.Errorf("new machine got the deleted machine's id")
				}
			})
		}
	})
}
