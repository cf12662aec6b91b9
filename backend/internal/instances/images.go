package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/carbide-dev/carbide/backend/internal/ids"
	"github.com/carbide-dev/carbide/backend/internal/pagetoken"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/image"
	"github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/predicate"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
)

// ImageService serves ImageService. Images are not in the change log:
// no Watch client needs them.
type ImageService struct {
	store *store.Store
}

var _ instancev1connect.ImageServiceHandler = (*ImageService)(nil)

// NewImageService returns an ImageService over st.
func NewImageService(st *store.Store) *ImageService {
	return &ImageService{store: st}
}

// activeStates are the states of an instance that holds its machine (and
// its image): the partial unique index instance_active_machine lists the
// same ones.
var activeStates = []instance.State{instance.StateProvisioning, instance.StateRunning, instance.StateReleasing}

// CreateImage registers an image.
func (s *ImageService) CreateImage(ctx context.Context, req *connect.Request[instancev1.CreateImageRequest]) (*connect.Response[instancev1.CreateImageResponse], error) {
	in := req.Msg.GetImage()
	if in == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("image is missing"))
	}
	if err := checkArtifacts(in); err != nil {
		return nil, err
	}
	firmware := make([]string, 0, len(in.GetFirmware()))
	for _, f := range in.GetFirmware() {
		name, ok := firmwareNames[f]
		if !ok {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("image.firmware: %v is not FIRMWARE_BIOS or FIRMWARE_UEFI", f))
		}
		firmware = append(firmware, name)
	}
	boot := &instancev1.Image{}
	switch b := in.GetBoot().(type) {
	case *instancev1.Image_Disk:
		d := proto.Clone(b.Disk).(*instancev1.DiskImage)
		if d.GetCompression() == instancev1.Compression_COMPRESSION_UNSPECIFIED {
			d.Compression = instancev1.Compression_COMPRESSION_NONE
		}
		boot.Boot = &instancev1.Image_Disk{Disk: d}
	case *instancev1.Image_Netboot:
		boot.Boot = b
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("image: set disk or netboot, how it boots"))
	}
	bootBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(boot)
	if err != nil {
		return nil, fmt.Errorf("encode boot: %w", err)
	}
	var created *ent.Image
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		if err := alreadyExists(ctx, tx, in.GetName(), in.GetVersion()); err != nil {
			return err
		}
		now := store.Now()
		created, err = tx.Image.Create().
			SetName(in.GetName()).SetVersion(in.GetVersion()).SetDescription(in.GetDescription()).
			SetArchitecture(in.GetArchitecture()).SetFirmware(firmware).SetBoot(bootBytes).
			SetCreateTime(now).SetUpdateTime(now).
			Save(ctx)
		if ent.IsConstraintError(err) {
			// Another call created it meanwhile.
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("image %s version %s already exists; choose another version", in.GetName(), in.GetVersion()))
		} else if err != nil {
			return fmt.Errorf("create image: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out, err := ImageToProto(created)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.CreateImageResponse{Image: out}), nil
}

// alreadyExists returns ALREADY_EXISTS, naming the image, when name and
// version are taken.
func alreadyExists(ctx context.Context, tx *ent.Tx, name, version string) error {
	taken, err := tx.Image.Query().Where(image.Name(name), image.Version(version)).Only(ctx)
	switch {
	case ent.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read image: %w", err)
	}
	return connect.NewError(connect.CodeAlreadyExists,
		fmt.Errorf("image %s version %s already exists (id %s); choose another version", name, version, taken.ID))
}

// checkArtifacts checks what protovalidate cannot: that each artifact URL
// names a host and carries no credentials, which every reader of the
// image would see.
func checkArtifacts(img *instancev1.Image) error {
	type named struct {
		field string
		a     *instancev1.Artifact
	}
	var arts []named
	switch {
	case img.GetDisk() != nil:
		arts = append(arts, named{"image.disk.file", img.GetDisk().GetFile()})
	case img.GetNetboot() != nil:
		arts = append(arts, named{"image.netboot.kernel", img.GetNetboot().GetKernel()})
		if img.GetNetboot().GetInitrd() != nil {
			arts = append(arts, named{"image.netboot.initrd", img.GetNetboot().GetInitrd()})
		}
	}
	for _, n := range arts {
		if n.a == nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s is missing", n.field))
		}
		u, err := url.Parse(n.a.GetUrl())
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https"):
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.url: %q is not an http or https URL", n.field, n.a.GetUrl()))
		case u.Host == "":
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.url: %q names no host", n.field, n.a.GetUrl()))
		case u.User != nil:
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.url: carries credentials (user@host), which every reader of the image would see; serve the file without them", n.field))
		case u.Fragment != "":
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.url: has a #fragment, which is never sent to the server; remove it", n.field))
		}
	}
	return nil
}

// GetImage returns one image.
func (s *ImageService) GetImage(ctx context.Context, req *connect.Request[instancev1.GetImageRequest]) (*connect.Response[instancev1.GetImageResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	img, err := s.store.Client.Image.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, imageNotFound(id)
	} else if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	out, err := ImageToProto(img)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.GetImageResponse{Image: out}), nil
}

// ListImages lists images by name, then version (in string order).
func (s *ImageService) ListImages(ctx context.Context, req *connect.Request[instancev1.ListImagesRequest]) (*connect.Response[instancev1.ListImagesResponse], error) {
	msg := req.Msg
	var preds []predicate.Image
	if msg.GetName() != "" {
		preds = append(preds, image.Name(msg.GetName()))
	}
	if !msg.GetIncludeDeprecated() {
		preds = append(preds, image.Deprecated(false))
	}
	fp := pagetoken.Filter(msg.GetName(), fmt.Sprint(msg.GetIncludeDeprecated()))
	after, err := pagetoken.Decode(msg.GetPageToken(), fp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if after != "" {
		var key [2]string
		if err := json.Unmarshal([]byte(after), &key); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, pagetoken.ErrInvalid)
		}
		preds = append(preds, image.Or(image.NameGT(key[0]), image.And(image.Name(key[0]), image.VersionGT(key[1]))))
	}
	size := pagetoken.Size(msg.GetPageSize())
	imgs, err := s.store.Client.Image.Query().Where(preds...).
		Order(ent.Asc(image.FieldName), ent.Asc(image.FieldVersion)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	resp := &instancev1.ListImagesResponse{}
	if len(imgs) > size {
		imgs = imgs[:size]
		last := imgs[size-1]
		key, _ := json.Marshal([2]string{last.Name, last.Version}) // cannot fail for strings
		resp.NextPageToken = pagetoken.Encode(string(key), fp)
	}
	for _, img := range imgs {
		out, err := ImageToProto(img)
		if err != nil {
			return nil, err
		}
		resp.Images = append(resp.Images, out)
	}
	return connect.NewResponse(resp), nil
}

// DeprecateImage marks an image deprecated, or takes that back; setting
// what it is already changes nothing.
func (s *ImageService) DeprecateImage(ctx context.Context, req *connect.Request[instancev1.DeprecateImageRequest]) (*connect.Response[instancev1.DeprecateImageResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	var img *ent.Image
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		img, err = tx.Image.Get(ctx, id)
		if ent.IsNotFound(err) {
			return imageNotFound(id)
		} else if err != nil {
			return fmt.Errorf("read image: %w", err)
		}
		if img.Deprecated == req.Msg.GetDeprecated() {
			return nil
		}
		img, err = tx.Image.UpdateOne(img).SetDeprecated(req.Msg.GetDeprecated()).SetUpdateTime(store.Now()).Save(ctx)
		if err != nil {
			return fmt.Errorf("update image: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out, err := ImageToProto(img)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.DeprecateImageResponse{Image: out}), nil
}

// DeleteImage deletes an image that no instance uses but released or
// failed ones, which keep no image afterwards (instances.image_id is set
// to NULL by the database).
func (s *ImageService) DeleteImage(ctx context.Context, req *connect.Request[instancev1.DeleteImageRequest]) (*connect.Response[instancev1.DeleteImageResponse], error) {
	id, err := ids.Parse("id", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx *ent.Tx) error {
		// Locked first: an instance created meanwhile waits for the
		// delete (its insert locks the image for its foreign key), then
		// fails on the missing image.
		img, err := store.ForUpdate(s.store, tx.Image.Query().Where(image.ID(id))).Only(ctx)
		if ent.IsNotFound(err) {
			return imageNotFound(id)
		} else if err != nil {
			return fmt.Errorf("read image: %w", err)
		}
		user, err := tx.Instance.Query().Where(instance.ImageID(id), instance.StateIn(activeStates...)).
			Order(ent.Asc(instance.FieldCreateTime)).First(ctx)
		switch {
		case err == nil:
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("image %s %s is used by instance %s (%s, %s); delete the instances that use it and wait until they are released, or deprecate the image instead",
					img.Name, img.Version, user.ID, user.Hostname, user.State))
		case !ent.IsNotFound(err):
			return fmt.Errorf("read instances of image: %w", err)
		}
		if err := tx.Image.DeleteOne(img).Exec(ctx); err != nil {
			return fmt.Errorf("delete image: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&instancev1.DeleteImageResponse{}), nil
}

func imageNotFound(id uuid.UUID) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("image %s not found", id))
}

// forShare makes q lock the rows it reads against deletion until the
// transaction ends, on PostgreSQL; the embedded store's transactions are
// serialised already.
func forShare(st *store.Store, q *ent.ImageQuery) *ent.ImageQuery {
	if st.Dialect != dialect.Postgres {
		return q
	}
	return q.ForShare()
}
