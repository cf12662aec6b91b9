package apiserver

import (
	"context"
	"log/slog"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/dhcp"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// pruner deletes, hourly and in batches, what outlived its retention:
// change-log entries, audit records, and the machines DHCP enrolled that
// never reported an inventory (dhcp.PruneDiscovered).
type pruner struct {
	st                                 *store.Store
	changeAge, auditAge, discoveredAge time.Duration
	batch                              int
	pruned                             *prometheus.CounterVec
	logger                             *slog.Logger
}

// machineBatch is how many machines one transaction removes at most: each
// takes its interfaces, history and leases with it.
const machineBatch = 500

func newPruner(st *store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) *pruner {
	p := &pruner{
		st: st, changeAge: cfg.ChangeRetention, auditAge: cfg.AuditRetention, discoveredAge: cfg.DiscoveredRetention,
		batch: cfg.PruneBatch, logger: logger,
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carbide_pruned_rows_total",
			Help: "Rows deleted because they outlived their retention, by log (changes, audit, discovered_machines).",
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

// once prunes what is older than its retention at now; a retention of 0
// keeps everything.
func (p *pruner) once(ctx context.Context, now time.Time) {
	for _, table := range []struct {
		name  string
		prune func(context.Context, time.Time, int) (int, error)
		age   time.Duration
		batch int
	}{
		{"changes", p.st.PruneChanges, p.changeAge, p.batch},
		{"audit", p.st.PruneAuditRecords, p.auditAge, p.batch},
		{"discovered_machines", func(ctx context.Context, before time.Time, batch int) (int, error) {
			return dhcp.PruneDiscovered(ctx, p.st, before, batch)
		}, p.discoveredAge, machineBatch},
	} {
		if table.age == 0 {
			continue
		}
		n, err := table.prune(ctx, now.Add(-table.age), table.batch)
		p.pruned.WithLabelValues(table.name).Add(float64(n))
		switch {
		case err != nil && ctx.Err() == nil:
			p.logger.Warn("pruning failed", "log", table.name, "error", err)
		case n > 0:
			p.logger.Info("pruned", "log", table.name, "rows", n, "retention", table.age)
		}
	}
}
