package dnsd

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
	"google.golang.org/protobuf/proto"
)

// fakeWatch is a WatchService holding resources and a change log: a
// watch from 0 gets the resources as of the newest revision and SYNCED,
// a watch from a revision gets the changes after it; both then get new
// changes as they are added. down makes calls fail (the API is down);
// breakStreams ends the open ones.
type fakeWatch struct {
	watchv1connect.UnimplementedWatchServiceHandler

	mu        sync.Mutex
	rev       int64
	resources map[string]*watchv1.WatchResponse // id -> last event
	log       []*watchv1.WatchResponse
	changed   chan struct{} // closed and replaced on every change
	broken    chan struct{} // closed and replaced by breakStreams
	down      bool
	since     []int64 // since_revision of every call
}

func newFakeWatch() *fakeWatch {
	return &fakeWatch{rev: 1, resources: map[string]*watchv1.WatchResponse{}, changed: make(chan struct{}), broken: make(chan struct{})}
}

func (f *fakeWatch) put(typ watchv1.EventType, ev *watchv1.WatchResponse) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	ev.Revision, ev.Type = f.rev, typ
	if typ == watchv1.EventType_EVENT_TYPE_DELETED {
		delete(f.resources, ev.Id)
	} else {
		f.resources[ev.Id] = ev
	}
	f.log = append(f.log, ev)
	close(f.changed)
	f.changed = make(chan struct{})
	return f.rev
}

func (f *fakeWatch) segment(s *networkv1.Segment) int64 {
	return f.put(watchv1.EventType_EVENT_TYPE_UPDATED, &watchv1.WatchResponse{Kind: watchv1.ResourceKind_RESOURCE_KIND_SEGMENT, Id: s.Id, Resource: &watchv1.WatchResponse_Segment{Segment: s}})
}

func (f *fakeWatch) machine(m *machinev1.Machine) int64 {
	return f.put(watchv1.EventType_EVENT_TYPE_UPDATED, &watchv1.WatchResponse{Kind: watchv1.ResourceKind_RESOURCE_KIND_MACHINE, Id: m.Id, Resource: &watchv1.WatchResponse_Machine{Machine: m}})
}

func (f *fakeWatch) instance(in *instancev1.Instance) int64 {
	return f.put(watchv1.EventType_EVENT_TYPE_UPDATED, &watchv1.WatchResponse{Kind: watchv1.ResourceKind_RESOURCE_KIND_INSTANCE, Id: in.Id, Resource: &watchv1.WatchResponse_Instance{Instance: in}})
}

func (f *fakeWatch) deleteMachine(id string) int64 {
	return f.put(watchv1.EventType_EVENT_TYPE_DELETED, &watchv1.WatchResponse{Kind: watchv1.ResourceKind_RESOURCE_KIND_MACHINE, Id: id})
}

func (f *fakeWatch) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	close(f.broken)
	f.broken = make(chan struct{})
}

func (f *fakeWatch) calls() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.since...)
}

func (f *fakeWatch) Watch(ctx context.Context, req *connect.Request[watchv1.WatchRequest], stream *connect.ServerStream[watchv1.WatchResponse]) error {
	f.mu.Lock()
	since := req.Msg.GetSinceRevision()
	f.since = append(f.since, since)
	if f.down {
		f.mu.Unlock()
		return connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	var out []*watchv1.WatchResponse
	if since == 0 {
		for _, ev := range f.resources {
			c := proto.CloneOf(ev)
			c.Revision, c.Type = f.rev, watchv1.EventType_EVENT_TYPE_EXISTING
			out = append(out, c)
		}
		out = append(out, &watchv1.WatchResponse{Revision: f.rev, Type: watchv1.EventType_EVENT_TYPE_SYNCED})
		since = f.rev
	}
	f.mu.Unlock()
	for _, ev := range out {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	for {
		f.mu.Lock()
		var pending []*watchv1.WatchResponse
		for _, ev := range f.log {
			if ev.Revision > since {
				pending = append(pending, ev)
			}
		}
		changed, broken := f.changed, f.broken
		f.mu.Unlock()
		for _, ev := range pending {
			if err := stream.Send(ev); err != nil {
				return err
			}
			since = ev.Revision
		}
		select {
		case <-ctx.Done():
			return nil
		case <-broken:
			return connect.NewError(connect.CodeUnavailable, errors.New("stream broken"))
		case <-changed:
		}
	}
}

// serveFake serves f over HTTP and returns its URL.
func serveFake(t *testing.T, f *fakeWatch) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(watchv1connect.NewWatchServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
