// Package segments implements carbide.network.v1.SegmentService: network
// segments, their address ranges, reservations and relay addresses.
package segments

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/reservation"
	"github.com/carbide-dev/carbide/ent/segment"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service serves SegmentService.
type Service struct {
	store *store.Store
}

var _ networkv1connect.SegmentServiceHandler = (*Service)(nil)

// NewService returns a SegmentService over st.
func NewService(st *store.Store) *Service {
	return &Service{store: st}
}

// CreateSegment creates a segment, or returns the identical one that exists.
func (s *Service) CreateSegment(ctx context.Context, req *connect.Request[networkv1.CreateSegmentRequest]) (*connect.Response[networkv1.CreateSegmentResponse], error) {
	sp, err := checkSpec(req.Msg.GetSegment())
	if err != nil {
		return nil, err
	}
	var out *networkv1.Segment
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if err := s.store.Lock(ctx, tx, store.LockSegments); err != nil {
			return err
		}
		same, err := tx.Segment.Query().Where(segment.Name(sp.name)).Only(ctx)
		switch {
		case err == nil:
			existing, err := Load(ctx, tx.Client(), same)
			if err != nil {
				return err
			}
			if cur, err := checkSpec(existing); err == nil && cur.equal(sp) {
				out = existing // a retried create: nothing to do
				return nil
			}
			return connect.NewError(connect.CodeAlreadyExists,
				fmt.Errorf("segment.name: a segment named %q already exists (id %s) with other settings", sp.name, same.ID))
		case !ent.IsNotFound(err):
			return fmt.Errorf("read segment: %w", err)
		}
		if err := checkNeighbours(ctx, tx, uuid.Nil, sp); err != nil {
			return err
		}
		if err := checkDNSClashes(ctx, s.store, tx, uuid.Nil, sp); err != nil {
			return err
		}
		now := store.Now()
		create := tx.Segment.Create().SetName(sp.name).SetPrefix(sp.prefix.String()).
			SetCreateTime(now).SetUpdateTime(now)
		apply(create.Mutation(), sp)
		seg, err := create.Save(ctx)
		if err != nil {
			return fmt.Errorf("create segment: %w", err)
		}
		if err := writeReservations(ctx, tx, seg.ID, sp); err != nil {
			return err
		}
		if out, err = Load(ctx, tx.Client(), seg); err != nil {
			return err
		}
		return s.store.RecordChange(ctx, tx, store.KindSegment, store.Created, seg.ID.String(), out)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.CreateSegmentResponse{Segment: out}), nil
}

// GetSegment returns one segment.
func (s *Service) GetSegment(ctx context.Context, req *connect.Request[networkv1.GetSegmentRequest]) (*connect.Response[networkv1.GetSegmentResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	seg, err := s.store.Client.Segment.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, notFound(id)
	} else if err != nil {
		return nil, fmt.Errorf("read segment: %w", err)
	}
	out, err := Load(ctx, s.store.Client, seg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.GetSegmentResponse{Segment: out}), nil
}

// ListSegments lists segments in name order.
func (s *Service) ListSegments(ctx context.Context, req *connect.Request[networkv1.ListSegmentsRequest]) (*connect.Response[networkv1.ListSegmentsResponse], error) {
	fp := pagetoken.Filter(req.Msg.GetName())
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	q := s.store.Client.Segment.Query()
	if req.Msg.GetName() != "" {
		q = q.Where(segment.Name(req.Msg.GetName()))
	}
	if after != "" {
		q = q.Where(segment.NameGT(after))
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	segs, err := q.Order(ent.Asc(segment.FieldName)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	resp := &networkv1.ListSegmentsResponse{}
	if len(segs) > size {
		segs = segs[:size]
		resp.NextPageToken = pagetoken.Encode(segs[size-1].Name, fp)
	}
	for _, seg := range segs {
		out, err := Load(ctx, s.store.Client, seg)
		if err != nil {
			return nil, err
		}
		resp.Segments = append(resp.Segments, out)
	}
	return connect.NewResponse(resp), nil
}

// UpdateSegment changes the fields named in the update mask.
func (s *Service) UpdateSegment(ctx context.Context, req *connect.Request[networkv1.UpdateSegmentRequest]) (*connect.Response[networkv1.UpdateSegmentResponse], error) {
	in := req.Msg.GetSegment()
	id, err := ids.Parse("segment.id", in.GetId())
	if err != nil {
		return nil, err
	}
	var out *networkv1.Segment
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if err := s.store.Lock(ctx, tx, store.LockSegments); err != nil {
			return err
		}
		seg, err := store.ForUpdate(s.store, tx.Segment.Query().Where(segment.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return notFound(id)
		} else if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		cur, err := Load(ctx, tx.Client(), seg)
		if err != nil {
			return err
		}
		merged := merge(cur, in, req.Msg.GetUpdateMask().GetPaths())
		sp, err := checkSpec(merged)
		if err != nil {
			return err
		}
		if old, err := checkSpec(cur); err == nil && old.equal(sp) {
			out = cur // nothing changes
			return nil
		}
		if sp.name != seg.Name {
			if taken, err := tx.Segment.Query().Where(segment.Name(sp.name)).Exist(ctx); err != nil {
				return fmt.Errorf("read segment: %w", err)
			} else if taken {
				return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("segment.name: a segment named %q already exists", sp.name))
			}
		}
		if err := checkNeighbours(ctx, tx, id, sp); err != nil {
			return err
		}
		if err := checkDNSClashes(ctx, s.store, tx, id, sp); err != nil {
			return err
		}
		update := tx.Segment.UpdateOne(seg).SetName(sp.name).SetUpdateTime(store.Now())
		apply(update.Mutation(), sp)
		if err := update.Exec(ctx); err != nil {
			return fmt.Errorf("update segment: %w", err)
		}
		if _, err := tx.Reservation.Delete().Where(reservation.SegmentID(id)).Exec(ctx); err != nil {
			return fmt.Errorf("replace reservations: %w", err)
		}
		if err := writeReservations(ctx, tx, id, sp); err != nil {
			return err
		}
		seg, err = tx.Segment.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		if out, err = Load(ctx, tx.Client(), seg); err != nil {
			return err
		}
		return s.store.RecordChange(ctx, tx, store.KindSegment, store.Updated, id.String(), out)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.UpdateSegmentResponse{Segment: out}), nil
}

// DeleteSegment deletes a segment without unexpired leases.
func (s *Service) DeleteSegment(ctx context.Context, req *connect.Request[networkv1.DeleteSegmentRequest]) (*connect.Response[networkv1.DeleteSegmentResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		seg, err := store.ForUpdate(s.store, tx.Segment.Query().Where(segment.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return notFound(id)
		} else if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		active, err := tx.Lease.Query().Where(lease.SegmentID(id), lease.ExpireTimeGT(store.Now())).Count(ctx)
		if err != nil {
			return fmt.Errorf("count leases: %w", err)
		}
		if active > 0 {
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("segment %q still has %d unexpired leases; release them or wait for them to expire", seg.Name, active))
		}
		last, err := Load(ctx, tx.Client(), seg)
		if err != nil {
			return err
		}
		if err := tx.Segment.DeleteOne(seg).Exec(ctx); err != nil {
			return fmt.Errorf("delete segment: %w", err)
		}
		return s.store.RecordChange(ctx, tx, store.KindSegment, store.Deleted, id.String(), last)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&networkv1.DeleteSegmentResponse{}), nil
}

// checkNeighbours checks a segment against every other one: prefixes must
// not overlap and a relay address selects one segment only. The caller
// holds store.LockSegments, so concurrent creates cannot both pass.
func checkNeighbours(ctx context.Context, tx *ent.Tx, self uuid.UUID, sp *spec) error {
	others, err := tx.Segment.Query().Where(segment.IDNEQ(self)).
		Select(segment.FieldID, segment.FieldName, segment.FieldPrefix, segment.FieldRelayAddresses).All(ctx)
	if err != nil {
		return fmt.Errorf("read segments: %w", err)
	}
	for _, o := range others {
		if p, err := netip.ParsePrefix(o.Prefix); err == nil && p.Overlaps(sp.prefix) {
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("segment.prefix: %s overlaps segment %q (%s)", sp.prefix, o.Name, o.Prefix))
		}
		for _, r := range sp.relays {
			for _, or := range o.RelayAddresses {
				if r == or {
					return connect.NewError(connect.CodeFailedPrecondition,
						fmt.Errorf("segment.relay_addresses: %s already selects segment %q", r, o.Name))
				}
			}
		}
	}
	// A reservation must not take an address another MAC holds right now.
	for _, r := range sp.reservations {
		holder, err := tx.Lease.Query().Where(lease.SegmentID(self), lease.Address(r.address),
			lease.MACNEQ(r.mac), lease.ExpireTimeGT(store.Now())).First(ctx)
		if ent.IsNotFound(err) {
			continue
		} else if err != nil {
			return fmt.Errorf("read leases: %w", err)
		}
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("segment.reservations: %s is leased to %s until %s; release that lease before reserving it for %s",
				r.address, holder.MAC, holder.ExpireTime.Format(time.RFC3339), r.mac))
	}
	return nil
}

// apply copies the settings of sp, all but name and prefix, onto m.
func apply(m *ent.SegmentMutation, sp *spec) {
	m.SetGateway(sp.gateway)
	m.SetDNSServers(sp.dnsServers)
	m.SetDomain(sp.domain)
	m.SetMtu(sp.mtu)
	m.SetRanges(sp.ranges)
	m.SetRelayAddresses(sp.relays)
	m.SetNtpServers(sp.ntpServers)
	m.SetLeaseSeconds(int64(sp.lease / time.Second))
	m.SetDNSRecords(sp.dnsRecords)
}

func writeReservations(ctx context.Context, tx *ent.Tx, segID uuid.UUID, sp *spec) error {
	if len(sp.reservations) == 0 {
		return nil
	}
	builders := make([]*ent.ReservationCreate, len(sp.reservations))
	for i, r := range sp.reservations {
		builders[i] = tx.Reservation.Create().SetSegmentID(segID).SetMAC(r.mac).SetAddress(r.address)
	}
	if err := tx.Reservation.CreateBulk(builders...).Exec(ctx); err != nil {
		return fmt.Errorf("write reservations: %w", err)
	}
	return nil
}

// merge returns cur with the masked fields taken from in.
func merge(cur, in *networkv1.Segment, paths []string) *networkv1.Segment {
	out := &networkv1.Segment{
		Name: cur.GetName(), Prefix: cur.GetPrefix(), Gateway: cur.GetGateway(),
		DnsServers: cur.GetDnsServers(), Domain: cur.GetDomain(), Mtu: cur.GetMtu(),
		Ranges: cur.GetRanges(), Reservations: cur.GetReservations(),
		RelayAddresses: cur.GetRelayAddresses(), NtpServers: cur.GetNtpServers(),
		LeaseDuration: cur.GetLeaseDuration(), DnsRecords: cur.GetDnsRecords(),
	}
	for _, p := range paths {
		switch p {
		case "name":
			out.Name = in.GetName()
		case "gateway":
			out.Gateway = in.GetGateway()
		case "dns_servers":
			out.DnsServers = in.GetDnsServers()
		case "domain":
			out.Domain = in.GetDomain()
		case "mtu":
			out.Mtu = in.GetMtu()
		case "ranges":
			out.Ranges = in.GetRanges()
		case "reservations":
			out.Reservations = in.GetReservations()
		case "relay_addresses":
			out.RelayAddresses = in.GetRelayAddresses()
		case "ntp_servers":
			out.NtpServers = in.GetNtpServers()
		case "lease_duration":
			out.LeaseDuration = in.GetLeaseDuration()
		case "dns_records":
			out.DnsRecords = in.GetDnsRecords()
		}
	}
	return out
}

// Load converts a stored segment, reading its reservations through client.
func Load(ctx context.Context, client *ent.Client, seg *ent.Segment) (*networkv1.Segment, error) {
	rs, err := client.Reservation.Query().Where(reservation.SegmentID(seg.ID)).
		Order(ent.Asc(reservation.FieldID)).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read reservations: %w", err)
	}
	out := &networkv1.Segment{
		Id:             seg.ID.String(),
		Name:           seg.Name,
		Prefix:         seg.Prefix,
		Gateway:        seg.Gateway,
		DnsServers:     seg.DNSServers,
		Domain:         seg.Domain,
		Mtu:            uint32(seg.Mtu),
		RelayAddresses: seg.RelayAddresses,
		NtpServers:     seg.NtpServers,
		LeaseDuration:  durationpb.New(time.Duration(seg.LeaseSeconds) * time.Second),
		CreateTime:     timestamppb.New(seg.CreateTime),
		UpdateTime:     timestamppb.New(seg.UpdateTime),
	}
	for _, r := range seg.Ranges {
		out.Ranges = append(out.Ranges, &networkv1.AddressRange{Start: r.Start, End: r.End})
	}
	for _, r := range rs {
		out.Reservations = append(out.Reservations, &networkv1.Reservation{Mac: r.MAC, Address: r.Address})
	}
	for _, r := range seg.DNSRecords {
		out.DnsRecords = append(out.DnsRecords, &networkv1.DNSRecord{
			Name: r.Name, Type: recordTypeEnums[r.Type], Ttl: r.TTL, Value: r.Value,
		})
	}
	return out, nil
}

func notFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("segment %s not found", id))
}
