package imaging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// extent is a byte range of the disk.
type extent struct{ off, size int64 }

// mbrEntry is one of an MBR's four primary entries.
type mbrEntry struct {
	typ          byte
	start, count uint32 // in sectors
}

// readMBR returns the four primary entries of the MBR in sector 0, and
// false when sector 0 has no boot signature.
func readMBR(sector0 []byte) ([4]mbrEntry, bool) {
	var e [4]mbrEntry
	if len(sector0) < 512 || sector0[510] != 0x55 || sector0[511] != 0xaa {
		return e, false
	}
	for i := range e {
		b := sector0[446+16*i:]
		e[i] = mbrEntry{typ: b[4], start: binary.LittleEndian.Uint32(b[8:]), count: binary.LittleEndian.Uint32(b[12:])}
	}
	return e, true
}

// isExtended says an MBR type is an extended partition (a chain of
// logical ones).
func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

// gptHeader is what AddSeed and Wipe use of a GPT header.
type gptHeader struct {
	raw                     []byte // the header sector
	current, backup         uint64
	firstUsable, lastUsable uint64
	entriesLBA              uint64
	entries, entrySize      uint32
	entriesCRC              uint32
}

// gptSignature starts a GPT header.
var gptSignature = []byte("EFI PART")

// parseGPTHeader checks a GPT header sector read at lba: signature,
// size, CRC, and that it says it is at lba.
func parseGPTHeader(b []byte, lba uint64) (*gptHeader, error) {
	if !bytes.Equal(b[:8], gptSignature) {
		return nil, errors.New("no GPT signature")
	}
	le := binary.LittleEndian
	size := le.Uint32(b[12:])
	if size < 92 || int(size) > len(b) {
		return nil, fmt.Errorf("GPT header size %d out of range", size)
	}
	h := make([]byte, size)
	copy(h, b)
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != le.Uint32(b[16:]) {
		return nil, errors.New("GPT header CRC mismatch")
	}
	g := &gptHeader{
		raw:         append([]byte(nil), b...),
		current:     le.Uint64(b[24:]),
		backup:      le.Uint64(b[32:]),
		firstUsable: le.Uint64(b[40:]),
		lastUsable:  le.Uint64(b[48:]),
		entriesLBA:  le.Uint64(b[72:]),
		entries:     le.Uint32(b[80:]),
		entrySize:   le.Uint32(b[84:]),
		entriesCRC:  le.Uint32(b[88:]),
	}
	if g.current != lba {
		return nil, fmt.Errorf("GPT header at LBA %d says it is at %d", lba, g.current)
	}
	if g.entrySize < 128 || g.entrySize%8 != 0 || g.entries == 0 || uint64(g.entries)*uint64(g.entrySize) > 4<<20 {
		return nil, fmt.Errorf("GPT entry array of %d entries of %d bytes out of range", g.entries, g.entrySize)
	}
	return g, nil
}

// entriesBytes is the size of the entry array.
func (g *gptHeader) entriesBytes() int64 { return int64(g.entries) * int64(g.entrySize) }

// encode writes the header's fields into raw and recomputes its CRC.
func (g *gptHeader) encode() []byte {
	le := binary.LittleEndian
	b := g.raw
	le.PutUint64(b[24:], g.current)
	le.PutUint64(b[32:], g.backup)
	le.PutUint64(b[40:], g.firstUsable)
	le.PutUint64(b[48:], g.lastUsable)
	le.PutUint64(b[72:], g.entriesLBA)
	le.PutUint32(b[80:], g.entries)
	le.PutUint32(b[84:], g.entrySize)
	le.PutUint32(b[88:], g.entriesCRC)
	clear(b[16:20])
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:le.Uint32(b[12:])]))
	return b
}

// readGPT reads a GPT header at lba and its entry array, checking both
// CRCs.
func readGPT(d *device, lba uint64) (*gptHeader, []byte, error) {
	sec := make([]byte, d.sector)
	if err := d.readAt(sec, int64(lba)*d.sector); err != nil {
		return nil, nil, err
	}
	g, err := parseGPTHeader(sec, lba)
	if err != nil {
		return nil, nil, err
	}
	ents := make([]byte, g.entriesBytes())
	if err := d.readAt(ents, int64(g.entriesLBA)*d.sector); err != nil {
		return nil, nil, err
	}
	if crc32.ChecksumIEEE(ents) != g.entriesCRC {
		return nil, nil, errors.New("GPT partition entries CRC mismatch")
	}
	return g, ents, nil
}

// gptPartitions lists the used entries of a GPT entry array as
// (index, first LBA, last LBA).
func gptPartitions(g *gptHeader, ents []byte) []gptPart {
	var ps []gptPart
	for i := uint32(0); i < g.entries; i++ {
		e := ents[int64(i)*int64(g.entrySize):]
		if isZero(e[:16]) {
			continue
		}
		ps = append(ps, gptPart{index: int(i), first: binary.LittleEndian.Uint64(e[32:]), last: binary.LittleEndian.Uint64(e[40:])})
	}
	return ps
}

// gptPart is a used GPT entry.
type gptPart struct {
	index       int
	first, last uint64
}

// partitions lists the extents of every partition d's tables describe:
// MBR primary and logical partitions, and GPT partitions from the
// primary table or, when it is damaged, the backup at the end of d.
// Damaged tables are skipped; it never fails on what it reads.
func partitions(d *device) []extent {
	var out []extent
	sec := d.sector
	add := func(first, count int64) {
		off, size := first*sec, count*sec
		if count <= 0 || off >= d.size {
			return
		}
		out = append(out, extent{off, min(size, d.size-off)})
	}
	s0 := make([]byte, sec)
	if d.readAt(s0, 0) != nil {
		return nil
	}
	mbr, ok := readMBR(s0)
	if ok {
		for _, e := range mbr {
			if e.typ == 0 || e.typ == 0xee {
				continue
			}
			add(int64(e.start), int64(e.count))
			if isExtended(e.typ) {
				out = append(out, logicals(d, int64(e.start))...)
			}
		}
	}
	g, ents, err := readGPT(d, 1)
	if err != nil && d.size/sec > 1 {
		g, ents, err = readGPT(d, uint64(d.size/sec-1))
	}
	if err == nil {
		for _, p := range gptPartitions(g, ents) {
			if p.last >= p.first {
				add(int64(p.first), int64(p.last-p.first+1))
			}
		}
	}
	return out
}

// maxLogicals bounds the walk of an extended partition's chain.
const maxLogicals = 128

// logicals walks the chain of extended boot records of the extended
// partition at ext (in sectors) and returns the logical partitions.
func logicals(d *device, ext int64) []extent {
	var out []extent
	sec := d.sector
	b := make([]byte, sec)
	ebr := ext
	for range maxLogicals {
		if ebr*sec >= d.size || d.readAt(b, ebr*sec) != nil {
			break
		}
		e, ok := readMBR(b)
		if !ok {
			break
		}
		if e[0].typ != 0 && e[0].count > 0 {
			off := (ebr + int64(e[0].start)) * sec
			if off < d.size {
				out = append(out, extent{off, min(int64(e[0].count)*sec, d.size-off)})
			}
		}
		if !isExtended(e[1].typ) || e[1].start == 0 {
			break
		}
		ebr = ext + int64(e[1].start)
	}
	return out
}
