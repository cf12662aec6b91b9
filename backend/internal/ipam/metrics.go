package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolMetrics reports how full every segment's dynamic pool is:
// carbide_ipam_pool_addresses, the addresses its ranges can lease (less
// the network, broadcast and gateway addresses and the reservations), and
// carbide_ipam_pool_leased, the unexpired dynamic leases on them. Run reads
// them from the database every interval; a scrape reports the last figures
// read and never waits for the database. Every replica reports the same
// figures. Addresses held back after a DHCPDECLINE and offers held in
// memory count as free; an expired lease counts as free too, since
// allocation reclaims it.
type PoolMetrics struct {
	svc       *Service
	logger    *slog.Logger
	timeout   time.Duration
	addresses *prometheus.Desc
	leased    *prometheus.Desc

	mu    sync.Mutex
	pools []PoolUse // nil until the first read succeeds
}

var _ prometheus.Collector = (*PoolMetrics)(nil)

// poolReadTimeout bounds one read of the pools.
const poolReadTimeout = 5 * time.Second

// NewPoolMetrics returns the collector of the pools of s's segments;
// logger gets the errors of the reads that failed.
func NewPoolMetrics(s *Service, logger *slog.Logger) *PoolMetrics {
	return &PoolMetrics{
		svc:     s,
		logger:  logger,
		timeout: poolReadTimeout,
		addresses: prometheus.NewDesc("carbide_ipam_pool_addresses",
			"Addresses of the segment's ranges that may be leased dynamically: the ranges less the network, broadcast and gateway addresses and the reservations.",
			[]string{"segment"}, nil),
		leased: prometheus.NewDesc("carbide_ipam_pool_leased",
			"Unexpired dynamic leases on the segment's leasable addresses (reserved leases not counted).",
			[]string{"segment"}, nil),
	}
}

// Run reads the pools at once and then every interval, until ctx is done.
// A read that fails is logged, and the figures of the last one that
// succeeded stay.
func (m *PoolMetrics) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.logger.Warn("reading the pools for their metrics failed; trying again next interval", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh reads every segment's pool now, for the next scrapes.
func (m *PoolMetrics) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	pools, err := m.svc.PoolUsage(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.pools = pools
	m.mu.Unlock()
	return nil
}

// Describe sends the descriptions of both metrics.
func (m *PoolMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.addresses
	ch <- m.leased
}

// Collect sends the figures of the last read.
func (m *PoolMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	pools := m.pools
	m.mu.Unlock()
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(m.addresses, prometheus.GaugeValue, float64(p.Addresses), p.Segment)
		ch <- prometheus.MustNewConstMetric(m.leased, prometheus.GaugeValue, float64(p.Leased), p.Segment)
	}
}

// PoolUse is how full one segment's dynamic pool is.
type PoolUse struct {
	// Segment is the segment's name.
	Segment string
	// Addresses is how many addresses the pool can lease.
	Addresses uint64
	// Leased is how many of them hold an unexpired dynamic lease.
	Leased uint64
}

// PoolUsage returns the use of every segment's pool, in segment name
// order. It costs one count over the index on (segment_id, address_num)
// per range.
func (s *Service) PoolUsage(ctx context.Context) ([]PoolUse, error) {
	ss, err := s.Segments(ctx)
	if err != nil {
		return nil, err
	}
	now := store.Now()
	out := make([]PoolUse, 0, len(ss.ByName))
	for _, seg := range ss.ByName {
		use := PoolUse{Segment: seg.Name, Addresses: seg.Pool.Leasables()}
		for _, r := range seg.Pool.Ranges {
			n, err := s.store.Client.Lease.Query().Where(
				lease.SegmentID(seg.ID),
				lease.Reserved(false),
				lease.ExpireTimeGT(now),
				lease.AddressNumGTE(store.AddressNum(r.Start)),
				lease.AddressNumLTE(store.AddressNum(r.End)),
			).Count(ctx)
			if err != nil {
				return nil, err
			}
			use.Leased += uint64(n)
		}
		out = append(out, use)
	}
	return out, nil
}

// Leasables is the number of addresses of the ranges that may be leased
// dynamically: Size less the network, broadcast and gateway addresses and
// the reservations that lie in a range. Declined addresses, held back for
// a while only, are not subtracted.
func (p *Pool) Leasables() uint64 {
	excluded := map[netip.Addr]bool{p.Prefix.Addr(): true, Broadcast(p.Prefix): true}
	if p.Gateway.IsValid() {
		excluded[p.Gateway] = true
	}
	for a := range p.Reserved {
		excluded[a] = true
	}
	n := p.Size()
	for a := range excluded {
		for _, r := range p.Ranges {
			if r.Contains(a) {
				n--
				break
			}
		}
	}
	return n
}
