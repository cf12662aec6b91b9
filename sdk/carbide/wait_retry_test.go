package carbide

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
)

// failFirst makes the first n Gets fail with err.
func failFirst(n int, err error) func(int) error {
	return func(i int) error {
		if i < n {
			return err
		}
		return nil
	}
}

func TestWaitRetriesGet(t *testing.T) {
	t.Parallel()
	denied := connect.NewError(connect.CodePermissionDenied, errors.New("role dhcp may not call GetMachine"))
	for name, tc := range map[string]struct {
		exists   bool
		getErr   func(int) error
		timeout  time.Duration
		wantErr  []string // substrings; none means success
		wantCode connect.Code
		wantGets int // 0: not checked
		wantTry  []int
	}{
		"unavailable twice, then found": {
			exists: true, getErr: failFirst(2, unavailable), wantGets: 2 + 1, wantTry: []int{1, 2},
		},
		"not found fails at once": {
			getErr: failFirst(0, nil), wantGets: 1,
			wantErr: []string{"not_found"}, wantCode: connect.CodeNotFound,
		},
		"permission denied fails at once": {
			exists: true, getErr: failFirst(1, denied), wantGets: 1,
			wantErr: []string{"permission_denied: role dhcp may not call GetMachine"}, wantCode: connect.CodePermissionDenied,
		},
		"unavailable, then not found": {
			getErr: failFirst(1, unavailable), wantGets: 2, wantTry: []int{1},
			wantErr: []string{"not_found"}, wantCode: connect.CodeNotFound,
		},
		"deadline during the backoff names the last error": {
			exists: true, getErr: failFirst(1<<30, unavailable), timeout: 300 * time.Millisecond,
			wantErr: []string{
				"wait for machine " + mID + " to be ready: context deadline exceeded (last error: get machine: unavailable: server shutting down",
			},
			wantCode: connect.CodeUnavailable,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := &fakeWaitAPI{machines: map[string]*machinev1.Machine{}, getErr: tc.getErr}
			if tc.exists {
				f.machines[mID] = &machinev1.Machine{Id: mID, State: ready}
			}
			c := startFakeWaitAPI(t, f)
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 20 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var tries []int
			progress := WithProgress(func(p Progress) {
				if p.Err == nil {
					return
				}
				if p.Kind != "machine" || p.ID != mID || p.State != "" || p.RetryIn <= 0 || !IsRetryable(p.Err) {
					t.Errorf("retry progress %+v: want kind machine, id %s, no state, a delay and a retryable error", p, mID)
				}
				if s, want := p.String(), fmt.Sprintf("machine %s: get machine: unavailable: server shutting down", mID); !strings.HasPrefix(s, want) ||
					!strings.Contains(s, fmt.Sprintf("(retry %d in ", p.Retry)) {
					t.Errorf("retry progress reads %q, want %q... (retry %d in ...)", s, want, p.Retry)
				}
				tries = append(tries, p.Retry)
			})
			m, err := c.WaitMachineState(ctx, mID, []machinev1.MachineState{ready}, fastRetry, progress)
			if len(tc.wantErr) == 0 {
				if err != nil || m.GetState() != ready {
					t.Fatalf("WaitMachineState = %v, %v; want the machine, ready", m, err)
				}
			} else {
				if err == nil {
					t.Fatalf("WaitMachineState = %v, want an error", m)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if got := connect.CodeOf(err); got != tc.wantCode {
					t.Errorf("code of %q = %v, want %v", err, got, tc.wantCode)
				}
			}
			if tc.timeout != 0 {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %q is not context.DeadlineExceeded", err)
				}
				if len(tries) < 3 {
					t.Errorf("%d retries before the deadline, want several", len(tries))
				}
				for i, n := range tries {
					if n != i+1 {
						t.Errorf("retry %d reported as retry %d", i+1, n)
					}
				}
			} else if fmt.Sprint(tries) != fmt.Sprint(tc.wantTry) {
				t.Errorf("retries reported: %v, want %v", tries, tc.wantTry)
			}
			if _, gets := f.calls(); tc.wantGets != 0 && gets != tc.wantGets {
				t.Errorf("%d Get calls, want %d", gets, tc.wantGets)
			}
		})
	}
}

func TestWaitInstanceRetriesGet(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Running: the first Get fails, the second finds it provisioning, the
	// watch then says it runs.
	f := &fakeWaitAPI{
		instances: map[string]*instancev1.Instance{iID: {Id: iID, State: instancev1.InstanceState_INSTANCE_STATE_PROVISIONING}},
		getErr:    failFirst(1, connect.NewError(connect.CodeUnavailable, fmt.Errorf("dial: %w", syscall.ECONNREFUSED))),
		scripts: []script{func(f *fakeWaitAPI, send func(*watchv1.WatchResponse)) error {
			send(instanceEv(existing, 3, instancev1.InstanceState_INSTANCE_STATE_PROVISIONING, ""))
			send(synced(3))
			send(instanceEv(updated, 4, instancev1.InstanceState_INSTANCE_STATE_RUNNING, ""))
			return nil
		}},
	}
	var seen []string
	inst, err := startFakeWaitAPI(t, f).WaitInstanceRunning(ctx, iID, fastRetry, WithProgress(func(p Progress) { seen = append(seen, p.String()) }))
	if err != nil || inst.GetState() != instancev1.InstanceState_INSTANCE_STATE_RUNNING {
		t.Fatalf("WaitInstanceRunning = %v, %v", inst, err)
	}
	want := []string{
		"instance " + iID + ": get instance: unavailable: dial: connection refused (retry 1 in 1ms)",
		"instance " + iID + ": provisioning",
		"instance " + iID + ": running",
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("progress:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}

	// Deleted: gone once the API answers again.
	f = &fakeWaitAPI{instances: map[string]*instancev1.Instance{}, getErr: failFirst(2, unavailable)}
	if err := startFakeWaitAPI(t, f).WaitInstanceDeleted(ctx, iID, fastRetry); err != nil {
		t.Fatalf("WaitInstanceDeleted of a gone instance behind an unavailable API: %v", err)
	}
	if _, gets := f.calls(); gets != 3 {
		t.Errorf("%d Get calls, want 3", gets)
	}
}

// TestWaitConnectionRefused waits on an address where nothing listens: the
// waiter retries the refused connection until its deadline, and says so.
func TestWaitConnectionRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := New("http://"+addr, WithProtocol(GRPC))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var retries int
	_, err = c.WaitMachineState(ctx, mID, []machinev1.MachineState{ready}, fastRetry, WithProgress(func(p Progress) {
		if p.Err != nil {
			retries++
		}
	}))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) ||
		!strings.Contains(err.Error(), "last error: get machine: unavailable") {
		t.Errorf("WaitMachineState on a closed port = %v, want the deadline naming the refused connection", err)
	}
	if retries < 2 {
		t.Errorf("%d retries reported, want several", retries)
	}
}

func TestTransient(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		unavailable: true,
		connect.NewError(connect.CodeAborted, errors.New("conflict")):                                     true,
		connect.NewError(connect.CodeUnknown, &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}): true,
		connect.NewError(connect.CodeInternal, fmt.Errorf("read body: %w", io.ErrUnexpectedEOF)):          true,
		fmt.Errorf("dial: %w", syscall.ECONNREFUSED):                                                      true,
		connect.NewError(connect.CodeNotFound, errors.New("no such machine")):                             false,
		connect.NewError(connect.CodePermissionDenied, errors.New("no")):                                  false,
		connect.NewError(connect.CodeInvalidArgument, errors.New("id: value must be a valid UUID")):       false,
		connect.NewError(connect.CodeUnauthenticated, errors.New("no certificate")):                       false,
		errors.New("something else"): false,
	} {
		if got := transient(err); got != want {
			t.Errorf("transient(%v) = %v, want %v", err, got, want)
		}
	}
}
