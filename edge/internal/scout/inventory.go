package scout

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/carbide-dev/carbide/sdk/hardware"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

// Limits of the inventory message (carbide.machine.v1.Inventory).
const (
	maxString = 255
	maxName   = 64 // a disk's name, a NIC's driver
	maxDisks  = 256
	maxNICs   = 64
)

// Collector takes the hardware inventory from the kernel's view of the
// machine: /sys/class/dmi/id, /sys/firmware/dmi, /proc/cpuinfo,
// /proc/meminfo, /sys/block and /sys/class/net, all below Root.
type Collector struct {
	// Root is prepended to every path read; "" or "/" for the running
	// system.
	Root string
	// BMCAddress, when set, asks the BMC for its IPv4 address; it
	// returns "" when there is no BMC to ask. nil skips the BMC.
	BMCAddress func(ctx context.Context) (string, error)
}

// Collect returns the inventory. A part that cannot be read is left
// empty, and the error (several joined) says which; the inventory is
// returned either way.
func (c *Collector) Collect(ctx context.Context) (*machinev1.Inventory, error) {
	inv := &machinev1.Inventory{}
	var errs []error
	c.dmi(inv)
	cpu, err := c.cpu()
	if err != nil {
		errs = append(errs, err)
	}
	inv.Cpu = cpu
	inv.MemoryBytes, err = c.memory()
	if err != nil {
		errs = append(errs, err)
	}
	inv.Disks, err = c.disks()
	if err != nil {
		errs = append(errs, err)
	}
	inv.Nics, err = c.nics()
	if err != nil {
		errs = append(errs, err)
	}
	if c.BMCAddress != nil {
		addr, err := c.BMCAddress(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("ask the BMC for its address: %w", err))
		}
		inv.BmcAddress = addr
	}
	return inv, errors.Join(errs...)
}

func (c *Collector) path(p string) string {
	return filepath.Join(c.Root, p)
}

// readString returns a file's contents, cleaned (clean), or "" when it
// cannot be read.
func (c *Collector) readString(p string) string {
	b, err := os.ReadFile(c.path(p))
	if err != nil {
		return ""
	}
	return clean(string(b))
}

// clean makes a firmware or sysfs string fit for the inventory: valid
// UTF-8 without control characters, surrounding white space trimmed, at
// most 255 bytes.
func clean(s string) string {
	return truncate(printable(s), maxString)
}

// printable returns s as valid UTF-8 with control characters turned into
// spaces and surrounding white space trimmed.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// dropPlaceholder returns "" for a string that says nothing (see
// hardware.IsPlaceholder): such values must not look like an identity.
func dropPlaceholder(s string) string {
	if hardware.IsPlaceholder(s) {
		return ""
	}
	return s
}

// dmi fills the system, board and chassis from /sys/class/dmi/id.
func (c *Collector) dmi(inv *machinev1.Inventory) {
	id := func(name string) string {
		return dropPlaceholder(c.readString("sys/class/dmi/id/" + name))
	}
	inv.System = &machinev1.SystemInfo{
		Manufacturer: id("sys_vendor"),
		Product:      id("product_name"),
		Serial:       id("product_serial"),
		Uuid:         hardware.SystemUUID(c.readString("sys/class/dmi/id/product_uuid")),
	}
	inv.Board = &machinev1.BoardInfo{
		Manufacturer: id("board_vendor"),
		Product:      id("board_name"),
		Serial:       id("board_serial"),
	}
	inv.Chassis = &machinev1.ChassisInfo{
		Manufacturer: id("chassis_vendor"),
		Serial:       id("chassis_serial"),
	}
}

// cpu reads /proc/cpuinfo: the model name of the first processor, the
// logical CPUs, and the distinct sockets (physical id) and cores
// (physical id, core id). Without topology lines (some virtual machines,
// other architectures) each logical CPU counts as a core of one socket.
func (c *Collector) cpu() (*machinev1.CPUInfo, error) {
	b, err := os.ReadFile(c.path("proc/cpuinfo"))
	if err != nil {
		return &machinev1.CPUInfo{}, fmt.Errorf("read CPU information: %w", err)
	}
	info := &machinev1.CPUInfo{}
	sockets := map[string]bool{}
	cores := map[[2]string]bool{}
	var physID, coreID string
	flush := func() {
		if physID != "" {
			sockets[physID] = true
			if coreID != "" {
				cores[[2]string{physID, coreID}] = true
			}
		}
		physID, coreID = "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "processor":
			flush()
			info.Threads++
		case "model name":
			if info.Model == "" {
				info.Model = clean(value)
			}
		case "physical id":
			physID = value
		case "core id":
			coreID = value
		}
	}
	flush()
	if info.Threads == 0 {
		return info, errors.New("read CPU information: /proc/cpuinfo lists no processor")
	}
	info.Sockets = uint32(max(len(sockets), 1))
	info.Cores = uint32(len(cores))
	if info.Cores == 0 {
		info.Cores = info.Threads
	}
	return info, nil
}

// memory returns the installed memory: the sum of the SMBIOS memory
// devices, which is what the machine was built with; else MemTotal,
// which is less (the kernel's own and reserved memory are not in it).
func (c *Collector) memory() (uint64, error) {
	if n, err := c.smbiosMemory(); err == nil {
		return n, nil
	}
	b, err := os.ReadFile(c.path("proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, errors.New("read memory size: no MemTotal in /proc/meminfo")
}

// smbiosMemory sums the type 17 structures of the SMBIOS table, read
// whole from /sys/firmware/dmi/tables/DMI or, failing that, one by one
// from /sys/firmware/dmi/entries/17-*/raw.
func (c *Collector) smbiosMemory() (uint64, error) {
	if table, err := os.ReadFile(c.path("sys/firmware/dmi/tables/DMI")); err == nil {
		structs, _ := parseSMBIOS(table) // a damaged tail keeps what came before
		if n, err := smbiosMemoryBytes(structs); err == nil {
			return n, nil
		}
	}
	raws, _ := filepath.Glob(c.path("sys/firmware/dmi/entries/17-*/raw"))
	var structs []smbiosStructure
	for _, r := range raws {
		b, err := os.ReadFile(r)
		if err != nil {
			continue
		}
		s, _ := parseSMBIOS(b)
		structs = append(structs, s...)
	}
	return smbiosMemoryBytes(structs)
}

// skippedDisks are prefixes of block devices that are not disks of the
// machine: loop devices, RAM disks, compressed swap, optical drives,
// floppies, device-mapper and software RAID devices, and network block
// devices.
var skippedDisks = []string{"loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "rbd", "drbd"}

// nvmePath matches the per-path nodes of native NVMe multipathing
// (nvme0c1n1): the namespace itself is nvme0n1.
var nvmePath = regexp.MustCompile(`^nvme\d+c\d+n\d+$`)

// diskSerial is the serial number of the disk /sys/block/<name>, as the
// inventory reports it; "" when it has none.
func (c *Collector) diskSerial(name string) string {
	dir := "sys/block/" + name
	if s := dropPlaceholder(c.readString(dir + "/serial")); s != "" {
		return s
	}
	if s := dropPlaceholder(c.readString(dir + "/device/serial")); s != "" {
		return s
	}
	return dropPlaceholder(c.vpdSerial(dir + "/device/vpd_pg80"))
}

// disks lists /sys/block, except the skipped kinds and devices of size 0
// (an empty card reader or virtual drive).
func (c *Collector) disks() ([]*machinev1.Disk, error) {
	entries, err := os.ReadDir(c.path("sys/block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []*machinev1.Disk
	for _, e := range entries {
		name := e.Name()
		if slices.ContainsFunc(skippedDisks, func(p string) bool { return strings.HasPrefix(name, p) }) || nvmePath.MatchString(name) {
			continue
		}
		dir := "sys/block/" + name
		sectors, err := strconv.ParseUint(c.readString(dir+"/size"), 10, 64)
		if err != nil || sectors == 0 {
			continue
		}
		d := &machinev1.Disk{Name: truncate(name, maxName), SizeBytes: sectors * 512}
		// virtio-blk has the serial on the disk; NVMe on the controller
		// (device); SCSI and SATA disks in VPD page 0x80.
		d.Model = dropPlaceholder(c.readString(dir + "/device/model"))
		d.Serial = c.diskSerial(name)
		out = append(out, d)
		if len(out) == maxDisks {
			break
		}
	}
	return out, nil
}

// vpdSerial returns the unit serial number of a SCSI VPD page 0x80: a
// 4-byte header whose last two bytes are the length, then the serial.
func (c *Collector) vpdSerial(p string) string {
	b, err := os.ReadFile(c.path(p))
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return clean(string(b[4 : 4+n]))
}

// nics lists the Ethernet interfaces of /sys/class/net that have a
// device (a NIC, not a software interface), in name order. Interfaces
// with other kinds of address, such as InfiniBand's 20 bytes, are left
// out.
func (c *Collector) nics() ([]*machinev1.NIC, error) {
	names, err := c.physicalNICs()
	if err != nil {
		return nil, err
	}
	var out []*machinev1.NIC
	for _, name := range names {
		dir := "sys/class/net/" + name
		mac, err := net.ParseMAC(c.readString(dir + "/address"))
		if err != nil || len(mac) != 6 {
			continue
		}
		n := &machinev1.NIC{Mac: mac.String()}
		if driver, err := os.Readlink(c.path(dir + "/device/driver")); err == nil {
			n.Driver = truncate(clean(filepath.Base(driver)), maxName)
		}
		// Reading carrier fails (EINVAL) while the interface is down.
		n.LinkUp = c.readString(dir+"/carrier") == "1"
		if speed, err := strconv.ParseInt(c.readString(dir+"/speed"), 10, 64); err == nil && speed > 0 && speed <= 1<<32-1 {
			n.SpeedMbps = uint32(speed)
		}
		out = append(out, n)
		if len(out) == maxNICs {
			break
		}
	}
	return out, nil
}

// physicalNICs returns the names of the interfaces of /sys/class/net
// that have a device, in name order.
func (c *Collector) physicalNICs() ([]string, error) {
	entries, err := os.ReadDir(c.path("sys/class/net"))
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(c.path("sys/class/net/" + e.Name() + "/device")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
