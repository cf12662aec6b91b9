package dnsd

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

// watchKinds are the resources names come from.
var watchKinds = []watchv1.ResourceKind{
	watchv1.ResourceKind_RESOURCE_KIND_MACHINE,
	watchv1.ResourceKind_RESOURCE_KIND_SEGMENT,
	watchv1.ResourceKind_RESOURCE_KIND_INSTANCE,
}

// Backoff between attempts to reopen a broken Watch stream.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// watcher keeps the store current from one Watch stream: a snapshot, then
// changes. When the stream breaks the store keeps answering as it is, and
// the watcher reopens the stream from the last revision it applied; only
// if the API no longer keeps the changes since then (OUT_OF_RANGE) does
// it take a new snapshot, which the store journals as a diff.
type watcher struct {
	client  watchv1connect.WatchServiceClient
	store   *Store
	logger  *slog.Logger
	metrics *Metrics
	// downSince is when the stream was last known current (UnixNano), 0
	// while it is connected and synced: the stream lag.
	downSince atomic.Int64
	// outage is set from a break of the stream (after the first sync)
	// until it is current again, so that each outage is logged once.
	outage atomic.Bool
}

func newWatcher(client watchv1connect.WatchServiceClient, store *Store, metrics *Metrics, logger *slog.Logger) *watcher {
	w := &watcher{client: client, store: store, logger: logger, metrics: metrics}
	w.downSince.Store(time.Now().UnixNano())
	return w
}

// current notes that the stream is current again after a break.
func (w *watcher) current(rev int64) {
	w.downSince.Store(0)
	if w.outage.CompareAndSwap(true, false) {
		w.logger.Info("watch stream resumed", "revision", rev)
	}
}

// lag is how long the stream has not been current.
func (w *watcher) lag() float64 {
	if t := w.downSince.Load(); t != 0 {
		return time.Since(time.Unix(0, t)).Seconds()
	}
	return 0
}

// run watches until ctx ends.
func (w *watcher) run(ctx context.Context) error {
	var since int64
	backoff := minBackoff
	for {
		progressed, err := w.stream(ctx, &since)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			backoff = minBackoff
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			w.logger.Warn("the API no longer keeps the changes since the last one applied; taking a new snapshot", "revision", since, "error", err)
			since = 0
		}
		if w.downSince.Load() == 0 {
			w.downSince.Store(time.Now().UnixNano())
		}
		if w.store.Synced() && w.outage.CompareAndSwap(false, true) {
			w.metrics.streamBreaks.Inc()
			w.logger.Warn("watch stream broken; answering from memory and reconnecting", "revision", since, "error", err)
		} else if !w.store.Synced() {
			w.logger.Debug("watch stream failed before the first snapshot", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// stream runs one Watch call from *since, applying what it receives and
// moving *since along; progressed says whether anything was applied.
func (w *watcher) stream(ctx context.Context, since *int64) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.client.Watch(ctx, connect.NewRequest(&watchv1.WatchRequest{Kinds: watchKinds, SinceRevision: *since}))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	var snap *Snapshot
	var started time.Time
	if *since == 0 {
		snap, started = &Snapshot{}, time.Now()
	} else {
		// Replayed changes follow. The stream is current again once
		// one arrives, or once the call has stayed open for a second
		// (when nothing changed meanwhile there is nothing to send).
		from := *since
		t := time.AfterFunc(time.Second, func() { w.current(from) })
		defer t.Stop()
	}
	for stream.Receive() {
		ev := stream.Msg()
		progressed = true
		if snap == nil {
			w.current(ev.GetRevision())
		}
		switch ev.GetType() {
		case watchv1.EventType_EVENT_TYPE_EXISTING:
			if snap != nil {
				addToSnapshot(snap, ev)
			}
		case watchv1.EventType_EVENT_TYPE_SYNCED:
			if snap == nil {
				continue
			}
			snap.Revision = ev.GetRevision()
			w.store.Load(*snap)
			*since = ev.GetRevision()
			w.current(*since)
			w.logger.Info("sync done", "revision", snap.Revision, "segments", len(snap.Segments),
				"machines", len(snap.Machines), "instances", len(snap.Instances),
				"zones", w.store.zoneCount(), "records", w.store.recordCount(), "took", time.Since(started).Round(time.Millisecond))
			snap = nil
		case watchv1.EventType_EVENT_TYPE_CREATED, watchv1.EventType_EVENT_TYPE_UPDATED, watchv1.EventType_EVENT_TYPE_DELETED:
			w.applyChange(ev)
			*since = ev.GetRevision()
		}
	}
	err = stream.Err()
	if err == nil {
		err = errors.New("the API ended the stream")
	}
	return progressed, err
}

func addToSnapshot(snap *Snapshot, ev *watchv1.WatchResponse) {
	switch r := ev.GetResource().(type) {
	case *watchv1.WatchResponse_Segment:
		snap.Segments = append(snap.Segments, segmentOf(r.Segment))
	case *watchv1.WatchResponse_Machine:
		snap.Machines = append(snap.Machines, machineOf(r.Machine))
	case *watchv1.WatchResponse_Instance:
		snap.Instances = append(snap.Instances, instanceOf(r.Instance))
	}
}

// applyChange applies one change; a deletion is applied by kind and id,
// whether or not the event carries the resource as it was.
func (w *watcher) applyChange(ev *watchv1.WatchResponse) {
	rev, id := ev.GetRevision(), ev.GetId()
	del := ev.GetType() == watchv1.EventType_EVENT_TYPE_DELETED
	switch ev.GetKind() {
	case watchv1.ResourceKind_RESOURCE_KIND_SEGMENT:
		switch {
		case del:
			w.store.DeleteSegment(rev, id)
		case ev.GetSegment() != nil:
			w.store.PutSegment(rev, segmentOf(ev.GetSegment()))
		}
	case watchv1.ResourceKind_RESOURCE_KIND_MACHINE:
		switch {
		case del:
			w.store.DeleteMachine(rev, id)
		case ev.GetMachine() != nil:
			w.store.PutMachine(rev, machineOf(ev.GetMachine()))
		}
	case watchv1.ResourceKind_RESOURCE_KIND_INSTANCE:
		switch {
		case del:
			w.store.DeleteInstance(rev, id)
		case ev.GetInstance() != nil:
			w.store.PutInstance(rev, instanceOf(ev.GetInstance()))
		}
	default:
		// Another kind: nothing of it is served, but its revision
		// moves the resume point along.
		w.store.note(rev)
	}
}

func segmentOf(s *networkv1.Segment) *Segment {
	seg := &Segment{ID: s.GetId()}
	if d := s.GetDomain(); d != "" {
		seg.Domain = fqdn(d)
	}
	if p, err := netip.ParsePrefix(s.GetPrefix()); err == nil {
		seg.Prefix = p.Masked()
	}
	seg.Records = staticRecordsOf(s)
	return seg
}

func machineOf(m *machinev1.Machine) *Machine {
	out := &Machine{ID: m.GetId(), Hostname: m.GetHostname()}
	for _, ifc := range m.GetInterfaces() {
		a, err := netip.ParseAddr(ifc.GetAddress())
		if err != nil {
			continue
		}
		out.Interfaces = append(out.Interfaces, Interface{SegmentID: ifc.GetSegmentId(), Address: a.Unmap()})
	}
	return out
}

func instanceOf(in *instancev1.Instance) *Instance {
	out := &Instance{ID: in.GetId(), Hostname: in.GetHostname(),
		Active: in.GetState() != instancev1.InstanceState_INSTANCE_STATE_RELEASED}
	if a, err := netip.ParseAddr(in.GetAddress()); err == nil {
		out.Address = a.Unmap()
	}
	return out
}
