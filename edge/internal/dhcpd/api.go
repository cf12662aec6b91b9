package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/prometheus/client_golang/prometheus"
)

// LeaseAPI is what the handler needs of the Carbide API: the four calls of
// carbide.dhcp.v1.DHCPService. Errors are Connect errors (see
// connect.CodeOf); NotFound means no segment matches the origin and
// ResourceExhausted that the segment's pool is full, that the API
// refused to enrol a new MAC (too many at once from its relay), or that
// the API was too busy to answer before the call's deadline.
type LeaseAPI interface {
	Lease(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error)
	Release(context.Context, *dhcpv1.ReleaseRequest) error
	Decline(context.Context, *dhcpv1.DeclineRequest) error
	Inform(context.Context, *dhcpv1.InformRequest) (*dhcpv1.InformResponse, error)
}

// SDKAPI is the LeaseAPI of a generated DHCPService client, such as the
// DHCP field of the SDK's carbide.Client.
//
// Its Lease combines the requests that arrive while its calls are in
// flight: at most calls (Config.APICalls) run at once, and each takes every
// request queued when it starts (up to maxLeaseBatch), as one
// DHCPService.LeaseBatch. A request arriving while fewer calls run goes
// out at once, alone, as DHCPService.Lease. So a quiet daemon adds no
// delay, and a busy one makes one call, one read and one transaction
// for many clients.
type SDKAPI struct {
	client    dhcpv1connect.DHCPServiceClient
	batchSize prometheus.Observer // observes the requests of each call; may be nil

	calls int // at most this many calls in flight

	mu      sync.Mutex
	queue   []*pendingLease
	running int // Lease or LeaseBatch calls in flight
}

// maxLeaseBatch is the most requests one LeaseBatch call carries.
const maxLeaseBatch = 128

// pendingLease is a Lease request waiting for its answer.
type pendingLease struct {
	ctx  context.Context
	req  *dhcpv1.LeaseRequest
	done chan struct{} // closed when resp or err is set
	resp *dhcpv1.LeaseResponse
	err  error
}

var _ LeaseAPI = (*SDKAPI)(nil)

// NewSDKAPI returns the LeaseAPI of c, which makes at most calls lease
// calls at once (at least 1); m, if not nil, gets the size of each lease
// call (carbide_dhcp_lease_batch_size).
func NewSDKAPI(c dhcpv1connect.DHCPServiceClient, m *Metrics, calls int) *SDKAPI {
	a := &SDKAPI{client: c, calls: max(calls, 1)}
	if m != nil {
		a.batchSize = m.leaseBatch
	}
	return a
}

// Lease asks DHCPService for a lease, alone or in a batch with the
// requests that arrived meanwhile.
func (a *SDKAPI) Lease(ctx context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
	p := &pendingLease{ctx: ctx, req: req, done: make(chan struct{})}
	a.mu.Lock()
	a.queue = append(a.queue, p)
	var batch []*pendingLease
	if a.running < a.calls {
		// Empty when every caller waiting gave up, p's too.
		if batch = a.take(); len(batch) > 0 {
			a.running++
		}
	}
	a.mu.Unlock()
	if len(batch) > 0 {
		go a.send(batch)
	}
	select {
	case <-p.done:
		return p.resp, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take removes up to maxLeaseBatch requests from the queue, skipping
// those whose caller gave up. a.mu is held.
func (a *SDKAPI) take() []*pendingLease {
	var batch []*pendingLease
	n := 0
	for _, p := range a.queue {
		n++
		if p.ctx.Err() == nil {
			batch = append(batch, p)
		}
		if len(batch) == maxLeaseBatch {
			break
		}
	}
	a.queue = a.queue[n:]
	return batch
}

// send makes the call for batch, then for what queued meanwhile, until
// the queue is empty.
func (a *SDKAPI) send(batch []*pendingLease) {
	for {
		a.call(batch)
		a.mu.Lock()
		batch = a.take()
		if len(batch) == 0 {
			a.running--
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
	}
}

// call asks for the leases of batch (not empty) in one call, and hands
// each request its answer.
func (a *SDKAPI) call(batch []*pendingLease) {
	if len(batch) == 1 {
		a.callOne(batch[0])
		return
	}
	// The call lasts as long as the most patient caller waits.
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if latest, ok := latestDeadline(batch); ok {
		ctx, cancel = context.WithDeadline(ctx, latest)
	}
	defer cancel()

	reqs := make([]*dhcpv1.LeaseRequest, len(batch))
	for i, p := range batch {
		reqs[i] = p.req
	}
	a.observe(len(batch))
	resp, err := a.client.LeaseBatch(ctx, connect.NewRequest(&dhcpv1.LeaseBatchRequest{Requests: reqs}))
	switch {
	case connect.CodeOf(err) == connect.CodeInvalidArgument:
		// One request the API rejects must not cost the others theirs.
		for _, p := range batch {
			a.callOne(p)
		}
		return
	case err == nil && len(resp.Msg.GetResults()) != len(batch):
		err = fmt.Errorf("LeaseBatch answered %d requests with %d results", len(batch), len(resp.Msg.GetResults()))
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.resp, p.err = leaseResult(resp.Msg.GetResults()[i])
		}
		close(p.done)
	}
}

// latestDeadline is the latest deadline of the callers of batch; ok is
// false when one of them has none.
func latestDeadline(batch []*pendingLease) (latest time.Time, ok bool) {
	for _, p := range batch {
		d, has := p.ctx.Deadline()
		if !has {
			return time.Time{}, false
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest, true
}

// callOne asks for one lease with DHCPService.Lease.
func (a *SDKAPI) callOne(p *pendingLease) {
	a.observe(1)
	resp, err := a.client.Lease(p.ctx, connect.NewRequest(p.req))
	if err == nil {
		p.resp = resp.Msg
	}
	p.err = err
	close(p.done)
}

// observe records that a call carries n lease requests.
func (a *SDKAPI) observe(n int) {
	if a.batchSize != nil {
		a.batchSize.Observe(float64(n))
	}
}

// leaseResult turns one result of LeaseBatch into what Lease would have
// returned.
func leaseResult(r *dhcpv1.LeaseResult) (*dhcpv1.LeaseResponse, error) {
	if l := r.GetLease(); l != nil {
		return l, nil
	}
	var code connect.Code
	if err := code.UnmarshalText([]byte(r.GetError().GetCode())); err != nil {
		code = connect.CodeUnknown
	}
	return nil, connect.NewError(code, errors.New(r.GetError().GetMessage()))
}

// Release calls DHCPService.Release.
func (a *SDKAPI) Release(ctx context.Context, req *dhcpv1.ReleaseRequest) error {
	_, err := a.client.Release(ctx, connect.NewRequest(req))
	return err
}

// Decline calls DHCPService.Decline.
func (a *SDKAPI) Decline(ctx context.Context, req *dhcpv1.DeclineRequest) error {
	_, err := a.client.Decline(ctx, connect.NewRequest(req))
	return err
}

// Inform calls DHCPService.Inform.
func (a *SDKAPI) Inform(ctx context.Context, req *dhcpv1.InformRequest) (*dhcpv1.InformResponse, error) {
	resp, err := a.client.Inform(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}
