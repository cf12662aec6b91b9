package scout

import (
	"encoding/binary"
	"errors"
	"testing"
)

// structure returns an SMBIOS structure: type, length, handle, the rest of
// the formatted area, and its strings.
func structure(typ byte, handle uint16, rest []byte, strs ...string) []byte {
	b := []byte{typ, byte(4 + len(rest))}
	b = binary.LittleEndian.AppendUint16(b, handle)
	b = append(b, rest...)
	if len(strs) == 0 {
		return append(b, 0, 0)
	}
	for _, s := range strs {
		b = append(append(b, s...), 0)
	}
	return append(b, 0)
}

// memoryDevice returns a type 17 structure with a Size word and an
// Extended Size; short leaves the extended size out (SMBIOS before 2.7).
func memoryDevice(size uint16, ext uint32, short bool) []byte {
	rest := make([]byte, 0x22-4)
	binary.LittleEndian.PutUint16(rest[0x0C-4:], size)
	binary.LittleEndian.PutUint32(rest[0x1C-4:], ext)
	if short {
		rest = rest[:0x1B-4]
	}
	return structure(17, 0x1100, rest, "DIMM A1", "Samsung")
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func TestSMBIOSMemory(t *testing.T) {
	t.Parallel()
	bios := structure(0, 0, make([]byte, 0x14), "Vendor", "1.0")
	end := structure(127, 0xfeff, nil)
	tests := map[string]struct {
		table []byte
		want  uint64
		err   error
	}{
		"MiB":                       {table: concat(bios, memoryDevice(768, 0, false), end), want: 768 << 20},
		"KiB":                       {table: concat(memoryDevice(0x8000|512, 0, false), end), want: 512 << 10},
		"extended size":             {table: concat(memoryDevice(0x7FFF, 65536, false), end), want: 64 << 30},
		"extended size, bit 31 set": {table: concat(memoryDevice(0x7FFF, 0x80000000|1024, false), end), want: 1 << 30},
		"empty and unknown slots":   {table: concat(memoryDevice(0, 0, false), memoryDevice(0xFFFF, 0, false), memoryDevice(2048, 0, false), end), want: 2 << 30},
		"0x7FFF without extension":  {table: concat(memoryDevice(0x7FFF, 0, true), memoryDevice(1024, 0, true), end), want: 1 << 30},
		"sum of four":               {table: concat(memoryDevice(16384, 0, false), memoryDevice(16384, 0, false), memoryDevice(0x7FFF, 32768, false), memoryDevice(0x7FFF, 32768, false)), want: 96 << 30},
		"no memory device":          {table: concat(bios, end), err: errNoMemoryDevices},
		"only empty slots":          {table: concat(memoryDevice(0, 0, false), end), err: errNoMemoryDevices},
		"stops at end of table":     {table: concat(memoryDevice(1024, 0, false), end, memoryDevice(1024, 0, false)), want: 1 << 30},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			structs, err := parseSMBIOS(tc.table)
			if err != nil {
				t.Fatal(err)
			}
			got, err := smbiosMemoryBytes(structs)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseSMBIOSDamaged(t *testing.T) {
	t.Parallel()
	good := memoryDevice(1024, 0, false)
	tests := map[string][]byte{
		"truncated header":       concat(good, []byte{17, 0x22}),
		"length beyond the end":  concat(good, []byte{17, 0x40, 0, 0, 1, 2}),
		"length below 4":         concat(good, []byte{17, 2, 0, 0, 0, 0}),
		"unterminated strings":   concat(good, structure(1, 1, make([]byte, 4), "x")[:12]),
		"short formatted area":   concat(good, []byte{17, 8, 0, 0}),
		"garbage after a device": concat(good, []byte{0xff}),
	}
	for name, table := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			structs, err := parseSMBIOS(table)
			if err == nil {
				t.Fatal("want an error")
			}
			// What came before the damage is kept.
			if n, err := smbiosMemoryBytes(structs); err != nil || n != 1<<30 {
				t.Errorf("memory before the damage: %d, %v; want 1 GiB", n, err)
			}
		})
	}
}
