// Package qemuvm builds the QEMU command line of a network-booting VM on
// a tap device, as the end-to-end tests and the virtual rack of
// carbide-run use it: legacy BIOS with iPXE as its NIC's boot ROM, or UEFI
// (OVMF) with no NIC ROM, so that the firmware's own PXE client fetches
// iPXE over TFTP; a virtio disk with a serial; SMBIOS identity the
// discovery agent reads.
package qemuvm

import "fmt"

// Spec describes one VM.
type Spec struct {
	// QEMU is the qemu-system-x86_64 program.
	QEMU string
	// Accel is the accelerator (tcg, kvm); empty means tcg.
	Accel string
	// Product is the SMBIOS product name; Serial and UUID the system's.
	Product, Serial, UUID string
	CPUs, MemoryMB        int
	// MAC of the NIC, on tap device Tap.
	MAC, Tap string
	// Disk is a raw disk image file; DiskID the disk's serial.
	Disk, DiskID string
	// Console is the file the serial console goes to.
	Console string
	// Reboots lets the guest reboot; otherwise a reboot ends QEMU, as a
	// power-off does.
	Reboots bool
	// NetBoot adds -boot n to a BIOS VM; otherwise whoever starts it (a
	// simulated BMC) says where it boots.
	NetBoot bool
	// UEFI boots OVMF from OVMFCode with its variable store in OVMFVars
	// (a writable copy of the template).
	UEFI               bool
	OVMFCode, OVMFVars string
}

// Args returns the command line, program first.
func (s Spec) Args() []string {
	accel := s.Accel
	if accel == "" {
		accel = "tcg"
	}
	args := []string{s.QEMU, "-accel", accel, "-display", "none"}
	if !s.Reboots {
		args = append(args, "-no-reboot")
	}
	args = append(args,
		"-serial", "file:"+s.Console,
		"-smp", fmt.Sprint(s.CPUs), "-m", fmt.Sprint(s.MemoryMB),
		"-smbios", fmt.Sprintf("type=1,manufacturer=Carbide Lab,product=%s,serial=%s,uuid=%s", s.Product, s.Serial, s.UUID),
		"-netdev", "tap,id=n0,ifname="+s.Tap+",script=no,downscript=no",
		"-drive", "file="+s.Disk+",if=none,id=d0,format=raw",
		"-device", "virtio-blk-pci,drive=d0,serial="+s.DiskID,
	)
	if s.UEFI {
		return append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+s.OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+s.OVMFVars,
			// No option ROM: OVMF's own PXE client must fetch iPXE.
			"-device", "virtio-net-pci,netdev=n0,mac="+s.MAC+",romfile=,bootindex=1")
	}
	if s.NetBoot {
		args = append(args, "-boot", "n")
	}
	return append(args, "-device", "virtio-net-pci,netdev=n0,mac="+s.MAC+",bootindex=1")
}
