package apiserver

import (
	"context"
	"log/slog"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultLeaseExpiryInterval is how often each replica notes lease
// expiries unless Config.LeaseExpiryInterval says otherwise.
const DefaultLeaseExpiryInterval = 5 * time.Second

// expiryBatch is how many expired leases one sweep transaction notes at
// most; a sweep runs transactions until none is left.
const expiryBatch = 500

// expirySweeper puts the machines whose leases expired in the change log
// (ipam.NoteExpiries), so that Watch shows them without the address
// within one interval of the expiry.
type expirySweeper struct {
	st       *store.Store
	interval time.Duration
	noted    prometheus.Counter
	logger   *slog.Logger
}

func newExpirySweeper(st *store.Store, interval time.Duration, reg prometheus.Registerer, logger *slog.Logger) *expirySweeper {
	s := &expirySweeper{
		st: st, interval: interval, logger: logger,
		noted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carbide_lease_expiries_noted_total",
			Help: "Lease expiries this replica recorded as a change of the machine owning the lease (--lease-expiry-interval).",
		}),
	}
	reg.MustRegister(s.noted)
	return s
}

func (s *expirySweeper) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once notes every expiry due now, a batch per transaction.
func (s *expirySweeper) once(ctx context.Context) {
	for ctx.Err() == nil {
		n, err := ipam.NoteExpiries(ctx, s.st, store.Now(), expiryBatch)
		s.noted.Add(float64(n))
		if err != nil {
			if ctx.Err() == nil && !store.IsConflict(err) {
				s.logger.Warn("noting lease expiries failed; trying again next interval", "error", err)
			}
			return
		}
		if n < expiryBatch {
			return
		}
	}
}
