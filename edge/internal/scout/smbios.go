package scout

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// smbiosStructure is one structure of an SMBIOS table: its type and its
// formatted area (header included); the strings that follow are not
// needed here.
type smbiosStructure struct {
	Type      byte
	Formatted []byte
}

// parseSMBIOS splits an SMBIOS structure table (as in
// /sys/firmware/dmi/tables/DMI, or one /sys/firmware/dmi/entries/*/raw)
// into its structures. It stops at the end-of-table structure (type 127).
func parseSMBIOS(table []byte) ([]smbiosStructure, error) {
	var out []smbiosStructure
	for off := 0; off < len(table); {
		if len(table)-off < 4 {
			return out, fmt.Errorf("smbios: truncated header at offset %d", off)
		}
		typ, length := table[off], int(table[off+1])
		if length < 4 || off+length > len(table) {
			return out, fmt.Errorf("smbios: structure type %d at offset %d has length %d", typ, off, length)
		}
		out = append(out, smbiosStructure{Type: typ, Formatted: table[off : off+length]})
		// The string set ends with two NUL bytes (a structure without
		// strings has just the two).
		end := off + length
		for ; end+1 < len(table); end++ {
			if table[end] == 0 && table[end+1] == 0 {
				break
			}
		}
		if end+1 >= len(table) {
			if typ == 127 {
				return out, nil
			}
			return out, fmt.Errorf("smbios: strings of structure type %d at offset %d are not terminated", typ, off)
		}
		if typ == 127 {
			return out, nil
		}
		off = end + 2
	}
	return out, nil
}

// errNoMemoryDevices means the table has no type 17 structure with a size.
var errNoMemoryDevices = errors.New("smbios: no memory device with a size")

// smbiosMemoryBytes sums the sizes of the installed memory devices
// (type 17) of a table.
//
// The Size word (offset 0x0C) is 0 for an empty slot and 0xFFFF for an
// unknown size; bit 15 selects KiB instead of MiB; 0x7FFF means the size,
// in MiB, is in the Extended Size double word at offset 0x1C (SMBIOS 2.7
// and later, bits 0-30).
func smbiosMemoryBytes(structs []smbiosStructure) (uint64, error) {
	var total uint64
	found := false
	for _, s := range structs {
		if s.Type != 17 || len(s.Formatted) < 0x0E {
			continue
		}
		size := binary.LittleEndian.Uint16(s.Formatted[0x0C:])
		switch {
		case size == 0 || size == 0xFFFF:
			continue
		case size == 0x7FFF:
			if len(s.Formatted) < 0x20 {
				continue
			}
			ext := binary.LittleEndian.Uint32(s.Formatted[0x1C:]) & 0x7FFFFFFF
			total += uint64(ext) << 20
		case size&0x8000 != 0:
			total += uint64(size&0x7FFF) << 10
		default:
			total += uint64(size) << 20
		}
		found = true
	}
	if !found {
		return 0, errNoMemoryDevices
	}
	return total, nil
}
