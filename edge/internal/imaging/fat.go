package imaging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
)

// FAT16 geometry of the seed filesystem: 512-byte sectors and clusters,
// one reserved sector, two FATs, 512 root directory entries. With
// sizes from 4 to 32 MiB that gives between 4085 and 65524 clusters:
// FAT16 by the specification's rule, which is how Linux, blkid and
// fsck.vfat tell FAT12, FAT16 and FAT32 apart.
const (
	fatSector      = 512
	fatReserved    = 1
	fatCount       = 2
	fatRootEntries = 512
	fatMinSize     = 4 << 20
	fatMaxSize     = 32 << 20
)

// fatLabel is the volume label cloud-init's NoCloud source looks for.
const fatLabel = "CIDATA"

// fatFile is a file for the root directory of a FAT image.
type fatFile struct {
	name string
	data []byte
}

// buildFAT16 returns a FAT16 filesystem of size bytes (a multiple of
// fatSector, fatMinSize..fatMaxSize) labelled label, with files in its
// root directory (long names as VFAT entries). hidden is the sector at
// which the filesystem starts on the disk, recorded in its boot sector.
func buildFAT16(size int64, label string, files []fatFile, hidden uint32, volumeID uint32, now time.Time) ([]byte, error) {
	if size%fatSector != 0 || size < fatMinSize || size > fatMaxSize {
		return nil, fmt.Errorf("FAT16 size %d out of range", size)
	}
	total := size / fatSector
	rootSectors := int64(fatRootEntries * 32 / fatSector)
	fatSectors := int64(1)
	var clusters int64
	for {
		clusters = total - fatReserved - fatCount*fatSectors - rootSectors
		need := ((clusters+2)*2 + fatSector - 1) / fatSector
		if need <= fatSectors {
			break
		}
		fatSectors = need
	}
	if clusters < 4085 || clusters > 65524 {
		return nil, fmt.Errorf("FAT16 with %d clusters is not valid", clusters)
	}
	img := make([]byte, size)
	le := binary.LittleEndian

	// Boot sector.
	b := img[:fatSector]
	copy(b, []byte{0xeb, 0x3c, 0x90})
	copy(b[3:11], "CARBIDE ")
	le.PutUint16(b[11:], fatSector)
	b[13] = 1 // sectors per cluster
	le.PutUint16(b[14:], fatReserved)
	b[16] = fatCount
	le.PutUint16(b[17:], fatRootEntries)
	if total < 1<<16 {
		le.PutUint16(b[19:], uint16(total))
	} else {
		le.PutUint32(b[32:], uint32(total))
	}
	b[21] = 0xf8 // fixed disk
	le.PutUint16(b[22:], uint16(fatSectors))
	le.PutUint16(b[24:], 63)  // sectors per track
	le.PutUint16(b[26:], 255) // heads
	le.PutUint32(b[28:], hidden)
	b[36] = 0x80 // drive number
	b[38] = 0x29 // extended boot signature: the three fields follow
	le.PutUint32(b[39:], volumeID)
	copy(b[43:54], padName(label, 11))
	copy(b[54:62], "FAT16   ")
	copy(b[62:], []byte{0xcd, 0x18}) // not bootable: int 18h, try the next device
	b[510], b[511] = 0x55, 0xaa

	fat := make([]byte, fatSectors*fatSector)
	le.PutUint16(fat[0:], 0xfff8)
	le.PutUint16(fat[2:], 0xffff)
	root := make([]byte, rootSectors*fatSector)
	dataStart := (fatReserved + fatCount*fatSectors + rootSectors) * fatSector
	date, tod := dosTime(now)

	ents := 0
	putEntry := func(e []byte) error {
		if ents >= fatRootEntries {
			return errors.New("too many files for the root directory")
		}
		copy(root[ents*32:], e)
		ents++
		return nil
	}
	vol := make([]byte, 32)
	copy(vol, padName(label, 11))
	vol[11] = 0x08 // volume label
	le.PutUint16(vol[22:], tod)
	le.PutUint16(vol[24:], date)
	if err := putEntry(vol); err != nil {
		return nil, err
	}

	next := int64(2) // the next free cluster
	used := map[string]bool{}
	for _, f := range files {
		short, long := shortName(f.name, used)
		used[string(short)] = true
		if long {
			for _, e := range lfnEntries(f.name, short) {
				if err := putEntry(e); err != nil {
					return nil, err
				}
			}
		}
		n := (int64(len(f.data)) + fatSector - 1) / fatSector
		if next-2+n > clusters {
			return nil, fmt.Errorf("the files need more than the %d bytes of the filesystem", clusters*fatSector)
		}
		first := int64(0)
		if n > 0 {
			first = next
			copy(img[dataStart+(first-2)*fatSector:], f.data)
			for c := first; c < first+n; c++ {
				v := uint16(c + 1)
				if c == first+n-1 {
					v = 0xffff
				}
				le.PutUint16(fat[c*2:], v)
			}
			next += n
		}
		e := make([]byte, 32)
		copy(e, short)
		e[11] = 0x20 // archive
		le.PutUint16(e[14:], tod)
		le.PutUint16(e[16:], date)
		le.PutUint16(e[18:], date)
		le.PutUint16(e[22:], tod)
		le.PutUint16(e[24:], date)
		le.PutUint16(e[26:], uint16(first))
		le.PutUint32(e[28:], uint32(len(f.data)))
		if err := putEntry(e); err != nil {
			return nil, err
		}
	}
	for i := range int64(fatCount) {
		copy(img[(fatReserved+i*fatSectors)*fatSector:], fat)
	}
	copy(img[(fatReserved+fatCount*fatSectors)*fatSector:], root)
	return img, nil
}

// dosTime encodes t as a FAT date and time of day.
func dosTime(t time.Time) (date, tod uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tod = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tod
}

// padName upper-cases s and pads it with spaces to n bytes.
func padName(s string, n int) []byte {
	b := []byte(strings.ToUpper(s))
	for len(b) < n {
		b = append(b, ' ')
	}
	return b[:n]
}

// shortValid says c may appear in a short (8.3) name.
func shortValid(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("$%'-_@~`!(){}^#&", c) >= 0
}

// shortName returns the 11-byte short name of name, unique among used,
// and whether name needs long-name entries (it is not that short name
// itself).
func shortName(name string, used map[string]bool) ([]byte, bool) {
	base, ext := name, ""
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		base, ext = name[:i], name[i+1:]
	}
	exact := len(base) >= 1 && len(base) <= 8 && len(ext) <= 3 && (ext != "" || !strings.Contains(name, "."))
	clean := func(s string) []byte {
		var out []byte
		for _, c := range []byte(strings.ToUpper(s)) {
			switch {
			case c == ' ' || c == '.':
				exact = false
			case !shortValid(c):
				exact = false
				out = append(out, '_')
			default:
				out = append(out, c)
			}
		}
		return out
	}
	b := clean(base)
	e := clean(ext)
	if exact && strings.ToUpper(name) == name {
		s := append(padName(string(b), 8), padName(string(e), 3)...)
		if !used[string(s)] {
			return s, false
		}
	}
	if len(e) > 3 {
		e = e[:3]
	}
	for i := 1; ; i++ {
		tail := fmt.Sprintf("~%d", i)
		stem := b
		if len(stem) > 8-len(tail) {
			stem = stem[:8-len(tail)]
		}
		s := append(padName(string(stem)+tail, 8), padName(string(e), 3)...)
		if !used[string(s)] {
			return s, true
		}
	}
}

// lfnEntries returns the VFAT long-name entries of name, in the order
// they precede the short entry.
func lfnEntries(name string, short []byte) [][]byte {
	var sum byte
	for _, c := range short[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	u := utf16.Encode([]rune(name))
	if len(u)%13 != 0 {
		u = append(u, 0)
		for len(u)%13 != 0 {
			u = append(u, 0xffff)
		}
	}
	n := len(u) / 13
	out := make([][]byte, 0, n)
	for k := n; k >= 1; k-- {
		e := make([]byte, 32)
		e[0] = byte(k)
		if k == n {
			e[0] |= 0x40
		}
		e[11] = 0x0f // long name
		e[13] = sum
		chars := u[(k-1)*13 : k*13]
		pos := slices.Concat(rangeOf(1, 5), rangeOf(14, 6), rangeOf(28, 2))
		for i, c := range chars {
			binary.LittleEndian.PutUint16(e[pos[i]:], c)
		}
		out = append(out, e)
	}
	return out
}

// rangeOf returns n byte offsets of 16-bit characters from off.
func rangeOf(off, n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = off + 2*i
	}
	return r
}
