package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/segment"
	"github.com/google/uuid"
)

// Segment is a segment as allocation sees it: the stored row, its pool and
// its reservations. It is shared and must not be changed.
type Segment struct {
	*ent.Segment
	Pool *Pool
	// Reservations maps a MAC to its reserved address.
	Reservations map[string]netip.Addr
}

// LeaseDuration is the segment's lease time.
func (s *Segment) LeaseDuration() time.Duration {
	return time.Duration(s.LeaseSeconds) * time.Second
}

// Segments is every segment, read at one moment.
type Segments struct {
	// ByName lists the segments in name order.
	ByName []*Segment
	byID   map[uuid.UUID]*Segment
}

// Get returns the segment with the id, or nil.
func (ss *Segments) Get(id uuid.UUID) *Segment { return ss.byID[id] }

// segmentCache keeps every segment in memory: allocation reads its segment
// on every call, and segments change seldom. The copy is read again after
// a segment change commits (in this process at once; in another, when its
// notification arrives) and at least every maxAge, in case a notification
// was missed. Leases are never cached: the leases table decides who holds
// an address.
type segmentCache struct {
	store  *store.Store
	maxAge time.Duration

	mu    sync.Mutex
	snap  *Segments
	stale <-chan struct{} // closed by the first segment change after snap was read
	read  time.Time
}

const segmentCacheMaxAge = 30 * time.Second

// Segments returns every segment, from memory unless a segment changed.
func (s *Service) Segments(ctx context.Context) (*Segments, error) {
	c := &s.segments
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && time.Since(c.read) < c.maxAge {
		select {
		case <-c.stale:
		default:
			return c.snap, nil
		}
	}
	// Wait before reading: a change committed during the read makes the
	// copy stale at once.
	stale := c.store.SegmentChanges().Wait()
	read := time.Now()
	snap, err := loadSegments(ctx, c.store.Client)
	if err != nil {
		return nil, err
	}
	c.snap, c.stale, c.read = snap, stale, read
	return snap, nil
}

// Segment returns one segment, or a NotFound error.
func (s *Service) Segment(ctx context.Context, id uuid.UUID) (*Segment, error) {
	ss, err := s.Segments(ctx)
	if err != nil {
		return nil, err
	}
	if seg := ss.Get(id); seg != nil {
		return seg, nil
	}
	return nil, segmentNotFound(id)
}

func loadSegments(ctx context.Context, client *ent.Client) (*Segments, error) {
	rows, err := client.Segment.Query().WithReservations().Order(ent.Asc(segment.FieldName)).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read segments: %w", err)
	}
	ss := &Segments{byID: make(map[uuid.UUID]*Segment, len(rows))}
	for _, row := range rows {
		reserved := make([]string, len(row.Edges.Reservations))
		for i, r := range row.Edges.Reservations {
			reserved[i] = r.Address
		}
		pool, err := PoolOf(row, reserved)
		if err != nil {
			return nil, err
		}
		seg := &Segment{Segment: row, Pool: pool, Reservations: make(map[string]netip.Addr, len(row.Edges.Reservations))}
		for _, r := range row.Edges.Reservations {
			if a, err := netip.ParseAddr(r.Address); err == nil {
				seg.Reservations[r.MAC] = a
			}
		}
		ss.ByName = append(ss.ByName, seg)
		ss.byID[row.ID] = seg
	}
	return ss, nil
}
