package qemuvm

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestArgs(t *testing.T) {
	t.Parallel()
	base := Spec{QEMU: "qemu", Product: "e2e", Serial: "S1", UUID: "u-1", CPUs: 2, MemoryMB: 768,
		MAC: "52:54:00:00:00:01", Tap: "tap1", Disk: "d.img", DiskID: "D1", Console: "c.log"}
	common := "-serial file:c.log -smp 2 -m 768 " +
		"-smbios type=1,manufacturer=Carbide Lab,product=e2e,serial=S1,uuid=u-1 " +
		"-netdev tap,id=n0,ifname=tap1,script=no,downscript=no -drive file=d.img,if=none,id=d0,format=raw " +
		"-device virtio-blk-pci,drive=d0,serial=D1"
	tests := map[string]struct {
		edit func(*Spec)
		want string
	}{
		"BIOS from the network, no reboots": {
			edit: func(s *Spec) { s.NetBoot = true },
			want: "qemu -accel tcg -display none -no-reboot " + common + " -boot n -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1",
		},
		"BIOS booted by its BMC, with KVM, rebooting": {
			edit: func(s *Spec) { s.Reboots, s.Accel = true, "kvm" },
			want: "qemu -accel kvm -display none " + common + " -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1",
		},
		"UEFI without a NIC ROM": {
			edit: func(s *Spec) { s.UEFI, s.OVMFCode, s.OVMFVars, s.NetBoot = true, "code.fd", "vars.fd", true },
			want: "qemu -accel tcg -display none -no-reboot " + common + " -machine q35 -drive if=pflash,format=raw,unit=0,readonly=on,file=code.fd " +
				"-drive if=pflash,format=raw,unit=1,file=vars.fd -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile=,bootindex=1",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := base
			tt.edit(&s)
			got := s.Args()
			// The smbios value holds spaces; compare it as one field.
			want := strings.Split(strings.Replace(tt.want, "Carbide Lab", "Carbide\x00Lab", 1), " ")
			for i := range want {
				want[i] = strings.ReplaceAll(want[i], "\x00", " ")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Args() (-want +got):\n%s", diff)
			}
		})
	}
}
