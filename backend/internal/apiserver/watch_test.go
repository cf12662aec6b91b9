package apiserver

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

const (
	existingEv = watchv1.EventType_EVENT_TYPE_EXISTING
	syncedEv   = watchv1.EventType_EVENT_TYPE_SYNCED
	createdEv  = watchv1.EventType_EVENT_TYPE_CREATED
	updatedEv  = watchv1.EventType_EVENT_TYPE_UPDATED
	deletedEv  = watchv1.EventType_EVENT_TYPE_DELETED

	noKind       = watchv1.ResourceKind_RESOURCE_KIND_UNSPECIFIED
	machineKind  = watchv1.ResourceKind_RESOURCE_KIND_MACHINE
	segmentKind  = watchv1.ResourceKind_RESOURCE_KIND_SEGMENT
	instanceKind = watchv1.ResourceKind_RESOURCE_KIND_INSTANCE
)

// watchTimeout bounds every watch, so that a stream that stops sending
// fails its test instead of hanging it.
const watchTimeout = 30 * time.Second

// watcher is an open Watch stream.
type watcher struct {
	stream *connect.ServerStreamForClient[watchv1.WatchResponse]
}

// openWatch starts a watch that ends with the test or after watchTimeout.
func openWatch(t *testing.T, e *env, req *watchv1.WatchRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), watchTimeout)
	stream, err := e.Watch.Watch(ctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		stream.Close()
	})
	return &watcher{stream: stream}
}

// next returns the next event, failing t if the stream ends or stalls.
func (w *watcher) next(t *testing.T) *watchv1.WatchResponse {
	t.Helper()
	if !w.stream.Receive() {
		t.Fatalf("watch ended before the next event: %v", w.stream.Err())
	}
	return w.stream.Msg()
}

// event is what a test expects of a WatchResponse; a nil resource is not
// compared.
type event struct {
	Type     watchv1.EventType
	Kind     watchv1.ResourceKind
	ID       string
	Resource proto.Message
}

// expect reads len(want) events and compares them with want; it returns
// them.
func (w *watcher) expect(t *testing.T, want ...event) []*watchv1.WatchResponse {
	t.Helper()
	var got []*watchv1.WatchResponse
	for i, ev := range want {
		msg := w.next(t)
		got = append(got, msg)
		if msg.GetType() != ev.Type || msg.GetKind() != ev.Kind || msg.GetId() != ev.ID {
			t.Fatalf("event %d = %s %s %q (revision %d), want %s %s %q",
				i, msg.GetType(), msg.GetKind(), msg.GetId(), msg.GetRevision(), ev.Type, ev.Kind, ev.ID)
		}
		if ev.Resource == nil {
			continue
		}
		var res proto.Message = msg.GetMachine()
		switch msg.GetKind() {
		case segmentKind:
			res = msg.GetSegment()
		case instanceKind:
			res = msg.GetInstance()
		}
		if diff := cmp.Diff(ev.Resource, res, protocmp.Transform()); diff != "" {
			t.Errorf("event %d (%s %s): resource (-want +got):\n%s", i, ev.Type, ev.Kind, diff)
		}
	}
	return got
}

// checkRevisions fails t unless the events of the snapshot share one
// revision and each later event has a higher one than the one before.
func checkRevisions(t *testing.T, evs []*watchv1.WatchResponse) {
	t.Helper()
	var last int64
	for i, ev := range evs {
		rev := ev.GetRevision()
		switch snapshot := ev.GetType() == existingEv || ev.GetType() == syncedEv; {
		case rev <= 0:
			t.Errorf("event %d (%s) has revision %d", i, ev.GetType(), rev)
		case snapshot && i > 0 && rev != last:
			t.Errorf("snapshot event %d (%s) has revision %d, the one before %d", i, ev.GetType(), rev, last)
		case !snapshot && rev <= last:
			t.Errorf("event %d (%s) has revision %d, not above %d", i, ev.GetType(), rev, last)
		}
		last = rev
	}
}

func TestWatchBadRequests(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		createSegment(t, e, rack1()) // the change log has one entry
		watchErr := func(req *watchv1.WatchRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				w := openWatch(t, e, req)
				if w.stream.Receive() {
					t.Fatalf("watch sent %v, want an error", w.stream.Msg())
				}
				return w.stream.Err()
			}
		}
		runBadRequests(t, map[string]badRequest{
			"unspecified kind":   {watchErr(&watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{noKind}}), connect.CodeInvalidArgument, "kinds"},
			"undefined kind":     {watchErr(&watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{7}}), connect.CodeInvalidArgument, "kinds"},
			"kind twice":         {watchErr(&watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{machineKind, machineKind}}), connect.CodeInvalidArgument, "kinds"},
			"negative revision":  {watchErr(&watchv1.WatchRequest{SinceRevision: -1}), connect.CodeInvalidArgument, "since_revision"},
			"revision far ahead": {watchErr(&watchv1.WatchRequest{SinceRevision: 1 << 40}), connect.CodeOutOfRange, "since_revision"},
		})
	})
}

func TestWatchSnapshotThenChanges(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		m1 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}, Labels: map[string]string{rackLabel: "r1"}})
		s1 := createSegment(t, e, rack1())
		m0 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(2)}, Hostname: "gone"})
		if _, err := e.Machines.DeleteMachine(ctx, connect.NewRequest(&machinev1.DeleteMachineRequest{Id: m0.GetId()})); err != nil {
			t.Fatalf("DeleteMachine: %v", err)
		}

		w := openWatch(t, e, &watchv1.WatchRequest{})
		evs := w.expect(t,
			event{existingEv, machineKind, m1.GetId(), m1},
			event{existingEv, segmentKind, s1.GetId(), s1},
			event{syncedEv, noKind, "", nil},
		)

		m2 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(3)}})
		up, err := e.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine: &machinev1.Machine{Id: m2.GetId(), Labels: map[string]string{rackLabel: "r2"}}, UpdateMask: mask("labels"),
		}))
		if err != nil {
			t.Fatalf("UpdateMachine: %v", err)
		}
		s2 := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24"})
		s2up, err := e.Segments.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
			Segment: &networkv1.Segment{Id: s2.GetId(), Mtu: 9000}, UpdateMask: mask("mtu"),
		}))
		if err != nil {
			t.Fatalf("UpdateSegment: %v", err)
		}
		if _, err := e.Machines.DeleteMachine(ctx, connect.NewRequest(&machinev1.DeleteMachineRequest{Id: m2.GetId()})); err != nil {
			t.Fatalf("DeleteMachine: %v", err)
		}
		if _, err := e.Segments.DeleteSegment(ctx, connect.NewRequest(&networkv1.DeleteSegmentRequest{Id: s2.GetId()})); err != nil {
			t.Fatalf("DeleteSegment: %v", err)
		}

		evs = append(evs, w.expect(t,
			event{createdEv, machineKind, m2.GetId(), m2},
			event{updatedEv, machineKind, m2.GetId(), up.Msg.GetMachine()},
			event{createdEv, segmentKind, s2.GetId(), s2},
			event{updatedEv, segmentKind, s2.GetId(), s2up.Msg.GetSegment()},
			event{deletedEv, machineKind, m2.GetId(), up.Msg.GetMachine()},
			event{deletedEv, segmentKind, s2.GetId(), s2up.Msg.GetSegment()},
		)...)
		checkRevisions(t, evs)
	})
}

func TestWatchKinds(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		kinds              []watchv1.ResourceKind
		machines, segments bool // which kinds the watch must see
	}{
		"machines": {[]watchv1.ResourceKind{machineKind}, true, false},
		"segments": {[]watchv1.ResourceKind{segmentKind}, false, true},
		"both":     {[]watchv1.ResourceKind{segmentKind, machineKind}, true, true},
		"all":      {nil, true, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, e *env) {
				ctx := t.Context()
				m1 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
				s1 := createSegment(t, e, rack1())
				w := openWatch(t, e, &watchv1.WatchRequest{Kinds: tc.kinds})
				var snapshot []event
				if tc.machines {
					snapshot = append(snapshot, event{existingEv, machineKind, m1.GetId(), m1})
				}
				if tc.segments {
					snapshot = append(snapshot, event{existingEv, segmentKind, s1.GetId(), s1})
				}
				evs := w.expect(t, append(snapshot, event{syncedEv, noKind, "", nil})...)

				// Changes of both kinds, interleaved: a filtered-out one
				// that slipped through would come before the next wanted one.
				s2 := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24"})
				m2 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(2)}})
				s2up, err := e.Segments.UpdateSegment(ctx, connect.NewRequest(&networkv1.UpdateSegmentRequest{
					Segment: &networkv1.Segment{Id: s2.GetId(), Domain: "rack2.example.net"}, UpdateMask: mask("domain"),
				}))
				if err != nil {
					t.Fatalf("UpdateSegment: %v", err)
				}
				m2up, err := e.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
					Machine: &machinev1.Machine{Id: m2.GetId(), Hostname: "node-2"}, UpdateMask: mask("hostname"),
				}))
				if err != nil {
					t.Fatalf("UpdateMachine: %v", err)
				}
				m3 := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(3)}})
				s3 := createSegment(t, e, &networkv1.Segment{Name: "rack3", Prefix: "10.3.0.0/24"})

				var want []event
				for _, ev := range []event{
					{createdEv, segmentKind, s2.GetId(), s2},
					{createdEv, machineKind, m2.GetId(), m2},
					{updatedEv, segmentKind, s2.GetId(), s2up.Msg.GetSegment()},
					{updatedEv, machineKind, m2.GetId(), m2up.Msg.GetMachine()},
					{createdEv, machineKind, m3.GetId(), m3},
					{createdEv, segmentKind, s3.GetId(), s3},
				} {
					if (ev.Kind == machineKind && tc.machines) || (ev.Kind == segmentKind && tc.segments) {
						want = append(want, ev)
					}
				}
				checkRevisions(t, append(evs, w.expect(t, want...)...))
			})
		})
	}
}

func TestWatchResume(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		s0 := createSegment(t, e, &networkv1.Segment{Name: "rack0", Prefix: "10.200.0.0/24"})
		w := openWatch(t, e, &watchv1.WatchRequest{})
		synced := w.expect(t, event{existingEv, segmentKind, s0.GetId(), s0}, event{syncedEv, noKind, "", nil})[1].GetRevision()

		a := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(1)}})
		evA := w.expect(t, event{createdEv, machineKind, a.GetId(), a})[0]
		w.stream.Close() // the client goes away

		// Changes while nobody watches.
		s := createSegment(t, e, rack1())
		up, err := e.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine: &machinev1.Machine{Id: a.GetId(), Hostname: "node-a"}, UpdateMask: mask("hostname"),
		}))
		if err != nil {
			t.Fatalf("UpdateMachine: %v", err)
		}
		b := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(2)}})

		later := []event{
			{createdEv, segmentKind, s.GetId(), s},
			{updatedEv, machineKind, a.GetId(), up.Msg.GetMachine()},
			{createdEv, machineKind, b.GetId(), b},
		}
		tests := map[string]struct {
			since int64
			kinds []watchv1.ResourceKind
			want  []event
			mac   string // of the machine created once the replay is done
		}{
			"after the last event seen": {evA.GetRevision(), nil, later, testMAC(11)},
			"after the snapshot":        {synced, nil, append([]event{{createdEv, machineKind, a.GetId(), a}}, later...), testMAC(12)},
			"machines after the last":   {evA.GetRevision(), []watchv1.ResourceKind{machineKind}, []event{later[1], later[2]}, testMAC(13)},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				rw := openWatch(t, e, &watchv1.WatchRequest{SinceRevision: tc.since, Kinds: tc.kinds})
				evs := rw.expect(t, tc.want...)
				checkRevisions(t, evs)
				if evs[0].GetRevision() <= tc.since {
					t.Errorf("first replayed event has revision %d, want above %d", evs[0].GetRevision(), tc.since)
				}
				// Then live changes follow the replay.
				c := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{tc.mac}})
				for {
					if ev := rw.next(t); ev.GetId() == c.GetId() {
						break
					}
				}
			})
		}
	})
}

// TestWatchPrunedChangeLog resumes a watch at the edge of the change log
// that is still kept.
func TestWatchPrunedChangeLog(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		var ids []string
		for i := range 5 {
			ids = append(ids, createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(i)}}).GetId())
		}
		revs, err := e.Store.Client.Change.Query().Order(ent.Asc(change.FieldID)).IDs(ctx)
		if err != nil || len(revs) != 5 {
			t.Fatalf("change log: %v, %v; want 5 entries", revs, err)
		}
		// Prune the first three entries: revisions revs[3] and revs[4] remain.
		if _, err := e.Store.Client.Change.Delete().Where(change.IDLTE(revs[2])).Exec(ctx); err != nil {
			t.Fatalf("prune: %v", err)
		}
		tests := map[string]struct {
			since      int64
			outOfRange bool
			want       []string // machines replayed
			mac        string   // of the machine created after the replay
		}{
			"before the pruned entries": {since: revs[0], outOfRange: true},
			"inside the pruned entries": {since: revs[1], outOfRange: true},
			"at the last pruned entry":  {since: revs[2], want: ids[3:], mac: testMAC(11)},
			"at the oldest kept":        {since: revs[3], want: ids[4:], mac: testMAC(12)},
			"at the newest":             {since: revs[4], mac: testMAC(13)},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w := openWatch(t, e, &watchv1.WatchRequest{SinceRevision: tc.since})
				if tc.outOfRange {
					if w.stream.Receive() {
						t.Fatalf("watch sent %v, want OUT_OF_RANGE", w.stream.Msg())
					}
					wantError(t, w.stream.Err(), connect.CodeOutOfRange, "since_revision")
					return
				}
				var want []event
				for _, id := range tc.want {
					want = append(want, event{createdEv, machineKind, id, nil})
				}
				w.expect(t, want...)
				// Nothing older was replayed: what follows are new changes
				// (other cases make some too), up to this case's own.
				m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{tc.mac}})
				for {
					ev := w.next(t)
					if ev.GetRevision() <= revs[4] {
						t.Errorf("replayed revision %d (%s %s) beyond the %d expected", ev.GetRevision(), ev.GetType(), ev.GetId(), len(tc.want))
					}
					if ev.GetId() == m.GetId() {
						break
					}
				}
			})
		}
	})
}

// TestWatchAddresses follows a machine's address through allocation,
// renewal and release.
func TestWatchAddresses(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg := createSegment(t, e, rack1())
		mac := testMAC(1)
		m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{mac}})
		w := openWatch(t, e, &watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{machineKind}})
		w.expect(t, event{existingEv, machineKind, m.GetId(), m}, event{syncedEv, noKind, "", nil})

		withAddress := func(a string) *machinev1.Machine {
			want := proto.Clone(m).(*machinev1.Machine)
			want.Interfaces[0].SegmentId = seg.GetId()
			want.Interfaces[0].Address = a
			return want
		}
		l := allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac})
		w.expect(t, event{updatedEv, machineKind, m.GetId(), withAddress(l.GetAddress())})

		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac}) // a renewal shows nowhere
		release(t, e, seg.GetId(), mac)
		w.expect(t, event{updatedEv, machineKind, m.GetId(), withAddress("")})

		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac})
		w.expect(t, event{updatedEv, machineKind, m.GetId(), withAddress(l.GetAddress())})
	})
}

// TestWatchDeadline lets a watch's deadline pass: the stream must end with
// DEADLINE_EXCEEDED, not look like a normal end.
func TestWatchDeadline(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		stream, err := e.Watch.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{}))
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		defer stream.Close()
		for stream.Receive() {
			if typ := stream.Msg().GetType(); typ != syncedEv {
				t.Errorf("unexpected %s event on an empty store", typ)
			}
		}
		if code := connect.CodeOf(stream.Err()); code != connect.CodeDeadlineExceeded {
			t.Errorf("stream ended with %v (code %s), want deadline_exceeded", stream.Err(), codeOf(stream.Err()))
		}
	})
}
