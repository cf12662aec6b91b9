package audit

import (
	"context"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/auditrecord"
	"github.com/carbide-dev/carbide/ent/predicate"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	entsql "entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"
)

// Service serves AuditService.
type Service struct {
	store *store.Store
}

var _ auditv1connect.AuditServiceHandler = (*Service)(nil)

// NewService returns an AuditService over st.
func NewService(st *store.Store) *Service {
	return &Service{store: st}
}

// ListAuditRecords lists records newest first.
func (s *Service) ListAuditRecords(ctx context.Context, req *connect.Request[auditv1.ListAuditRecordsRequest]) (*connect.Response[auditv1.ListAuditRecordsResponse], error) {
	msg := req.Msg
	var preds []predicate.AuditRecord
	if msg.GetPrincipal() != "" {
		preds = append(preds, auditrecord.Principal(msg.GetPrincipal()))
	}
	if msg.GetProcedure() != "" {
		preds = append(preds, auditrecord.Procedure(msg.GetProcedure()))
	}
	if id := msg.GetResourceId(); id != "" {
		preds = append(preds, predicate.AuditRecord(func(sel *entsql.Selector) {
			sel.Where(sqljson.ValueContains(sel.C(auditrecord.FieldResourceIds), id))
		}))
	}
	if msg.GetSince() != nil {
		preds = append(preds, auditrecord.TimeGTE(msg.GetSince().AsTime().UTC()))
	}
	if msg.GetUntil() != nil {
		preds = append(preds, auditrecord.TimeLT(msg.GetUntil().AsTime().UTC()))
	}
	fp := pagetoken.Filter(msg.GetPrincipal(), msg.GetProcedure(), msg.GetResourceId(),
		msg.GetSince().AsTime().String(), msg.GetUntil().AsTime().String())
	after, err := pagetoken.Decode(msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		preds = append(preds, auditrecord.IDLT(n))
	}
	size := pagetoken.Size(msg.GetPageSize())
	rs, err := s.store.Client.AuditRecord.Query().Where(preds...).
		Order(ent.Desc(auditrecord.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	resp := &auditv1.ListAuditRecordsResponse{}
	if len(rs) > size {
		rs = rs[:size]
		resp.NextPageToken = pagetoken.Encode(strconv.FormatInt(rs[size-1].ID, 10), fp)
	}
	for _, r := range rs {
		resp.Records = append(resp.Records, &auditv1.AuditRecord{
			Id:          r.ID,
			Time:        timestamppb.New(r.Time),
			Principal:   r.Principal,
			Roles:       r.Roles,
			AuthMethod:  r.AuthMethod,
			Procedure:   r.Procedure,
			ResourceIds: r.ResourceIds,
			Code:        r.Code,
			Error:       r.Error,
			Peer:        r.Peer,
		})
	}
	return connect.NewResponse(resp), nil
}
