package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/declinedaddress"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/nic"
	"github.com/carbide-dev/carbide/ent/reservation"
	"github.com/carbide-dev/carbide/ent/segment"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves AddressService.
type Service struct {
	store *store.Store
}

var _ networkv1connect.AddressServiceHandler = (*Service)(nil)

// NewService returns an AddressService over st.
func NewService(st *store.Store) *Service {
	return &Service{store: st}
}

// maxAttempts bounds how often one allocation retries after losing a race
// for an address to a concurrent allocation.
const maxAttempts = 16

// errRace marks an allocation attempt that lost a race and should be retried.
var errRace = errors.New("lost a race for an address")

// AllocateAddress leases an address or renews the caller's lease.
func (s *Service) AllocateAddress(ctx context.Context, req *connect.Request[networkv1.AllocateAddressRequest]) (*connect.Response[networkv1.AllocateAddressResponse], error) {
	l, err := s.Allocate(ctx, Request{
		Segment:   uuid.MustParse(req.Msg.GetSegmentId()),
		MAC:       machines.CanonicalMAC(req.Msg.GetMac()),
		Requested: req.Msg.GetRequestedAddress(),
		Duration:  req.Msg.GetLeaseDuration().AsDuration(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.AllocateAddressResponse{Lease: LeaseToProto(l)}), nil
}

// Request asks for an address.
type Request struct {
	Segment   uuid.UUID
	MAC       string // canonical
	Requested string // optional
	Duration  time.Duration
}

// Allocate leases an address to req.MAC on req.Segment or renews its lease.
// Every decision is re-read inside a transaction; when a concurrent
// allocation (in this or another API process) takes the chosen address
// first, the unique index rejects the second insert and the allocation
// starts over with fresh data.
func (s *Service) Allocate(ctx context.Context, req Request) (*ent.Lease, error) {
	for range maxAttempts {
		var l *ent.Lease
		err := s.store.InTx(ctx, func(tx *ent.Tx) error {
			var err error
			l, err = s.allocate(ctx, tx, req)
			return err
		})
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, errRace) || ent.IsConstraintError(err):
			continue
		default:
			return nil, err
		}
	}
	return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("segment %s: gave up after %d attempts that lost races for addresses; retry", req.Segment, maxAttempts))
}

func (s *Service) allocate(ctx context.Context, tx *ent.Tx, req Request) (*ent.Lease, error) {
	seg, err := tx.Segment.Get(ctx, req.Segment)
	if ent.IsNotFound(err) {
		return nil, segmentNotFound(req.Segment)
	} else if err != nil {
		return nil, fmt.Errorf("read segment: %w", err)
	}
	now := store.Now()
	d := req.Duration
	if d == 0 {
		d = time.Duration(seg.LeaseSeconds) * time.Second
	}
	expire := now.Add(d)

	existing, err := tx.Lease.Query().Where(lease.SegmentID(seg.ID), lease.MAC(req.MAC)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, fmt.Errorf("read lease: %w", err)
	}
	resv, err := tx.Reservation.Query().Where(reservation.SegmentID(seg.ID), reservation.MAC(req.MAC)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, fmt.Errorf("read reservation: %w", err)
	}

	// Renewal: the MAC keeps the address it holds while it may still hold
	// it. It moves when a reservation now points it elsewhere, or when the
	// segment changed under it (its address left the ranges, became the
	// gateway or another MAC's reservation).
	if existing != nil {
		keep, err := s.mayKeep(ctx, tx, seg, existing, resv)
		if err != nil {
			return nil, err
		}
		if keep {
			l, err := tx.Lease.UpdateOne(existing).
				SetRenewTime(now).SetExpireTime(expire).SetReserved(resv != nil).
				Save(ctx)
			if ent.IsNotFound(err) {
				return nil, errRace // reclaimed by another MAC meanwhile
			} else if err != nil {
				return nil, fmt.Errorf("renew lease: %w", err)
			}
			// An expired lease coming back shows on the machine again.
			if err := s.attach(ctx, tx, seg.ID, req.MAC, !existing.ExpireTime.After(now)); err != nil {
				return nil, err
			}
			return l, nil
		}
	}

	var chosen string
	if resv != nil {
		if err := s.freeReserved(ctx, tx, seg, resv, now); err != nil {
			return nil, err
		}
		chosen = resv.Address
	} else {
		if chosen, err = s.pick(ctx, tx, seg, req, now); err != nil {
			return nil, err
		}
	}

	var l *ent.Lease
	if existing != nil {
		// Moving to another address: the row keeps its identity.
		l, err = tx.Lease.UpdateOne(existing).
			SetAddress(chosen).SetReserved(resv != nil).SetCreateTime(now).SetRenewTime(now).SetExpireTime(expire).
			Save(ctx)
	} else {
		l, err = tx.Lease.Create().
			SetSegmentID(seg.ID).SetMAC(req.MAC).SetAddress(chosen).SetReserved(resv != nil).
			SetCreateTime(now).SetRenewTime(now).SetExpireTime(expire).
			Save(ctx)
	}
	if err != nil {
		if ent.IsConstraintError(err) || ent.IsNotFound(err) {
			return nil, errRace
		}
		return nil, fmt.Errorf("write lease: %w", err)
	}
	if err := s.attach(ctx, tx, seg.ID, req.MAC, true); err != nil {
		return nil, err
	}
	return l, nil
}

// mayKeep reports whether a MAC may renew the lease it holds: the address
// is its reservation, or, without one, a leasable address of the pool.
func (s *Service) mayKeep(ctx context.Context, tx *ent.Tx, seg *ent.Segment, l *ent.Lease, resv *ent.Reservation) (bool, error) {
	if resv != nil {
		return resv.Address == l.Address, nil
	}
	pool, err := s.pool(ctx, tx, seg)
	if err != nil {
		return false, err
	}
	a, err := netip.ParseAddr(l.Address)
	return err == nil && pool.Leasable(a), nil
}

// pool reads the segment's reservations and declined addresses and builds
// its pool.
func (s *Service) pool(ctx context.Context, tx *ent.Tx, seg *ent.Segment) (*Pool, error) {
	reserved, err := tx.Reservation.Query().Where(reservation.SegmentID(seg.ID)).Select(reservation.FieldAddress).Strings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read reservations: %w", err)
	}
	p, err := PoolOf(seg, reserved)
	if err != nil {
		return nil, err
	}
	declined, err := tx.DeclinedAddress.Query().
		Where(declinedaddress.SegmentID(seg.ID), declinedaddress.UntilGT(store.Now())).
		Select(declinedaddress.FieldAddress).Strings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read declined addresses: %w", err)
	}
	p.Declined = make(map[netip.Addr]bool, len(declined))
	for _, d := range declined {
		if a, err := netip.ParseAddr(d); err == nil {
			p.Declined[a] = true
		}
	}
	return p, nil
}

// freeReserved makes the reserved address available to its MAC: an expired
// lease of another MAC on it is dropped; an unexpired one is an error.
func (s *Service) freeReserved(ctx context.Context, tx *ent.Tx, seg *ent.Segment, resv *ent.Reservation, now time.Time) error {
	holder, err := tx.Lease.Query().Where(lease.SegmentID(seg.ID), lease.Address(resv.Address)).Only(ctx)
	switch {
	case ent.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read lease: %w", err)
	case holder.MAC == resv.MAC:
		return nil
	case holder.ExpireTime.After(now):
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("address %s is reserved for %s but leased to %s until %s; release that lease first",
				resv.Address, resv.MAC, holder.MAC, holder.ExpireTime.Format(time.RFC3339)))
	}
	n, err := tx.Lease.Delete().Where(lease.ID(holder.ID), lease.ExpireTimeLTE(now)).Exec(ctx)
	if err != nil {
		return fmt.Errorf("reclaim reserved address: %w", err)
	}
	if n == 0 {
		return errRace
	}
	return nil
}

// pick chooses an address for a MAC without a lease: the requested one if
// it is free, else the first free address of the pool walk, else the
// leasable address whose lease expired longest ago (its old holder loses it).
func (s *Service) pick(ctx context.Context, tx *ent.Tx, seg *ent.Segment, req Request, now time.Time) (string, error) {
	pool, err := s.pool(ctx, tx, seg)
	if err != nil {
		return "", err
	}
	leases, err := tx.Lease.Query().Where(lease.SegmentID(seg.ID)).
		Select(lease.FieldID, lease.FieldAddress, lease.FieldExpireTime).All(ctx)
	if err != nil {
		return "", fmt.Errorf("read leases: %w", err)
	}
	taken := make(map[netip.Addr]*ent.Lease, len(leases))
	for _, l := range leases {
		if a, err := netip.ParseAddr(l.Address); err == nil {
			taken[a] = l
		}
	}
	if req.Requested != "" {
		if a, err := netip.ParseAddr(req.Requested); err == nil && pool.Leasable(a) && taken[a] == nil {
			return a.String(), nil
		}
	}
	for a := range pool.Walk(req.MAC) {
		if taken[a] == nil {
			return a.String(), nil
		}
	}
	// No never-used address left: take over the lease that expired longest ago.
	var oldest *ent.Lease
	for a, l := range taken {
		if !l.ExpireTime.After(now) && pool.Leasable(a) && (oldest == nil || l.ExpireTime.Before(oldest.ExpireTime)) {
			oldest = l
		}
	}
	if oldest == nil {
		return "", connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("segment %s (%s) has no free address: all %d addresses of its ranges are leased or excluded; widen its ranges or release leases",
				seg.Name, seg.Prefix, pool.Size()))
	}
	n, err := tx.Lease.Delete().Where(lease.ID(oldest.ID), lease.ExpireTimeLTE(now)).Exec(ctx)
	if err != nil {
		return "", fmt.Errorf("reclaim expired lease: %w", err)
	}
	if n == 0 {
		return "", errRace // renewed or reclaimed meanwhile
	}
	return oldest.Address, nil
}

// attach records that the machine owning mac, if any, is on the segment,
// and puts the machine in the change log when what it shows changed: the
// interface moved to this segment, or shown says its address changed.
func (s *Service) attach(ctx context.Context, tx *ent.Tx, segmentID uuid.UUID, mac string, shown bool) error {
	n, err := tx.NIC.Query().Where(nic.MAC(mac)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read interface: %w", err)
	}
	moved := n.SegmentID == nil || *n.SegmentID != segmentID
	if moved {
		if err := tx.NIC.UpdateOne(n).SetSegmentID(segmentID).SetUpdateTime(store.Now()).Exec(ctx); err != nil {
			return fmt.Errorf("update interface: %w", err)
		}
	}
	if !moved && !shown {
		return nil
	}
	return machines.RecordChange(ctx, s.store, tx, n.MachineID, store.Updated)
}

// ReleaseAddress ends a MAC's lease now.
func (s *Service) ReleaseAddress(ctx context.Context, req *connect.Request[networkv1.ReleaseAddressRequest]) (*connect.Response[networkv1.ReleaseAddressResponse], error) {
	if err := s.Release(ctx, uuid.MustParse(req.Msg.GetSegmentId()), machines.CanonicalMAC(req.Msg.GetMac())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.ReleaseAddressResponse{}), nil
}

// Release ends mac's lease on the segment now; releasing a MAC without a
// lease succeeds.
func (s *Service) Release(ctx context.Context, segID uuid.UUID, mac string) error {
	return s.store.InTx(ctx, func(tx *ent.Tx) error {
		if ok, err := tx.Segment.Query().Where(segment.ID(segID)).Exist(ctx); err != nil {
			return fmt.Errorf("read segment: %w", err)
		} else if !ok {
			return segmentNotFound(segID)
		}
		now := store.Now()
		n, err := tx.Lease.Update().
			Where(lease.SegmentID(segID), lease.MAC(mac), lease.ExpireTimeGT(now)).
			SetExpireTime(now).Save(ctx)
		if err != nil {
			return fmt.Errorf("release lease: %w", err)
		}
		if n == 0 {
			return nil
		}
		owner, err := tx.NIC.Query().Where(nic.MAC(mac)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read interface: %w", err)
		}
		return machines.RecordChange(ctx, s.store, tx, owner.MachineID, store.Updated)
	})
}

// ListLeases lists a segment's leases, oldest first.
func (s *Service) ListLeases(ctx context.Context, req *connect.Request[networkv1.ListLeasesRequest]) (*connect.Response[networkv1.ListLeasesResponse], error) {
	segID := uuid.MustParse(req.Msg.GetSegmentId())
	if ok, err := s.store.Client.Segment.Query().Where(segment.ID(segID)).Exist(ctx); err != nil {
		return nil, fmt.Errorf("read segment: %w", err)
	} else if !ok {
		return nil, segmentNotFound(segID)
	}
	fp := pagetoken.Filter(segID.String(), strconv.FormatBool(req.Msg.GetIncludeExpired()))
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.Lease.Query().Where(lease.SegmentID(segID))
	if !req.Msg.GetIncludeExpired() {
		q = q.Where(lease.ExpireTimeGT(store.Now()))
	}
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		q = q.Where(lease.IDGT(n))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	ls, err := q.Order(ent.Asc(lease.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	resp := &networkv1.ListLeasesResponse{}
	if len(ls) > size {
		ls = ls[:size]
		resp.NextPageToken = pagetoken.Encode(strconv.FormatInt(ls[size-1].ID, 10), fp)
	}
	for _, l := range ls {
		resp.Leases = append(resp.Leases, LeaseToProto(l))
	}
	return connect.NewResponse(resp), nil
}

// LeaseToProto converts a stored lease.
func LeaseToProto(l *ent.Lease) *networkv1.Lease {
	return &networkv1.Lease{
		SegmentId:  l.SegmentID.String(),
		Mac:        l.MAC,
		Address:    l.Address,
		ExpireTime: timestamppb.New(l.ExpireTime),
		Reserved:   l.Reserved,
		CreateTime: timestamppb.New(l.CreateTime),
		RenewTime:  timestamppb.New(l.RenewTime),
	}
}

func segmentNotFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("segment %s not found", id))
}
