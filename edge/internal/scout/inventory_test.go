package scout

import (
	"context"
	"errors"
	"strings"
	"testing"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestCollect(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		root string
		bmc  func(context.Context) (string, error)
		want *machinev1.Inventory
		errs []string // parts of the error
	}{
		"server": {
			root: "testdata/server",
			bmc:  func(context.Context) (string, error) { return "10.0.0.5", nil },
			want: &machinev1.Inventory{
				System: &machinev1.SystemInfo{Manufacturer: "Supermicro", Product: "SYS-1029U-TRT", Serial: "S123456789X",
					Uuid: "9a2c1b3e-44f0-11ea-8000-3cecef123456"},
				Board:       &machinev1.BoardInfo{Manufacturer: "Supermicro", Product: "X11DPU", Serial: "HM19AS001234"},
				Chassis:     &machinev1.ChassisInfo{Manufacturer: "Supermicro"},
				Cpu:         &machinev1.CPUInfo{Model: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", Sockets: 2, Cores: 4, Threads: 8},
				MemoryBytes: 48 << 30,
				Disks: []*machinev1.Disk{
					{Name: "nvme0n1", Model: "SAMSUNG MZQLB1T9HAJR-00007", Serial: "S439NA0N100200", SizeBytes: 3750748848 * 512},
					{Name: "sda", Model: "SAMSUNG MZ7LH480", Serial: "S45PNA0M123456", SizeBytes: 937703088 * 512},
				},
				Nics: []*machinev1.NIC{
					{Mac: "3c:ec:ef:12:34:56", Driver: "ixgbe", LinkUp: true, SpeedMbps: 10000},
					{Mac: "3c:ec:ef:12:34:57", Driver: "ixgbe"},
				},
				BmcAddress: "10.0.0.5",
			},
		},
		"vm with placeholders": {
			root: "testdata/vm",
			bmc:  func(context.Context) (string, error) { return "", nil },
			want: &machinev1.Inventory{
				System:      &machinev1.SystemInfo{Manufacturer: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)"},
				Board:       &machinev1.BoardInfo{},
				Chassis:     &machinev1.ChassisInfo{Manufacturer: "QEMU"},
				Cpu:         &machinev1.CPUInfo{Model: "QEMU Virtual CPU version 2.5+", Sockets: 1, Cores: 4, Threads: 4},
				MemoryBytes: 1<<30 + 8<<20,
				Disks:       []*machinev1.Disk{{Name: "vda", Serial: "vm-disk-1", SizeBytes: 10 << 30}},
				Nics:        []*machinev1.NIC{{Mac: "52:54:00:aa:bb:cc", Driver: "virtio_net", LinkUp: true}},
			},
		},
		"bare: memory from MemTotal, the rest missing": {
			root: "testdata/bare",
			bmc:  func(context.Context) (string, error) { return "", errors.New("BMC busy") },
			want: &machinev1.Inventory{
				System:      &machinev1.SystemInfo{},
				Board:       &machinev1.BoardInfo{},
				Chassis:     &machinev1.ChassisInfo{},
				Cpu:         &machinev1.CPUInfo{},
				MemoryBytes: 2048000 << 10,
			},
			errs: []string{"read CPU information", "list block devices", "list network interfaces", "ask the BMC for its address: BMC busy"},
		},
		"nothing at all": {
			root: "testdata/nonexistent",
			want: &machinev1.Inventory{
				System: &machinev1.SystemInfo{}, Board: &machinev1.BoardInfo{}, Chassis: &machinev1.ChassisInfo{}, Cpu: &machinev1.CPUInfo{},
			},
			errs: []string{"read CPU information", "read memory size", "list block devices", "list network interfaces"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := &Collector{Root: tc.root, BMCAddress: tc.bmc}
			got, err := c.Collect(context.Background())
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("inventory (-want +got):\n%s", diff)
			}
			if len(tc.errs) == 0 && err != nil {
				t.Errorf("error %v, want none", err)
			}
			for _, e := range tc.errs {
				if err == nil || !strings.Contains(err.Error(), e) {
					t.Errorf("error %v, want it to contain %q", err, e)
				}
			}
			// Whatever the collector finds must be a valid message.
			if _, err := proto.Marshal(got); err != nil {
				t.Errorf("marshal the inventory: %v", err)
			}
		})
	}
}

func TestClean(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 200) // 400 bytes
	tests := map[string]struct{ in, want string }{
		"trim":            {"  Supermicro \n", "Supermicro"},
		"invalid UTF-8":   {"Dell\xff\xfe Inc.", "Dell Inc."},
		"control chars":   {"A\x00B\x07C", "A B C"},
		"cut at 255, UTF": {long, strings.Repeat("é", 127)},
	}
	for name, tc := range tests {
		if got := clean(tc.in); got != tc.want {
			t.Errorf("%s: clean(%q) = %q, want %q", name, tc.in, got, tc.want)
		}
	}
}
