package bmc

import (
	"context"
	"fmt"
	"net/netip"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/segmentcredentials"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// segmentPasswordAAD binds a segment's sealed default password to its
// segment, so that a sealed value copied to another row does not open.
func segmentPasswordAAD(segmentID uuid.UUID) []byte {
	return secrets.AAD("segment", segmentID.String(), "bmc_password")
}

// SetSegmentCredentials sets a segment's default BMC credentials, or
// replaces them.
func (s *Service) SetSegmentCredentials(ctx context.Context, req *connect.Request[bmcv1.SetSegmentCredentialsRequest]) (*connect.Response[bmcv1.SetSegmentCredentialsResponse], error) {
	m := req.Msg
	id, err := ids.Parse("segment_id", m.GetSegmentId())
	if err != nil {
		return nil, err
	}
	// Without a keyring Seal fails with secrets.ErrNoKeyring, which
	// reaches the caller as FailedPrecondition saying what to set.
	sealed, err := s.keys.Seal([]byte(m.GetPassword()), segmentPasswordAAD(id))
	if err != nil {
		return nil, fmt.Errorf("seal the segment's BMC password: %w", err)
	}
	var out *bmcv1.SegmentCredentials
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if _, err := tx.Segment.Get(ctx, id); ent.IsNotFound(err) {
			return noSegment(id)
		} else if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		now := store.Now()
		cur, err := tx.SegmentCredentials.Query().Where(segmentcredentials.SegmentID(id)).Only(ctx)
		var c *ent.SegmentCredentials
		switch {
		case ent.IsNotFound(err):
			c, err = tx.SegmentCredentials.Create().SetSegmentID(id).SetUsername(m.GetUsername()).
				SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).
				SetCreateTime(now).SetUpdateTime(now).Save(ctx)
		case err != nil:
			return fmt.Errorf("read the segment's BMC credentials: %w", err)
		default:
			c, err = cur.Update().SetUsername(m.GetUsername()).
				SetPasswordSealed(sealed.Ciphertext).SetPasswordKeyID(sealed.KeyID).
				SetUpdateTime(now).Save(ctx)
		}
		if err != nil {
			return fmt.Errorf("write the segment's BMC credentials: %w", err)
		}
		out = credentialsToProto(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.SetSegmentCredentialsResponse{Credentials: out}), nil
}

// GetSegmentCredentials returns a segment's default BMC credentials,
// without the password.
func (s *Service) GetSegmentCredentials(ctx context.Context, req *connect.Request[bmcv1.GetSegmentCredentialsRequest]) (*connect.Response[bmcv1.GetSegmentCredentialsResponse], error) {
	id, err := ids.Parse("segment_id", req.Msg.GetSegmentId())
	if err != nil {
		return nil, err
	}
	c, err := s.store.Client.SegmentCredentials.Query().Where(segmentcredentials.SegmentID(id)).Only(ctx)
	if ent.IsNotFound(err) {
		if _, err := s.store.Client.Segment.Get(ctx, id); ent.IsNotFound(err) {
			return nil, noSegment(id)
		} else if err != nil {
			return nil, fmt.Errorf("read segment: %w", err)
		}
		return nil, connect.NewError(connect.CodeNotFound,
			fmt.Errorf("segment %s has no default BMC credentials; set them with SetSegmentCredentials", id))
	} else if err != nil {
		return nil, fmt.Errorf("read the segment's BMC credentials: %w", err)
	}
	return connect.NewResponse(&bmcv1.GetSegmentCredentialsResponse{Credentials: credentialsToProto(c)}), nil
}

// DeleteSegmentCredentials removes a segment's default BMC credentials;
// removing ones that are not there succeeds.
func (s *Service) DeleteSegmentCredentials(ctx context.Context, req *connect.Request[bmcv1.DeleteSegmentCredentialsRequest]) (*connect.Response[bmcv1.DeleteSegmentCredentialsResponse], error) {
	id, err := ids.Parse("segment_id", req.Msg.GetSegmentId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if _, err := tx.SegmentCredentials.Delete().Where(segmentcredentials.SegmentID(id)).Exec(ctx); err != nil {
			return fmt.Errorf("delete the segment's BMC credentials: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&bmcv1.DeleteSegmentCredentialsResponse{}), nil
}

func noSegment(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("segment_id: no segment %s", id))
}

// credentialsToProto is c as the API shows it: never its password.
func credentialsToProto(c *ent.SegmentCredentials) *bmcv1.SegmentCredentials {
	return &bmcv1.SegmentCredentials{
		SegmentId:   c.SegmentID.String(),
		Username:    c.Username,
		HasPassword: len(c.PasswordSealed) > 0,
		CreateTime:  timestamppb.New(c.CreateTime),
		UpdateTime:  timestamppb.New(c.UpdateTime),
	}
}

// ownCredentials says whether b has credentials of its own; a BMC without
// them uses its segment's defaults.
func ownCredentials(b *ent.BMC) bool {
	return b.Username != ""
}

// segmentDefault is one segment's default credentials, with its prefix.
type segmentDefault struct {
	prefix netip.Prefix
	creds  *ent.SegmentCredentials
}

// defaults are the segments' default BMC credentials, as read at one
// time.
type defaults []segmentDefault

// loadDefaults reads every segment's default BMC credentials with the
// segment's prefix.
func loadDefaults(ctx context.Context, client *ent.SegmentCredentialsClient) (defaults, error) {
	cs, err := client.Query().WithSegment().All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the segments' BMC credentials: %w", err)
	}
	out := make(defaults, 0, len(cs))
	for _, c := range cs {
		if c.Edges.Segment == nil {
			continue
		}
		p, err := netip.ParsePrefix(c.Edges.Segment.Prefix)
		if err != nil {
			continue // segments hold valid prefixes; one that is not matches nothing
		}
		out = append(out, segmentDefault{prefix: p, creds: c})
	}
	return out, nil
}

// forAddress returns the default credentials of the segment with the most
// specific prefix that holds address, an IP address; nil if there is
// none, or address is a host name.
func (d defaults) forAddress(address string) *ent.SegmentCredentials {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return nil
	}
	a = a.Unmap()
	var best *segmentDefault
	for i := range d {
		if d[i].prefix.Contains(a) && (best == nil || d[i].prefix.Bits() > best.prefix.Bits()) {
			best = &d[i]
		}
	}
	if best == nil {
		return nil
	}
	return best.creds
}

// forBMC returns the default credentials b uses: nil if it has its own,
// or no segment's defaults apply to it.
func (d defaults) forBMC(b *ent.BMC) *ent.SegmentCredentials {
	if ownCredentials(b) {
		return nil
	}
	return d.forAddress(b.Address)
}

// show is b as the API shows it, with the segment whose defaults it uses.
func (d defaults) show(b *ent.BMC) *bmcv1.BMC {
	out := toProto(b)
	if c := d.forBMC(b); c != nil {
		out.CredentialsSegmentId = c.SegmentID.String()
	}
	return out
}

// noCredentials is why an operation on b, a BMC with no credentials of
// its own and none from a segment, fails: it says how to give it some.
func noCredentials(b *ent.BMC) string {
	msg := fmt.Sprintf("the BMC of machine %s (%s) has no credentials: set a username and password with SetBMC, "+
		"or default credentials with SetSegmentCredentials on the segment whose prefix holds %s", b.MachineID, b.Address, b.Address)
	if _, err := netip.ParseAddr(b.Address); err != nil {
		msg = fmt.Sprintf("the BMC of machine %s (%s) has no credentials: set a username and password with SetBMC "+
			"(segment default credentials apply only to BMCs whose address is an IP address)", b.MachineID, b.Address)
	}
	return msg
}

// showOne is b as the API shows it (see defaults.show), reading the
// segments' defaults through client only if b has no credentials of its
// own.
func showOne(ctx context.Context, client *ent.SegmentCredentialsClient, b *ent.BMC) (*bmcv1.BMC, error) {
	if ownCredentials(b) {
		return toProto(b), nil
	}
	d, err := loadDefaults(ctx, client)
	if err != nil {
		return nil, err
	}
	return d.show(b), nil
}
