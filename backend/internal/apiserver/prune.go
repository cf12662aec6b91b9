package apiserver

import (
	"context"
	"log/slog"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// pruner deletes change-log entries and audit records older than their
// retention, hourly, in batches.
type pruner struct {
	st                  *store.Store
	changeAge, auditAge time.Duration
	batch               int
	pruned              *prometheus.CounterVec
	logger              *slog.Logger
}

func newPruner(st *store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) *pruner {
	p := &pruner{
		st: st, changeAge: cfg.ChangeRetention, auditAge: cfg.AuditRetention, batch: cfg.PruneBatch, logger: logger,
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pruned_rows_total",
			Help: "Rows deleted because they outlived their retention, by log (changes, audit).",
		}, []string{"log"}),
	}
	reg.MustRegister(p.pruned)
	return p
}

func (p *pruner) run(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		p.once(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once prunes what is older than its retention at now.
func (p *pruner) once(ctx context.Context, now time.Time) {
	for _, table := range []struct {
		name  string
		prune func(context.Context, time.Time, int) (int, error)
		age   time.Duration
	}{
		{"changes", p.st.PruneChanges, p.changeAge},
		{"audit", p.st.PruneAuditRecords, p.auditAge},
	} {
		n, err := table.prune(ctx, now.Add(-table.age), p.batch)
		p.pruned.WithLabelValues(table.name).Add(float64(n))
		switch {
		case err != nil && ctx.Err() == nil:
			p.logger.Warn("pruning failed", "log", table.name, "error", err)
		case n > 0:
			p.logger.Info("pruned", "log", table.name, "rows", n)
		}
	}
}
