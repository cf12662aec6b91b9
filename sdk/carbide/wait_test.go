package carbide

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

const (
	mID    = "00000000-0000-4000-8000-0000000000a1"
	otherM = "00000000-0000-4000-8000-0000000000a2"
	iID    = "00000000-0000-4000-8000-0000000000b1"
)

// script is one Watch stream of the fake: it sends events, may change
// the fake's resources, and returns how the stream ends.
type script func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error

// fakeWaitAPI serves GetMachine, ListMachineTransitions, GetInstance and
// a scripted Watch: the n-th Watch call plays scripts[n], and calls past
// the script stay open until the client goes away. When getErr is set,
// the n-th Get (from 0) fails with getErr(n) unless that is nil.
type fakeWaitAPI struct {
	machinev1connect.UnimplementedMachineServiceHandler
	instancev1connect.UnimplementedInstanceServiceHandler
	watchv1connect.UnimplementedWatchServiceHandler

	mu        sync.Mutex
	machines  map[string]*machinev1.Machine
	instances map[string]*instancev1.Instance
	reasons   []string // the transitions' reasons
	scripts   []script
	since     []int64 // since_revision of each Watch call
	gets      int
	getErr    func(n int) error
}

func (f *fakeWaitAPI) GetMachine(_ context.Context, req *connect.Request[machinev1.GetMachineRequest]) (*connect.Response[machinev1.GetMachineResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if f.getErr != nil {
		if err := f.getErr(f.gets - 1); err != nil {
			return nil, err
		}
	}
	m, ok := f.machines[req.Msg.GetId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("not found"))
	}
	return connect.NewResponse(&machinev1.GetMachineResponse{Machine: m}), nil
}

func (f *fakeWaitAPI) ListMachineTransitions(_ context.Context, req *connect.Request[machinev1.ListMachineTransitionsRequest]) (*connect.Response[machinev1.ListMachineTransitionsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &machinev1.ListMachineTransitionsResponse{}
	// One transition per page, to go through the pagination.
	i := 0
	if tok := req.Msg.GetPageToken(); tok != "" {
		fmt.Sscan(tok, &i)
	}
	if i < len(f.reasons) {
		resp.Transitions = []*machinev1.StateTransition{{Reason: f.reasons[i]}}
	}
	if i+1 < len(f.reasons) {
		resp.NextPageToken = fmt.Sprint(i + 1)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeWaitAPI) GetInstance(_ context.Context, req *connect.Request[instancev1.GetInstanceRequest]) (*connect.Response[instancev1.GetInstanceResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if f.getErr != nil {
		if err := f.getErr(f.gets - 1); err != nil {
			return nil, err
		}
	}
	inst, ok := f.instances[req.Msg.GetId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("not found"))
	}
	return connect.NewResponse(&instancev1.GetInstanceResponse{Instance: inst}), nil
}

func (f *fakeWaitAPI) Watch(ctx context.Context, req *connect.Request[watchv1.WatchRequest], stream *connect.ServerStream[watchv1.WatchResponse]) error {
	f.mu.Lock()
	n := len(f.since)
	f.since = append(f.since, req.Msg.GetSinceRevision())
	var s script
	if n < len(f.scripts) {
		s = f.scripts[n]
	}
	f.mu.Unlock()
	if s == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	var sendErr error
	err := s(f, func(ev *watchv1.WatchResponse) {
		if sendErr == nil {
			sendErr = stream.Send(ev)
		}
	})
	if sendErr != nil {
		return sendErr
	}
	return err
}

// calls returns the since_revision of each Watch call and the number of
// Get calls.
func (f *fakeWaitAPI) calls() ([]int64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.since...), f.gets
}

func startFakeWaitAPI(t *testing.T, f *fakeWaitAPI) *Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(machinev1connect.NewMachineServiceHandler(f))
	mux.Handle(instancev1connect.NewInstanceServiceHandler(f))
	mux.Handle(watchv1connect.NewWatchServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, WithProtocol(GRPC))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func machineEv(typ watchv1.EventType, rev int64, id string, st machinev1.MachineState, step string) *watchv1.WatchResponse {
	m := &machinev1.Machine{Id: id, State: st}
	if step != "" {
		m.Task = &machinev1.Task{Step: step, Done: 1 << 30, Total: 2 << 30, Message: "working"}
	}
	return &watchv1.WatchResponse{Revision: rev, Type: typ, Kind: watchv1.ResourceKind_RESOURCE_KIND_MACHINE, Id: id,
		Resource: &watchv1.WatchResponse_Machine{Machine: m}}
}

func instanceEv(typ watchv1.EventType, rev int64, st instancev1.InstanceState, reason string) *watchv1.WatchResponse {
	inst := &instancev1.Instance{Id: iID, State: st, FailureReason: reason, MachineId: mID}
	return &watchv1.WatchResponse{Revision: rev, Type: typ, Kind: watchv1.ResourceKind_RESOURCE_KIND_INSTANCE, Id: iID,
		Resource: &watchv1.WatchResponse_Instance{Instance: inst}}
}

func synced(rev int64) *watchv1.WatchResponse {
	return &watchv1.WatchResponse{Revision: rev, Type: watchv1.EventType_EVENT_TYPE_SYNCED}
}

const (
	existing = watchv1.EventType_EVENT_TYPE_EXISTING
	updated  = watchv1.EventType_EVENT_TYPE_UPDATED
	deleted  = watchv1.EventType_EVENT_TYPE_DELETED

	discovered  = machinev1.MachineState_MACHINE_STATE_DISCOVERED
	inventoried = machinev1.MachineState_MACHINE_STATE_INVENTORIED
	ready       = machinev1.MachineState_MACHINE_STATE_READY
	cleaning    = machinev1.MachineState_MACHINE_STATE_CLEANING
	mFailed     = machinev1.MachineState_MACHINE_STATE_FAILED
)

var unavailable = connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; resume with since_revision"))

// fastRetry makes a broken stream resume at once.
func fastRetry(o *waitOptions) { o.backoff = time.Millisecond }

func TestWaitMachineState(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		start     machinev1.MachineState // 0: the machine does not exist
		reasons   []string
		scripts   []script
		timeout   time.Duration
		wantState machinev1.MachineState
		wantErr   []string // substrings; none means success
		wantSince []int64
		wantSeen  []string // Progress.String of each progress call
	}{
		"already there": {
			start: ready, wantState: ready, wantSince: nil,
			wantSeen: []string{"machine " + mID + ": ready"},
		},
		"through a resumed stream": {
			start: discovered,
			scripts: []script{
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 10, otherM, ready, ""))
					send(machineEv(existing, 10, mID, discovered, ""))
					send(synced(10))
					send(machineEv(updated, 11, mID, inventoried, ""))
					send(machineEv(updated, 12, otherM, cleaning, "wipe"))
					return unavailable
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(updated, 13, mID, ready, ""))
					return nil
				},
			},
			wantState: ready, wantSince: []int64{0, 12},
			wantSeen: []string{
				"machine " + mID + ": discovered",
				"machine " + mID + ": inventoried",
				"machine " + mID + ": inventoried; watch: unavailable: server shutting down; resume with since_revision (retry 1 in 1ms)",
				"machine " + mID + ": ready",
			},
		},
		"cut during the snapshot starts over": {
			start: discovered,
			scripts: []script{
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 10, otherM, ready, ""))
					return nil // a cut connection
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 11, mID, ready, ""))
					send(synced(11))
					return nil
				},
			},
			wantState: ready, wantSince: []int64{0, 0},
		},
		"revision no longer kept": {
			start: discovered,
			scripts: []script{
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 5, mID, discovered, ""))
					send(synced(5))
					return nil
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					return connect.NewError(connect.CodeOutOfRange, errors.New("since_revision: changes up to 9 are no longer kept"))
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 20, mID, ready, ""))
					send(synced(20))
					return nil
				},
			},
			wantState: ready, wantSince: []int64{0, 5, 0},
		},
		"progress of a step": {
			start: machinev1.MachineState_MACHINE_STATE_PROVISIONING,
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(synced(3)) // not in the snapshot: read again
				send(machineEv(updated, 4, mID, cleaning, "wipe"))
				send(machineEv(updated, 5, mID, cleaning, "wipe")) // the same: no call
				send(machineEv(updated, 6, mID, ready, ""))
				return nil
			}},
			wantState: ready, wantSince: []int64{0},
			wantSeen: []string{
				"machine " + mID + ": provisioning",
				"machine " + mID + ": cleaning, wipe 1.0 GiB/2.0 GiB: working",
				"machine " + mID + ": ready",
			},
		},
		"failed": {
			start:   discovered,
			reasons: []string{"discovered by DHCP", "hardware check: no disk"},
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(synced(1))
				send(machineEv(updated, 2, mID, mFailed, ""))
				return nil
			}},
			wantErr:   []string{"wait for machine " + mID + " to be ready or maintenance", "is failed: hardware check: no disk"},
			wantSince: []int64{0},
		},
		"deleted": {
			start: discovered,
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(synced(1))
				send(machineEv(deleted, 2, mID, discovered, ""))
				return nil
			}},
			wantErr:   []string{"is deleted"},
			wantSince: []int64{0},
		},
		"unknown machine": {wantErr: []string{"not_found"}},
		"permission denied ends the wait": {
			start: discovered,
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				return connect.NewError(connect.CodePermissionDenied, errors.New("role viewer may not call Watch"))
			}},
			wantErr: []string{"permission_denied"}, wantSince: []int64{0},
		},
		"deadline": {
			start: discovered, timeout: 300 * time.Millisecond,
			wantErr: []string{"context deadline exceeded", "last seen: discovered"}, wantSince: []int64{0},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := &fakeWaitAPI{machines: map[string]*machinev1.Machine{}, reasons: tc.reasons, scripts: tc.scripts}
			if tc.start != 0 {
				f.machines[mID] = &machinev1.Machine{Id: mID, State: tc.start}
			}
			c := startFakeWaitAPI(t, f)
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 20 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var seen []string
			opts := []WaitOption{fastRetry}
			if tc.wantSeen != nil {
				opts = append(opts, WithProgress(func(p Progress) { seen = append(seen, p.String()) }))
			}
			m, err := c.WaitMachineState(ctx, mID, []machinev1.MachineState{ready, machinev1.MachineState_MACHINE_STATE_MAINTENANCE}, opts...)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("WaitMachineState = %v, want an error", m)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			} else {
				if err != nil {
					t.Fatalf("WaitMachineState: %v", err)
				}
				if m.GetState() != tc.wantState || m.GetId() != mID {
					t.Errorf("WaitMachineState returned %v, want machine %s in %v", m, mID, tc.wantState)
				}
			}
			since, _ := f.calls()
			if tc.wantSince != nil || len(since) > 0 {
				if diff := cmp.Diff(tc.wantSince, since); diff != "" {
					t.Errorf("Watch calls' since_revision (-want +got):\n%s", diff)
				}
			}
			if tc.wantSeen != nil {
				if diff := cmp.Diff(tc.wantSeen, seen); diff != "" {
					t.Errorf("progress (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestWaitMachineStateFailedWanted(t *testing.T) {
	t.Parallel()
	f := &fakeWaitAPI{machines: map[string]*machinev1.Machine{mID: {Id: mID, State: mFailed}}}
	c := startFakeWaitAPI(t, f)
	m, err := c.WaitMachineState(context.Background(), mID, []machinev1.MachineState{mFailed})
	if err != nil || m.GetState() != mFailed {
		t.Errorf("waiting for FAILED on a failed machine: %v, %v", m, err)
	}
	if _, err := c.WaitMachineState(context.Background(), mID, nil); err == nil {
		t.Error("WaitMachineState with no state: no error")
	}
}

func TestWaitInstance(t *testing.T) {
	t.Parallel()
	const (
		provisioning = instancev1.InstanceState_INSTANCE_STATE_PROVISIONING
		running      = instancev1.InstanceState_INSTANCE_STATE_RUNNING
		releasing    = instancev1.InstanceState_INSTANCE_STATE_RELEASING
		released     = instancev1.InstanceState_INSTANCE_STATE_RELEASED
		failed       = instancev1.InstanceState_INSTANCE_STATE_FAILED
	)
	type wait func(ctx context.Context, c *Client) error
	running_ := func(ctx context.Context, c *Client) error {
		inst, err := c.WaitInstanceRunning(ctx, iID, fastRetry)
		if err == nil && inst.GetState() != running {
			return fmt.Errorf("WaitInstanceRunning returned an instance in %v", inst.GetState())
		}
		return err
	}
	deleted_ := func(opts ...WaitOption) wait {
		return func(ctx context.Context, c *Client) error {
			return c.WaitInstanceDeleted(ctx, iID, append(opts, fastRetry)...)
		}
	}
	for name, tc := range map[string]struct {
		start    instancev1.InstanceState // 0: no such instance
		machine  machinev1.MachineState   // 0: no such machine
		scripts  []script
		wait     wait
		wantErr  []string
		wantErrs bool
	}{
		"running": {
			start: provisioning, wait: running_,
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(instanceEv(existing, 7, provisioning, ""))
				send(synced(7))
				send(instanceEv(updated, 8, running, ""))
				return nil
			}},
		},
		"fails fast": {
			start: provisioning, wait: running_,
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(synced(7))
				send(instanceEv(updated, 8, failed, "write_image: sha256 mismatch"))
				return nil
			}},
			wantErr: []string{"wait for instance " + iID + " to run", "instance " + iID + " is failed: write_image: sha256 mismatch"},
		},
		"released while waiting to run": {
			start: releasing, wait: running_,
			wantErr: []string{"is releasing"},
		},
		"released, missing from the snapshot": {
			start: releasing, wait: deleted_(),
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				// Released meanwhile, so the snapshot leaves it out.
				f.mu.Lock()
				f.instances[iID] = &instancev1.Instance{Id: iID, State: released}
				f.mu.Unlock()
				send(synced(7))
				return nil
			}},
		},
		"released by an update": {
			start: releasing, wait: deleted_(),
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(instanceEv(existing, 7, releasing, ""))
				send(synced(7))
				send(instanceEv(updated, 9, released, ""))
				return nil
			}},
		},
		"gone": {wait: deleted_()},
		"not deleted": {
			start: running, wait: deleted_(),
			wantErr: []string{"is running: it was not deleted"},
		},
		"release failed": {
			start: releasing, wait: deleted_(),
			scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
				send(instanceEv(existing, 7, releasing, ""))
				send(synced(7))
				send(instanceEv(updated, 9, failed, "wipe: timed out"))
				return nil
			}},
			wantErr: []string{"is failed: wipe: timed out"},
		},
		"cleaned": {
			start: releasing, machine: cleaning, wait: deleted_(WaitCleaned()),
			scripts: []script{
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(instanceEv(existing, 7, releasing, ""))
					send(synced(7))
					send(instanceEv(updated, 9, released, ""))
					return nil
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(machineEv(existing, 9, mID, cleaning, "wipe"))
					send(synced(9))
					send(machineEv(updated, 10, mID, ready, ""))
					return nil
				},
			},
		},
		"cleaning failed": {
			start: releasing, machine: cleaning, wait: deleted_(WaitCleaned()),
			scripts: []script{
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(synced(7))
					send(instanceEv(updated, 9, released, ""))
					return nil
				},
				func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
					send(synced(9))
					send(machineEv(updated, 10, mID, mFailed, ""))
					return nil
				},
			},
			wantErr: []string{"to be cleaned", "machine " + mID + " is failed"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := &fakeWaitAPI{machines: map[string]*machinev1.Machine{}, instances: map[string]*instancev1.Instance{}, scripts: tc.scripts}
			if tc.start != 0 {
				f.instances[iID] = &instancev1.Instance{Id: iID, State: tc.start, MachineId: mID}
			}
			if tc.machine != 0 {
				f.machines[mID] = &machinev1.Machine{Id: mID, State: tc.machine}
			}
			c := startFakeWaitAPI(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := tc.wait(ctx, c)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("wait: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("wait: no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var se *StateError
			if !errors.As(err, &se) {
				t.Errorf("error %v is not a *StateError", err)
			}
		})
	}
}

func TestBytesString(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB", 5 << 40: "5.0 TiB"} {
		if got := bytesString(n); got != want {
			t.Errorf("bytesString(%d) = %q, want %q", n, got, want)
		}
	}
}
