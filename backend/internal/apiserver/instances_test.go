package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/instances"
	"github.com/carbide-dev/carbide/backend/internal/ipam"
	"github.com/carbide-dev/carbide/backend/internal/lifecycle"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent"
	entinstance "github.com/carbide-dev/carbide/ent/instance"
	"github.com/carbide-dev/carbide/ent/lease"
	"github.com/carbide-dev/carbide/ent/machine"
	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	watchv1 "github.com/carbide-dev/carbide/gen/carbide/watch/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

const (
	provisioningInst = instancev1.InstanceState_INSTANCE_STATE_PROVISIONING
	releasingInst    = instancev1.InstanceState_INSTANCE_STATE_RELEASING
	releasedInst     = instancev1.InstanceState_INSTANCE_STATE_RELEASED
	gib              = uint64(1) << 30
)

// diskImage is a raw disk image named name, version version.
func diskImage(name, version string) *instancev1.Image {
	return &instancev1.Image{
		Name: name, Version: version, Architecture: "amd64", Description: "test image",
		Firmware: []instancev1.Firmware{instancev1.Firmware_FIRMWARE_UEFI, instancev1.Firmware_FIRMWARE_BIOS},
		Boot: &instancev1.Image_Disk{Disk: &instancev1.DiskImage{
			File: &instancev1.Artifact{
				Url:    "http://images.example/" + name + "-" + version + ".raw.zst",
				Sha256: strings.Repeat("ab", 32), SizeBytes: 2 * int64(gib),
			},
			Format: instancev1.DiskFormat_DISK_FORMAT_RAW, Compression: instancev1.Compression_COMPRESSION_ZSTD,
		}},
	}
}

// createImage registers an image and fails t if that does not work.
func createImage(t testing.TB, e *env, img *instancev1.Image) *instancev1.Image {
	t.Helper()
	resp, err := e.Images.CreateImage(t.Context(), connect.NewRequest(&instancev1.CreateImageRequest{Image: img}))
	if err != nil {
		t.Fatalf("CreateImage(%s %s): %v", img.GetName(), img.GetVersion(), err)
	}
	return resp.Msg.GetImage()
}

// hardware is what a test machine reports.
type hardware struct {
	labels map[string]string
	cpus   uint32
	memory uint64
	disks  []uint64
	// segment, if set, is where its NIC is leased an address.
	segment string
}

// readyMachine registers machine i (MAC testMAC(i)) with the hardware h,
// and moves it to Ready as its agent's report would.
func readyMachine(t *testing.T, e *env, i int, h hardware) *machinev1.Machine {
	t.Helper()
	m := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(i)}, Labels: h.labels})
	if h.cpus > 0 || h.memory > 0 || len(h.disks) > 0 {
		inv := &machinev1.Inventory{Cpu: &machinev1.CPUInfo{Threads: h.cpus}, MemoryBytes: h.memory}
		for k, size := range h.disks {
			inv.Disks = append(inv.Disks, &machinev1.Disk{Name: fmt.Sprintf("sd%c", 'a'+k), SizeBytes: size})
		}
		raw, err := proto.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Store.Client.Machine.UpdateOneID(uuid.MustParse(m.GetId())).SetInventory(raw).Exec(t.Context()); err != nil {
			t.Fatalf("set inventory: %v", err)
		}
	}
	if h.segment != "" {
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: h.segment, Mac: testMAC(i)})
	}
	moveMachine(t, e, m.GetId(), machine.StateInventoried, machine.StateReady)
	return getMachine(t, e, m.GetId())
}

// createInstance creates an instance and fails t if that does not work.
func createInstance(t testing.TB, e *env, req *instancev1.CreateInstanceRequest) *instancev1.Instance {
	t.Helper()
	resp, err := e.Instances.CreateInstance(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateInstance(%s): %v", req.GetHostname(), err)
	}
	return resp.Msg.GetInstance()
}

// onMachine is a CreateInstanceRequest for machine id.
func onMachine(hostname, imageID, id string) *instancev1.CreateInstanceRequest {
	return &instancev1.CreateInstanceRequest{Hostname: hostname, ImageId: imageID,
		Target: &instancev1.CreateInstanceRequest_MachineId{MachineId: id}}
}

// bySelector is a CreateInstanceRequest for any machine sel matches.
func bySelector(hostname, imageID string, sel *instancev1.Selector) *instancev1.CreateInstanceRequest {
	return &instancev1.CreateInstanceRequest{Hostname: hostname, ImageId: imageID,
		Target: &instancev1.CreateInstanceRequest_Selector{Selector: sel}}
}

// setInstanceState sets an instance's state straight in the store, as the
// lifecycle controller would.
func setInstanceState(t *testing.T, e *env, id string, st entinstance.State) {
	t.Helper()
	if err := e.Store.Client.Instance.UpdateOneID(uuid.MustParse(id)).SetState(st).Exec(t.Context()); err != nil {
		t.Fatalf("set instance state: %v", err)
	}
}

// wantTask fails t unless machine id's task, as stored, is power_on for
// instance inst, started just now with the default timeout, and wipes
// with mode (none if empty).
func wantTask(t *testing.T, e *env, id, inst string, mode machine.TaskWipeMode) {
	t.Helper()
	m, err := e.Store.Client.Machine.Get(t.Context(), uuid.MustParse(id))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case m.TaskStep == nil || *m.TaskStep != lifecycle.StepPowerOn:
		t.Errorf("machine's task step = %v, want %s", m.TaskStep, lifecycle.StepPowerOn)
	case m.TaskInstanceID == nil || m.TaskInstanceID.String() != inst:
		t.Errorf("machine's task serves instance %v, want %s", m.TaskInstanceID, inst)
	case m.TaskStartTime == nil || m.TaskDeadline == nil || m.TaskDeadline.Sub(*m.TaskStartTime) != lifecycle.DefaultTimeouts.PowerOn ||
		time.Since(*m.TaskStartTime) > time.Minute:
		t.Errorf("machine's task runs from %v to %v, want from now for %s", m.TaskStartTime, m.TaskDeadline, lifecycle.DefaultTimeouts.PowerOn)
	case mode == "" && m.TaskWipeMode != nil, mode != "" && (m.TaskWipeMode == nil || *m.TaskWipeMode != mode):
		t.Errorf("machine's task wipe mode = %v, want %q", m.TaskWipeMode, mode)
	}
}

// leaseOf reads the lease of a MAC straight from the store.
func leaseOf(t *testing.T, e *env, mac string) *ent.Lease {
	t.Helper()
	l, err := e.Store.Client.Lease.Query().Where(lease.MAC(mac)).Only(t.Context())
	if err != nil {
		t.Fatalf("read lease of %s: %v", mac, err)
	}
	return l
}

func TestImages(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		deb12 := createImage(t, e, diskImage("debian", "12"))
		if deb12.GetId() == "" || deb12.GetDeprecated() || deb12.GetCreateTime() == nil {
			t.Errorf("created image = %v", deb12)
		}
		want := diskImage("debian", "12")
		want.Id, want.CreateTime, want.UpdateTime = deb12.GetId(), deb12.GetCreateTime(), deb12.GetUpdateTime()
		if diff := cmp.Diff(want, deb12, protocmp.Transform()); diff != "" {
			t.Errorf("created image (-want +got):\n%s", diff)
		}
		got, err := e.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: deb12.GetId()}))
		if err != nil {
			t.Fatalf("GetImage: %v", err)
		}
		if diff := cmp.Diff(deb12, got.Msg.GetImage(), protocmp.Transform()); diff != "" {
			t.Errorf("GetImage (-created +got):\n%s", diff)
		}
		netboot := &instancev1.Image{Name: "alpine", Version: "3.20", Architecture: "amd64",
			Firmware: []instancev1.Firmware{instancev1.Firmware_FIRMWARE_BIOS},
			Boot: &instancev1.Image_Netboot{Netboot: &instancev1.Netboot{
				Kernel:  &instancev1.Artifact{Url: "https://boot.example/vmlinuz", Sha256: strings.Repeat("01", 32)},
				Initrd:  &instancev1.Artifact{Url: "https://boot.example/initrd", Sha256: strings.Repeat("02", 32)},
				Cmdline: "console=ttyS0 quiet",
			}}}
		alpine := createImage(t, e, netboot)
		if alpine.GetNetboot().GetCmdline() != "console=ttyS0 quiet" {
			t.Errorf("netboot image = %v", alpine)
		}
		// A disk image without compression is stored as COMPRESSION_NONE.
		plain := diskImage("debian", "11")
		plain.GetDisk().Compression = instancev1.Compression_COMPRESSION_UNSPECIFIED
		deb11 := createImage(t, e, plain)
		if deb11.GetDisk().GetCompression() != instancev1.Compression_COMPRESSION_NONE {
			t.Errorf("compression = %v, want NONE", deb11.GetDisk().GetCompression())
		}
		deb13 := createImage(t, e, diskImage("debian", "13"))

		// Deprecation is idempotent, and can be taken back.
		for range 2 {
			resp, err := e.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: deb11.GetId(), Deprecated: true}))
			if err != nil || !resp.Msg.GetImage().GetDeprecated() {
				t.Fatalf("DeprecateImage: %v, %v", resp, err)
			}
		}
		if _, err := e.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: deb13.GetId(), Deprecated: true})); err != nil {
			t.Fatalf("DeprecateImage: %v", err)
		}
		if resp, err := e.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: deb13.GetId()})); err != nil || resp.Msg.GetImage().GetDeprecated() {
			t.Fatalf("DeprecateImage(false): %v, %v", resp, err)
		}

		names := func(req *instancev1.ListImagesRequest) []string {
			t.Helper()
			var out []string
			for range 20 {
				resp, err := e.Images.ListImages(ctx, connect.NewRequest(req))
				if err != nil {
					t.Fatalf("ListImages: %v", err)
				}
				if req.GetPageSize() > 0 && len(resp.Msg.GetImages()) > int(req.GetPageSize()) {
					t.Fatalf("ListImages returned %d images, more than page_size %d", len(resp.Msg.GetImages()), req.GetPageSize())
				}
				for _, img := range resp.Msg.GetImages() {
					out = append(out, img.GetName()+" "+img.GetVersion())
				}
				if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
					return out
				}
			}
			t.Fatal("ListImages never ended")
			return nil
		}
		for name, tc := range map[string]struct {
			req  *instancev1.ListImagesRequest
			want []string
		}{
			"all but deprecated":   {&instancev1.ListImagesRequest{}, []string{"alpine 3.20", "debian 12", "debian 13"}},
			"one a page":           {&instancev1.ListImagesRequest{PageSize: 1}, []string{"alpine 3.20", "debian 12", "debian 13"}},
			"with deprecated":      {&instancev1.ListImagesRequest{IncludeDeprecated: true, PageSize: 2}, []string{"alpine 3.20", "debian 11", "debian 12", "debian 13"}},
			"by name":              {&instancev1.ListImagesRequest{Name: "debian", IncludeDeprecated: true, PageSize: 1}, []string{"debian 11", "debian 12", "debian 13"}},
			"by name, none":        {&instancev1.ListImagesRequest{Name: "ubuntu"}, nil},
			"by name, deprecated?": {&instancev1.ListImagesRequest{Name: "debian"}, []string{"debian 12", "debian 13"}},
		} {
			if diff := cmp.Diff(tc.want, names(tc.req)); diff != "" {
				t.Errorf("%s: images (-want +got):\n%s", name, diff)
			}
		}

		page, err := e.Images.ListImages(ctx, connect.NewRequest(&instancev1.ListImagesRequest{PageSize: 1}))
		if err != nil {
			t.Fatal(err)
		}
		image := func(mutate func(*instancev1.Image)) func(t *testing.T) error {
			return func(t *testing.T) error {
				img := diskImage("bad", "1")
				mutate(img)
				_, err := e.Images.CreateImage(t.Context(), connect.NewRequest(&instancev1.CreateImageRequest{Image: img}))
				return err
			}
		}
		invalid := connect.CodeInvalidArgument
		// In a group, so that the refusals run before what follows.
		t.Run("refused", func(t *testing.T) {
			runBadRequests(t, map[string]badRequest{
				"bad sha256":   {image(func(i *instancev1.Image) { i.GetDisk().GetFile().Sha256 = strings.Repeat("AB", 32) }), invalid, "sha256"},
				"short sha256": {image(func(i *instancev1.Image) { i.GetDisk().GetFile().Sha256 = "abc" }), invalid, "sha256"},
				"qcow2 compressed": {image(func(i *instancev1.Image) {
					i.GetDisk().Format = instancev1.DiskFormat_DISK_FORMAT_QCOW2
					i.GetDisk().Compression = instancev1.Compression_COMPRESSION_GZIP
				}), invalid, "qcow2"},
				"no format":        {image(func(i *instancev1.Image) { i.GetDisk().Format = 0 }), invalid, "format"},
				"no boot":          {image(func(i *instancev1.Image) { i.Boot = nil }), invalid, "boot"},
				"no firmware":      {image(func(i *instancev1.Image) { i.Firmware = nil }), invalid, "firmware"},
				"ftp url":          {image(func(i *instancev1.Image) { i.GetDisk().GetFile().Url = "ftp://images.example/x.raw" }), invalid, "url"},
				"url without host": {image(func(i *instancev1.Image) { i.GetDisk().GetFile().Url = "http:///x.raw" }), invalid, "url"},
				"url credentials":  {image(func(i *instancev1.Image) { i.GetDisk().GetFile().Url = "https://me:secret@images.example/x.raw" }), invalid, "credentials"},
				"bad name":         {image(func(i *instancev1.Image) { i.Name = "Debian" }), invalid, "name"},
				"duplicate": {func(t *testing.T) error {
					_, err := e.Images.CreateImage(t.Context(), connect.NewRequest(&instancev1.CreateImageRequest{Image: diskImage("debian", "12")}))
					return err
				}, connect.CodeAlreadyExists, "debian version 12"},
				"get unknown": {func(t *testing.T) error {
					_, err := e.Images.GetImage(t.Context(), connect.NewRequest(&instancev1.GetImageRequest{Id: uuid.Nil.String()}))
					return err
				}, connect.CodeNotFound, uuid.Nil.String()},
				"token of other filters": {func(t *testing.T) error {
					_, err := e.Images.ListImages(t.Context(), connect.NewRequest(&instancev1.ListImagesRequest{Name: "debian", PageToken: page.Msg.GetNextPageToken()}))
					return err
				}, invalid, "page_token"},
				"delete unknown": {func(t *testing.T) error {
					_, err := e.Images.DeleteImage(t.Context(), connect.NewRequest(&instancev1.DeleteImageRequest{Id: uuid.Nil.String()}))
					return err
				}, connect.CodeNotFound, uuid.Nil.String()},
			})
		})

		// An image in use cannot be deleted; once its instances are
		// released or failed it can, and they keep no image.
		m := readyMachine(t, e, 1, hardware{})
		inst := createInstance(t, e, onMachine("web-1", deb12.GetId(), m.GetId()))
		_, err = e.Images.DeleteImage(ctx, connect.NewRequest(&instancev1.DeleteImageRequest{Id: deb12.GetId()}))
		wantError(t, err, connect.CodeFailedPrecondition, inst.GetId())
		setInstanceState(t, e, inst.GetId(), entinstance.StateReleased)
		if _, err := e.Images.DeleteImage(ctx, connect.NewRequest(&instancev1.DeleteImageRequest{Id: deb12.GetId()})); err != nil {
			t.Fatalf("DeleteImage of an image only released instances used: %v", err)
		}
		after, err := e.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: inst.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if after.Msg.GetInstance().GetImageId() != "" {
			t.Errorf("instance of a deleted image has image_id %q, want empty", after.Msg.GetInstance().GetImageId())
		}
		_, err = e.Images.GetImage(ctx, connect.NewRequest(&instancev1.GetImageRequest{Id: deb12.GetId()}))
		wantError(t, err, connect.CodeNotFound, deb12.GetId())
	})
}

func TestCreateInstanceOnMachine(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		seg := createSegment(t, e, rack1())
		img := createImage(t, e, diskImage("debian", "12"))
		m := readyMachine(t, e, 1, hardware{segment: seg.GetId()})
		leased := m.GetInterfaces()[0].GetAddress()
		if leased == "" {
			t.Fatalf("machine has no address: %v", m)
		}
		req := onMachine("web-1.example.net", img.GetId(), m.GetId())
		req.Labels = map[string]string{"team": "web"}
		req.SshAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0 me@example"}
		req.UserData = []byte("#cloud-config\n")
		before := time.Now()
		inst := createInstance(t, e, req)
		if inst.GetState() != provisioningInst || inst.GetMachineId() != m.GetId() || inst.GetImageId() != img.GetId() ||
			inst.GetHostname() != "web-1.example.net" || inst.GetAddress() != leased || inst.GetLabels()["team"] != "web" ||
			inst.GetWipeMode() != instancev1.WipeMode_WIPE_MODE_QUICK || string(inst.GetUserData()) != "#cloud-config\n" ||
			len(inst.GetSshAuthorizedKeys()) != 1 || inst.GetSelector() != nil {
			t.Errorf("instance = %v", inst)
		}
		task := inst.GetTask()
		if task.GetStep() != lifecycle.StepPowerOn || task.GetInstanceId() != inst.GetId() {
			t.Errorf("instance task = %v, want power_on for the instance", task)
		}
		// The configured timeout (see newEnv: none, so the default).
		if d := task.GetDeadline().AsTime().Sub(task.GetStartTime().AsTime()); d != lifecycle.DefaultTimeouts.PowerOn {
			t.Errorf("task deadline is %s after its start, want %s", d, lifecycle.DefaultTimeouts.PowerOn)
		}
		if task.GetStartTime().AsTime().Before(before.Add(-time.Second)) {
			t.Errorf("task started at %s, before the call", task.GetStartTime().AsTime())
		}

		if got := getMachine(t, e, m.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_PROVISIONING {
			t.Errorf("machine after CreateInstance = %v", got)
		}
		wantTask(t, e, m.GetId(), inst.GetId(), "")
		history := transitionsOf(t, e, m.GetId(), 0)
		last := history[len(history)-1]
		if last.GetFromState() != machinev1.MachineState_MACHINE_STATE_READY || last.GetToState() != machinev1.MachineState_MACHINE_STATE_PROVISIONING ||
			!strings.Contains(last.GetReason(), inst.GetId()) || !strings.Contains(last.GetReason(), "web-1.example.net") || last.GetActor() != adminID {
			t.Errorf("last transition = %v", last)
		}

		// The address is held while the instance holds the machine.
		if l := leaseOf(t, e, testMAC(1)); !l.ExpireTime.Equal(ipam.HeldUntil) || l.Address != leased {
			t.Errorf("lease = %s until %s, want %s held until %s", l.Address, l.ExpireTime, leased, ipam.HeldUntil)
		}

		// Read back, one by one and listed.
		read, err := e.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: inst.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(inst, read.Msg.GetInstance(), protocmp.Transform()); diff != "" {
			t.Errorf("GetInstance (-created +got):\n%s", diff)
		}

		// The audit record names the instance and the machine.
		recs, err := e.Audit.ListAuditRecords(ctx, connect.NewRequest(&auditv1.ListAuditRecordsRequest{Procedure: "/carbide.instance.v1.InstanceService/CreateInstance"}))
		if err != nil {
			t.Fatal(err)
		}
		if rs := recs.Msg.GetRecords(); len(rs) != 1 || !slices.Contains(rs[0].GetResourceIds(), inst.GetId()) ||
			!slices.Contains(rs[0].GetResourceIds(), m.GetId()) || rs[0].GetCode() != "ok" {
			t.Errorf("audit records = %v", rs)
		}

		other := readyMachine(t, e, 2, hardware{})
		discovered := createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(3)}})
		held := readyMachine(t, e, 4, hardware{})
		if _, err := e.Machines.UpdateMachine(ctx, connect.NewRequest(&machinev1.UpdateMachineRequest{
			Machine: &machinev1.Machine{Id: held.GetId(), Maintenance: true}, UpdateMask: mask("maintenance"),
		})); err != nil {
			t.Fatal(err)
		}
		old := createImage(t, e, diskImage("debian", "10"))
		if _, err := e.Images.DeprecateImage(ctx, connect.NewRequest(&instancev1.DeprecateImageRequest{Id: old.GetId(), Deprecated: true})); err != nil {
			t.Fatal(err)
		}
		create := func(req *instancev1.CreateInstanceRequest) func(t *testing.T) error {
			return func(t *testing.T) error {
				_, err := e.Instances.CreateInstance(t.Context(), connect.NewRequest(req))
				return err
			}
		}
		failed := connect.CodeFailedPrecondition
		// In a group, so that the refusals run before what follows.
		t.Run("refused", func(t *testing.T) {
			runBadRequests(t, map[string]badRequest{
				"machine taken":       {create(onMachine("web-2", img.GetId(), m.GetId())), failed, "provisioning"},
				"machine discovered":  {create(onMachine("web-2", img.GetId(), discovered.GetId())), failed, "discovered"},
				"machine maintenance": {create(onMachine("web-2", img.GetId(), held.GetId())), failed, "maintenance"},
				"machine unknown":     {create(onMachine("web-2", img.GetId(), uuid.Nil.String())), failed, uuid.Nil.String()},
				"image deprecated":    {create(onMachine("web-2", old.GetId(), other.GetId())), failed, "deprecated"},
				"image unknown":       {create(onMachine("web-2", uuid.Nil.String(), other.GetId())), failed, uuid.Nil.String()},
				"bad hostname":        {create(onMachine("Web_2", img.GetId(), other.GetId())), connect.CodeInvalidArgument, "hostname"},
				"no target": {create(&instancev1.CreateInstanceRequest{Hostname: "web-2", ImageId: img.GetId()}),
					connect.CodeInvalidArgument, "target"},
			})
		})
		if got := getMachine(t, e, other.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_READY {
			t.Errorf("a refused request moved machine %s to %s", other.GetId(), got.GetState())
		}
	})
}

func TestCreateInstanceBySelector(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		seg1 := createSegment(t, e, rack1())
		seg2 := createSegment(t, e, &networkv1.Segment{Name: "rack2", Prefix: "10.1.0.0/24",
			Ranges: []*networkv1.AddressRange{{Start: "10.1.0.10", End: "10.1.0.20"}}})
		img := createImage(t, e, diskImage("debian", "12"))
		small := readyMachine(t, e, 1, hardware{labels: map[string]string{"rack": "r1", "gpu": "no"},
			cpus: 8, memory: 16 * gib, disks: []uint64{100 * gib}, segment: seg1.GetId()})
		wide := readyMachine(t, e, 2, hardware{labels: map[string]string{"rack": "r1"},
			cpus: 32, memory: 64 * gib, disks: []uint64{100 * gib, 2000 * gib}, segment: seg2.GetId()})
		big := readyMachine(t, e, 3, hardware{labels: map[string]string{"rack": "r2"},
			cpus: 64, memory: 256 * gib, disks: []uint64{4000 * gib}, segment: seg1.GetId()})
		bare := readyMachine(t, e, 4, hardware{labels: map[string]string{"rack": "r3"}})
		createMachine(t, e, &machinev1.CreateMachineRequest{Macs: []string{testMAC(5)}, Labels: map[string]string{"rack": "r1"}}) // not Ready

		// Each instance has its own hostname: instances in one DNS domain
		// cannot share one.
		n := 0
		create := func(sel *instancev1.Selector) (*instancev1.Instance, error) {
			n++
			resp, err := e.Instances.CreateInstance(t.Context(), connect.NewRequest(bySelector(fmt.Sprintf("node-%d", n), img.GetId(), sel)))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetInstance(), nil
		}
		// Selectors no machine matches take nothing.
		for name, sel := range map[string]*instancev1.Selector{
			"labels and cpus":   {Labels: map[string]string{"rack": "r1"}, MinCpus: 64},
			"disk":              {MinDiskBytes: 5000 * gib},
			"memory":            {MinMemoryBytes: 512 * gib},
			"label and segment": {Labels: map[string]string{"rack": "r2"}, SegmentId: seg2.GetId()},
			"unknown label":     {Labels: map[string]string{"rack": "r9"}},
			"two labels":        {Labels: map[string]string{"rack": "r1", "gpu": "yes"}},
		} {
			_, err := create(sel)
			wantError(t, err, connect.CodeResourceExhausted, "4 machines are Ready")
			if t.Failed() {
				t.Fatalf("selector %q", name)
			}
		}
		// Each selector takes the one machine it matches that is free.
		for _, step := range []struct {
			sel  *instancev1.Selector
			want *machinev1.Machine
		}{
			{&instancev1.Selector{Labels: map[string]string{"rack": "r1"}, MinDiskBytes: 1000 * gib}, wide},
			{&instancev1.Selector{MinCpus: 48, MinMemoryBytes: 128 * gib}, big},
			{&instancev1.Selector{SegmentId: seg1.GetId()}, small}, // big is taken
			{&instancev1.Selector{}, bare},
		} {
			inst, err := create(step.sel)
			if err != nil {
				t.Fatalf("CreateInstance(%v): %v", step.sel, err)
			}
			if inst.GetMachineId() != step.want.GetId() {
				t.Errorf("selector %v chose machine %s, want %s", step.sel, inst.GetMachineId(), step.want.GetId())
			}
			if diff := cmp.Diff(step.sel, inst.GetSelector(), protocmp.Transform()); diff != "" {
				t.Errorf("instance's selector (-asked +got):\n%s", diff)
			}
		}
		_, err := create(&instancev1.Selector{})
		wantError(t, err, connect.CodeResourceExhausted, "0 machines are Ready")
	})
}

func TestCreateInstanceIdempotent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		img := createImage(t, e, diskImage("debian", "12"))
		readyMachine(t, e, 1, hardware{labels: map[string]string{"pool": "a"}})
		readyMachine(t, e, 2, hardware{labels: map[string]string{"pool": "a"}})
		req := bySelector("node-1", img.GetId(), &instancev1.Selector{Labels: map[string]string{"pool": "a"}})
		req.RequestId = "tf-0001"
		first := createInstance(t, e, req)
		again := createInstance(t, e, req)
		if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
			t.Errorf("a repeated request_id returned another instance (-first +again):\n%s", diff)
		}
		if first.GetRequestId() != "tf-0001" {
			t.Errorf("request_id = %q", first.GetRequestId())
		}
		if n := e.Store.Client.Instance.Query().CountX(t.Context()); n != 1 {
			t.Errorf("%d instances after a repeated request, want 1", n)
		}
		other := proto.Clone(req).(*instancev1.CreateInstanceRequest)
		other.Hostname = "node-2"
		_, err := e.Instances.CreateInstance(t.Context(), connect.NewRequest(other))
		wantError(t, err, connect.CodeAlreadyExists, "request_id")
		other = proto.Clone(req).(*instancev1.CreateInstanceRequest)
		other.GetSelector().MinCpus = 2
		_, err = e.Instances.CreateInstance(t.Context(), connect.NewRequest(other))
		wantError(t, err, connect.CodeAlreadyExists, first.GetId())
	})
}

func TestDeleteInstance(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		img := createImage(t, e, diskImage("debian", "12"))
		m := readyMachine(t, e, 1, hardware{})
		inst := createInstance(t, e, onMachine("web-1", img.GetId(), m.GetId()))
		// Running: its machine is assigned.
		moveMachine(t, e, m.GetId(), machine.StateAssigned)
		setInstanceState(t, e, inst.GetId(), entinstance.StateRunning)

		resp, err := e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{
			Id: inst.GetId(), WipeMode: instancev1.WipeMode_WIPE_MODE_FULL,
		}))
		if err != nil {
			t.Fatalf("DeleteInstance: %v", err)
		}
		rel := resp.Msg.GetInstance()
		if rel.GetState() != releasingInst || rel.GetWipeMode() != instancev1.WipeMode_WIPE_MODE_FULL ||
			rel.GetTask().GetStep() != lifecycle.StepPowerOn || rel.GetTask().GetInstanceId() != inst.GetId() {
			t.Errorf("deleted instance = %v", rel)
		}
		if got := getMachine(t, e, m.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_CLEANING {
			t.Errorf("machine after DeleteInstance = %v", got)
		}
		wantTask(t, e, m.GetId(), inst.GetId(), machine.TaskWipeModeFull)
		history := transitionsOf(t, e, m.GetId(), 0)
		if last := history[len(history)-1]; last.GetToState() != machinev1.MachineState_MACHINE_STATE_CLEANING ||
			!strings.Contains(last.GetReason(), "released") || last.GetActor() != adminID {
			t.Errorf("last transition = %v", last)
		}
		// Again: returned as it is.
		again, err := e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: inst.GetId()}))
		if err != nil {
			t.Fatalf("DeleteInstance again: %v", err)
		}
		if diff := cmp.Diff(rel, again.Msg.GetInstance(), protocmp.Transform()); diff != "" {
			t.Errorf("second DeleteInstance (-first +second):\n%s", diff)
		}
		if n := len(transitionsOf(t, e, m.GetId(), 0)); n != len(history) {
			t.Errorf("a second DeleteInstance moved the machine again: %d transitions, then %d", len(history), n)
		}

		// Provisioning: its machine goes from provisioning to cleaning,
		// with the instance's wipe mode.
		p := readyMachine(t, e, 2, hardware{})
		pi := createInstance(t, e, onMachine("web-2", img.GetId(), p.GetId()))
		if _, err := e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: pi.GetId()})); err != nil {
			t.Fatalf("DeleteInstance of a provisioning instance: %v", err)
		}
		if got := getMachine(t, e, p.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_CLEANING {
			t.Errorf("machine of a released provisioning instance is %s", got.GetState())
		}
		wantTask(t, e, p.GetId(), pi.GetId(), machine.TaskWipeModeQuick)

		// A machine in maintenance is left to the operator.
		h := readyMachine(t, e, 3, hardware{})
		hi := createInstance(t, e, onMachine("web-3", img.GetId(), h.GetId()))
		moveMachine(t, e, h.GetId(), machine.StateMaintenance)
		resp, err = e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: hi.GetId()}))
		if err != nil || resp.Msg.GetInstance().GetState() != releasingInst {
			t.Fatalf("DeleteInstance with its machine in maintenance: %v, %v", resp, err)
		}
		if got := getMachine(t, e, h.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_MAINTENANCE {
			t.Errorf("machine in maintenance moved to %s", got.GetState())
		}

		// Failed: Released at once, its address given back.
		seg := createSegment(t, e, rack1())
		f := readyMachine(t, e, 4, hardware{segment: seg.GetId()})
		fi := createInstance(t, e, onMachine("web-4", img.GetId(), f.GetId()))
		setInstanceState(t, e, fi.GetId(), entinstance.StateFailed)
		resp, err = e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: fi.GetId()}))
		if err != nil || resp.Msg.GetInstance().GetState() != releasedInst {
			t.Fatalf("DeleteInstance of a failed instance: %v, %v", resp, err)
		}
		if l := leaseOf(t, e, testMAC(4)); ipam.Held(l.ExpireTime) {
			t.Errorf("the released instance's lease is still held")
		}

		_, err = e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: uuid.Nil.String()}))
		wantError(t, err, connect.CodeNotFound, uuid.Nil.String())
	})
}

func TestInstanceWipeModeAndTimeoutFromConfig(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "embedded", "connect", envOptions{configure: func(c *Config) {
		c.WipeMode = "full"
		c.Timeouts.PowerOn = 7 * time.Minute
	}})
	img := createImage(t, e, diskImage("debian", "12"))
	m := readyMachine(t, e, 1, hardware{})
	inst := createInstance(t, e, onMachine("web-1", img.GetId(), m.GetId()))
	if inst.GetWipeMode() != instancev1.WipeMode_WIPE_MODE_FULL {
		t.Errorf("wipe mode = %s, want the API's --wipe-mode full", inst.GetWipeMode())
	}
	if d := inst.GetTask().GetDeadline().AsTime().Sub(inst.GetTask().GetStartTime().AsTime()); d != 7*time.Minute {
		t.Errorf("power_on deadline %s after its start, want the configured 7m", d)
	}
	req := onMachine("web-2", img.GetId(), readyMachine(t, e, 2, hardware{}).GetId())
	req.WipeMode = instancev1.WipeMode_WIPE_MODE_QUICK
	if got := createInstance(t, e, req); got.GetWipeMode() != instancev1.WipeMode_WIPE_MODE_QUICK {
		t.Errorf("wipe mode = %s, want the request's quick", got.GetWipeMode())
	}
}

func TestListInstances(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		img := createImage(t, e, diskImage("debian", "12"))
		var made []*instancev1.Instance
		for i := range 5 {
			m := readyMachine(t, e, i, hardware{})
			req := onMachine(fmt.Sprintf("node-%d", i), img.GetId(), m.GetId())
			req.Labels = map[string]string{"team": []string{"a", "b"}[i%2]}
			made = append(made, createInstance(t, e, req))
		}
		if _, err := e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: made[1].GetId()})); err != nil {
			t.Fatal(err)
		}
		list := func(req *instancev1.ListInstancesRequest) []string {
			t.Helper()
			var out []string
			for range 20 {
				resp, err := e.Instances.ListInstances(ctx, connect.NewRequest(req))
				if err != nil {
					t.Fatalf("ListInstances: %v", err)
				}
				for _, inst := range resp.Msg.GetInstances() {
					out = append(out, inst.GetHostname())
				}
				if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
					return out
				}
			}
			t.Fatal("ListInstances never ended")
			return nil
		}
		for name, tc := range map[string]struct {
			req  *instancev1.ListInstancesRequest
			want []string
		}{
			"all, newest first": {&instancev1.ListInstancesRequest{}, []string{"node-4", "node-3", "node-2", "node-1", "node-0"}},
			"two a page":        {&instancev1.ListInstancesRequest{PageSize: 2}, []string{"node-4", "node-3", "node-2", "node-1", "node-0"}},
			"releasing":         {&instancev1.ListInstancesRequest{States: []instancev1.InstanceState{releasingInst}}, []string{"node-1"}},
			"provisioning, one a page": {&instancev1.ListInstancesRequest{States: []instancev1.InstanceState{provisioningInst}, PageSize: 1},
				[]string{"node-4", "node-3", "node-2", "node-0"}},
			"label":             {&instancev1.ListInstancesRequest{Labels: map[string]string{"team": "a"}}, []string{"node-4", "node-2", "node-0"}},
			"machine":           {&instancev1.ListInstancesRequest{MachineId: made[3].GetMachineId()}, []string{"node-3"}},
			"hostname":          {&instancev1.ListInstancesRequest{Hostname: "node-3"}, []string{"node-3"}},
			"hostname is exact": {&instancev1.ListInstancesRequest{Hostname: "node"}, nil},
			"hostname and state": {&instancev1.ListInstancesRequest{Hostname: "node-1", States: []instancev1.InstanceState{provisioningInst}},
				nil},
		} {
			if diff := cmp.Diff(tc.want, list(tc.req)); diff != "" {
				t.Errorf("%s: instances (-want +got):\n%s", name, diff)
			}
		}

		// A second instance with the host name of an earlier one: both are
		// listed, one a page, and a page token is bound to the host name.
		again := createInstance(t, e, onMachine("node-3", img.GetId(), readyMachine(t, e, 5, hardware{}).GetId()))
		var got []string
		req := &instancev1.ListInstancesRequest{Hostname: "node-3", PageSize: 1}
		for range 10 {
			resp, err := e.Instances.ListInstances(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatalf("ListInstances(hostname node-3): %v", err)
			}
			for _, inst := range resp.Msg.GetInstances() {
				got = append(got, inst.GetId())
			}
			if got := len(resp.Msg.GetInstances()); got > 1 {
				t.Fatalf("ListInstances(page_size 1) returned %d instances", got)
			}
			if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
				break
			}
			_, err = e.Instances.ListInstances(ctx, connect.NewRequest(&instancev1.ListInstancesRequest{Hostname: "node-2", PageSize: 1, PageToken: req.PageToken}))
			wantError(t, err, connect.CodeInvalidArgument, "page_token")
		}
		if diff := cmp.Diff([]string{again.GetId(), made[3].GetId()}, got); diff != "" {
			t.Errorf("instances named node-3, newest first (-want +got):\n%s", diff)
		}
		_, err := e.Instances.ListInstances(ctx, connect.NewRequest(&instancev1.ListInstancesRequest{Hostname: "Node_3"}))
		wantError(t, err, connect.CodeInvalidArgument, "hostname")
		_, err = e.Instances.ListInstances(ctx, connect.NewRequest(&instancev1.ListInstancesRequest{Hostname: strings.Repeat("a", 254)}))
		wantError(t, err, connect.CodeInvalidArgument, "hostname")
		_, err = e.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: uuid.Nil.String()}))
		wantError(t, err, connect.CodeNotFound, uuid.Nil.String())
	})
}

// TestInstanceAddressHeld checks that the address of an instance's machine
// outlives its lease time: DHCP renewals, a DHCP release and an allocation
// leave it held, and ReleaseAddress gives it back.
func TestInstanceAddressHeld(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		seg := createSegment(t, e, rack1())
		img := createImage(t, e, diskImage("debian", "12"))
		dhcp := e.as(t, "dhcp")
		mac := testMAC(1)
		origin := &dhcpv1.Origin{LocalAddress: "10.0.0.1"}
		first := dhcpLease(t, dhcp, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin})
		moveMachine(t, e, first.GetMachineId(), machine.StateInventoried, machine.StateReady)
		inst := createInstance(t, e, onMachine("web-1", img.GetId(), first.GetMachineId()))
		if inst.GetAddress() != first.GetAddress() {
			t.Fatalf("instance address %q, want the machine's lease %s", inst.GetAddress(), first.GetAddress())
		}
		segLease := time.Duration(e.Store.Client.Segment.GetX(ctx, uuid.MustParse(seg.GetId())).LeaseSeconds) * time.Second

		// The machine boots over the network while it is provisioned.
		for _, extend := range []bool{false, true} {
			again := dhcpLease(t, dhcp, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Extend: extend})
			if again.GetAddress() != first.GetAddress() || again.GetLeaseDuration().AsDuration() > segLease {
				t.Errorf("DHCP (extend %v) answered %s for %s, want %s for at most %s", extend, again.GetAddress(),
					again.GetLeaseDuration().AsDuration(), first.GetAddress(), segLease)
			}
			if l := leaseOf(t, e, mac); !l.ExpireTime.Equal(ipam.HeldUntil) {
				t.Errorf("after a DHCP request (extend %v) the lease expires %s, want held until %s", extend, l.ExpireTime, ipam.HeldUntil)
			}
		}
		allocate(t, e, &networkv1.AllocateAddressRequest{SegmentId: seg.GetId(), Mac: mac})
		if _, err := dhcp.DHCP.Release(ctx, connect.NewRequest(&dhcpv1.ReleaseRequest{Mac: mac, Address: first.GetAddress()})); err != nil {
			t.Fatalf("DHCP Release: %v", err)
		}
		if _, err := dhcp.DHCP.Decline(ctx, connect.NewRequest(&dhcpv1.DeclineRequest{Mac: mac, Address: first.GetAddress()})); err != nil {
			t.Fatalf("DHCP Decline: %v", err)
		}
		if l := leaseOf(t, e, mac); !l.ExpireTime.Equal(ipam.HeldUntil) || l.Address != first.GetAddress() {
			t.Errorf("after an allocation, a release and a decline the lease is %s until %s, want %s held", l.Address, l.ExpireTime, first.GetAddress())
		}

		// The lifecycle controller gives it back.
		stored := e.Store.Client.Instance.GetX(ctx, uuid.MustParse(inst.GetId()))
		before := time.Now()
		for range 2 { // idempotent
			if err := e.Store.InTx(ctx, func(tx *ent.Tx) error { return instances.ReleaseAddress(ctx, tx, stored) }); err != nil {
				t.Fatalf("ReleaseAddress: %v", err)
			}
		}
		l := leaseOf(t, e, mac)
		if ipam.Held(l.ExpireTime) || l.ExpireTime.Before(before.Add(segLease-time.Second)) || l.ExpireTime.After(time.Now().Add(segLease)) {
			t.Errorf("after ReleaseAddress the lease expires %s, want one lease time (%s) from now", l.ExpireTime, segLease)
		}
		// Renewals work as before.
		dhcpLease(t, dhcp, &dhcpv1.LeaseRequest{Mac: mac, Origin: origin, Extend: true})
		if l := leaseOf(t, e, mac); ipam.Held(l.ExpireTime) {
			t.Errorf("a renewal after the release holds the lease again")
		}
	})
}

func TestInstanceAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "embedded", "connect")
	img := createImage(t, e, diskImage("debian", "12"))
	m := readyMachine(t, e, 1, hardware{})
	ctx := t.Context()
	for _, role := range []string{"viewer", "pxe", "dhcp", "dns", "bmc"} {
		c := e.as(t, role)
		_, err := c.Instances.CreateInstance(ctx, connect.NewRequest(onMachine("web-1", img.GetId(), m.GetId())))
		wantError(t, err, connect.CodePermissionDenied, "CreateInstance")
		_, err = c.Images.CreateImage(ctx, connect.NewRequest(&instancev1.CreateImageRequest{Image: diskImage("x", "1")}))
		wantError(t, err, connect.CodePermissionDenied, "CreateImage")
	}
	if _, err := e.as(t, "viewer").Instances.ListInstances(ctx, connect.NewRequest(&instancev1.ListInstancesRequest{})); err != nil {
		t.Errorf("a viewer cannot list instances: %v", err)
	}
	inst := createInstance(t, e.withClients(e.as(t, "operator")), onMachine("web-1", img.GetId(), m.GetId()))
	if inst.GetState() != provisioningInst {
		t.Errorf("operator's instance = %v", inst)
	}
	if got := getMachine(t, e, m.GetId()); got.GetState() != machinev1.MachineState_MACHINE_STATE_PROVISIONING {
		t.Errorf("machine = %s", got.GetState())
	}
}

// withClients returns e with other clients.
func (e *env) withClients(c clients) *env {
	cp := *e
	cp.clients = c
	return &cp
}

func TestWatchInstances(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		img := createImage(t, e, diskImage("debian", "12"))
		kept := createInstance(t, e, onMachine("kept", img.GetId(), readyMachine(t, e, 1, hardware{}).GetId()))
		gone := createInstance(t, e, onMachine("gone", img.GetId(), readyMachine(t, e, 2, hardware{}).GetId()))
		setInstanceState(t, e, gone.GetId(), entinstance.StateReleased)
		keptNow, err := e.Instances.GetInstance(ctx, connect.NewRequest(&instancev1.GetInstanceRequest{Id: kept.GetId()}))
		if err != nil {
			t.Fatal(err)
		}

		w := openWatch(t, e, &watchv1.WatchRequest{Kinds: []watchv1.ResourceKind{instanceKind}})
		evs := w.expect(t,
			event{existingEv, instanceKind, kept.GetId(), keptNow.Msg.GetInstance()},
			event{syncedEv, noKind, "", nil},
		)
		created := createInstance(t, e, onMachine("new", img.GetId(), readyMachine(t, e, 3, hardware{}).GetId()))
		deleted, err := e.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: kept.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, w.expect(t,
			event{createdEv, instanceKind, created.GetId(), created},
			event{updatedEv, instanceKind, kept.GetId(), deleted.Msg.GetInstance()},
		)...)
		// The lifecycle controller records an instance whose machine's
		// step progressed.
		if err := e.Store.InTx(ctx, func(tx *ent.Tx) error {
			if err := tx.Machine.UpdateOneID(uuid.MustParse(created.GetMachineId())).SetTaskDone(5).SetTaskTotal(10).Exec(ctx); err != nil {
				return err
			}
			return instances.NewService(e.Store, lifecycle.Timeouts{}, "").RecordChange(ctx, tx, uuid.MustParse(created.GetId()))
		}); err != nil {
			t.Fatalf("RecordChange: %v", err)
		}
		progressed := proto.Clone(created).(*instancev1.Instance)
		progressed.Task.Done, progressed.Task.Total = 5, 10
		evs = append(evs, w.expect(t, event{updatedEv, instanceKind, created.GetId(), progressed})...)
		checkRevisions(t, evs)
	})
}

// TestCreateInstanceRace sends 50 concurrent CreateInstance calls for 10
// matching machines: exactly 10 succeed, each with its own machine, and the
// others are told no machine is left (RESOURCE_EXHAUSTED). On PostgreSQL
// it runs once on one API server and once on two replicas sharing the
// database.
func TestCreateInstanceRace(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, e *env) {
		raceInstances(t, e, e)
	})
	t.Run("postgres, two replicas", func(t *testing.T) {
		t.Parallel()
		url := pgtest.Database(t)
		e1 := newEnvWith(t, "postgres", "grpc", envOptions{databaseURL: url})
		e2 := newEnvWith(t, "postgres", "connect", envOptions{databaseURL: url})
		raceInstances(t, e1, e2)
	})
}

// raceInstances runs the race of TestCreateInstanceRace, alternating the
// calls between a and b, which share one database.
func raceInstances(t *testing.T, a, b *env) {
	t.Helper()
	const machines, calls = 10, 50
	img := createImage(t, a, diskImage("debian", "12"))
	pool := map[string]string{"pool": "race"}
	want := map[string]bool{}
	for i := range machines {
		want[readyMachine(t, a, i, hardware{labels: pool, cpus: 8, memory: 32 * gib, disks: []uint64{500 * gib}}).GetId()] = true
	}
	// Ready machines the selector does not match must stay Ready.
	other := readyMachine(t, a, machines, hardware{labels: map[string]string{"pool": "other"}, cpus: 8})
	small := readyMachine(t, a, machines+1, hardware{labels: pool, cpus: 2})

	type result struct {
		inst *instancev1.Instance
		err  error
	}
	results := make([]result, calls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := a
			if i%2 == 1 {
				e = b
			}
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp, err := e.Instances.CreateInstance(ctx, connect.NewRequest(bySelector(fmt.Sprintf("race-%d", i), img.GetId(),
				&instancev1.Selector{Labels: pool, MinCpus: 4})))
			results[i] = result{err: err}
			if err == nil {
				results[i].inst = resp.Msg.GetInstance()
			}
		}()
	}
	close(start)
	wg.Wait()

	got := map[string]string{} // machine -> instance
	for i, r := range results {
		switch {
		case r.err == nil:
			m := r.inst.GetMachineId()
			if prev, dup := got[m]; dup {
				t.Errorf("machine %s went to instances %s and %s", m, prev, r.inst.GetId())
			}
			if !want[m] {
				t.Errorf("call %d got machine %s, which the selector does not match", i, m)
			}
			got[m] = r.inst.GetId()
		case connect.CodeOf(r.err) != connect.CodeResourceExhausted:
			t.Errorf("call %d: %v, want success or resource_exhausted", i, r.err)
		}
	}
	if len(got) != machines {
		t.Errorf("%d calls succeeded, want %d (one per machine)", len(got), machines)
	}
	for m := range want {
		if st := getMachine(t, a, m).GetState(); st != machinev1.MachineState_MACHINE_STATE_PROVISIONING {
			t.Errorf("machine %s is %s, want provisioning", m, st)
		}
	}
	for _, m := range []*machinev1.Machine{other, small} {
		if st := getMachine(t, a, m.GetId()).GetState(); st != machinev1.MachineState_MACHINE_STATE_READY {
			t.Errorf("unmatched machine %s is %s, want ready", m.GetId(), st)
		}
	}
	insts, err := a.Store.Client.Instance.Query().All(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	perMachine := map[uuid.UUID]int{}
	for _, inst := range insts {
		if inst.MachineID != nil {
			perMachine[*inst.MachineID]++
		}
	}
	if len(insts) != machines || len(perMachine) != machines {
		t.Errorf("%d instances on %d machines in the store, want %d on %d", len(insts), len(perMachine), machines, machines)
	}
}
