package imaging

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Seed is the partition AddSeed added.
type Seed struct {
	// Partition is the partition's number as Linux counts it (1-based:
	// /dev/sda<Partition>).
	Partition int
	// Offset and Size are the partition's place on the disk, in bytes.
	Offset, Size int64
}

// maxSeedBytes bounds the seed's files together.
const maxSeedBytes = 16 << 20

// alignment of the seed partition.
const mib = 1 << 20

// fatMBRType is the MBR partition type of the seed: FAT16 with LBA
// addressing.
const fatMBRType = 0x0e

// basicDataGUID is GPT's "Microsoft basic data" type,
// EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, in its on-disk byte order.
var basicDataGUID = []byte{0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7}

// AddSeed adds a cloud-init NoCloud seed to the disk dev, after an image
// was written to it: a new partition after the image's last one,
// aligned to 1 MiB, holding a FAT16 filesystem labelled CIDATA with
// files (meta-data, user-data, network-config, vendor-data: file name to
// content) in its root directory.
//
// On an MBR disk the partition takes a free primary slot (type 0x0e). On
// a GPT disk the backup header and entries first move to the end of dev
// (the image was smaller than the disk), then the partition takes a free
// entry (Microsoft basic data, named "cidata"), and both headers get
// their CRCs anew. A disk without a partition table is refused, as is
// one without a free slot or room at its end.
func AddSeed(dev string, files map[string][]byte) (Seed, error) {
	list, total, err := seedFiles(files)
	if err != nil {
		return Seed{}, err
	}
	size := max(int64(fatMinSize), (total+2*mib+mib-1)/mib*mib)
	d, err := openDevice(dev)
	if err != nil {
		return Seed{}, err
	}
	defer d.Close()
	s0 := make([]byte, d.sector)
	if err := d.readAt(s0, 0); err != nil {
		return Seed{}, err
	}
	mbr, ok := readMBR(s0)
	if !ok {
		return Seed{}, fmt.Errorf("add the seed to %s: the disk has no partition table (no MBR boot signature)", dev)
	}
	gpt := false
	for _, e := range mbr {
		if e.typ == 0xee {
			gpt = true
		}
	}
	var seed Seed
	place := func(start int64) ([]byte, error) {
		var id [4]byte
		if _, err := rand.Read(id[:]); err != nil {
			return nil, fmt.Errorf("make a volume id: %w", err)
		}
		return buildFAT16(size, fatLabel, list, uint32(min(start/d.sector, 1<<32-1)), binary.LittleEndian.Uint32(id[:]), time.Now())
	}
	if gpt {
		seed, err = addGPTSeed(d, s0, size, place)
	} else {
		seed, err = addMBRSeed(d, s0, mbr, size, place)
	}
	if err != nil {
		return Seed{}, fmt.Errorf("add the seed to %s: %w", dev, err)
	}
	return seed, d.sync()
}

// seedFiles checks the files' names and sizes and orders them by name.
func seedFiles(files map[string][]byte) ([]fatFile, int64, error) {
	var list []fatFile
	var total int64
	for name, data := range files {
		if name == "" || name == "." || name == ".." || !utf8.ValidString(name) || len(utf16.Encode([]rune(name))) > 255 ||
			strings.ContainsAny(name, "/\\:*?\"<>|") || strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") ||
			strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, 0, fmt.Errorf("seed file name %q is not valid on a FAT filesystem", name)
		}
		list = append(list, fatFile{name: name, data: data})
		total += (int64(len(data)) + fatSector - 1) / fatSector * fatSector
	}
	if total > maxSeedBytes {
		return nil, 0, fmt.Errorf("seed files of %d bytes are more than the %d a seed holds", total, maxSeedBytes)
	}
	slices.SortFunc(list, func(a, b fatFile) int { return strings.Compare(a.name, b.name) })
	return list, total, nil
}

// addMBRSeed adds the seed partition in a free primary slot of an MBR.
func addMBRSeed(d *device, s0 []byte, mbr [4]mbrEntry, size int64, build func(int64) ([]byte, error)) (Seed, error) {
	slot := -1
	var end int64 // bytes: the end of the last partition
	for i, e := range mbr {
		if e.typ == 0 {
			if slot < 0 {
				slot = i
			}
			continue
		}
		end = max(end, (int64(e.start)+int64(e.count))*d.sector)
	}
	if slot < 0 {
		return Seed{}, errors.New("all four primary MBR partition slots are used")
	}
	start := (end + mib - 1) / mib * mib
	if start+size > d.size {
		return Seed{}, fmt.Errorf("no room for a %d-byte seed partition after the last partition (ends at byte %d; the disk has %d)", size, end, d.size)
	}
	first, count := start/d.sector, size/d.sector
	if first+count > 1<<32 {
		return Seed{}, errors.New("the seed partition would end beyond what an MBR can address (2^32 sectors)")
	}
	fs, err := build(start)
	if err != nil {
		return Seed{}, err
	}
	if err := d.writeAt(fs, start); err != nil {
		return Seed{}, err
	}
	e := s0[446+16*slot : 446+16*(slot+1)]
	clear(e)
	copy(e[1:4], chs(first))
	e[4] = fatMBRType
	copy(e[5:8], chs(first+count-1))
	binary.LittleEndian.PutUint32(e[8:], uint32(first))
	binary.LittleEndian.PutUint32(e[12:], uint32(count))
	if err := d.writeAt(s0, 0); err != nil {
		return Seed{}, err
	}
	return Seed{Partition: slot + 1, Offset: start, Size: size}, nil
}

// chs encodes an LBA as an MBR's cylinder/head/sector triple for 255
// heads and 63 sectors a track, or the maximum when it is beyond 1024
// cylinders.
func chs(lba int64) []byte {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	if c > 1023 {
		return []byte{0xfe, 0xff, 0xff}
	}
	h := (lba / sectors) % heads
	s := lba%sectors + 1
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

// addGPTSeed moves the backup GPT to the end of the disk and adds the
// seed partition in a free entry.
func addGPTSeed(d *device, s0 []byte, size int64, build func(int64) ([]byte, error)) (Seed, error) {
	g, ents, err := readGPT(d, 1)
	if err != nil {
		return Seed{}, fmt.Errorf("read the primary GPT: %w", err)
	}
	sec := d.sector
	lastLBA := uint64(d.size/sec - 1)
	entSectors := uint64((g.entriesBytes() + sec - 1) / sec)
	if g.backup > lastLBA {
		return Seed{}, fmt.Errorf("the GPT's backup header is at LBA %d, beyond the disk's end (LBA %d)", g.backup, lastLBA)
	}
	oldBackup := g.backup
	lastUsable := lastLBA - entSectors - 1

	slot := -1
	var end uint64 // the LBA after the last partition
	for i := uint32(0); i < g.entries; i++ {
		if isZero(ents[int64(i)*int64(g.entrySize):][:16]) {
			if slot < 0 {
				slot = int(i)
			}
		}
	}
	for _, p := range gptPartitions(g, ents) {
		end = max(end, p.last+1)
	}
	end = max(end, g.firstUsable)
	if slot < 0 {
		return Seed{}, fmt.Errorf("all %d GPT partition entries are used", g.entries)
	}
	start := (int64(end)*sec + mib - 1) / mib * mib
	first, last := uint64(start/sec), uint64((start+size)/sec-1)
	if last > lastUsable {
		return Seed{}, fmt.Errorf("no room for a %d-byte seed partition after the last partition (ends at byte %d; the disk has %d)", size, int64(end)*sec, d.size)
	}
	fs, err := build(start)
	if err != nil {
		return Seed{}, err
	}
	if err := d.writeAt(fs, start); err != nil {
		return Seed{}, err
	}

	e := ents[int64(slot)*int64(g.entrySize):][:g.entrySize]
	clear(e)
	copy(e, basicDataGUID)
	if _, err := rand.Read(e[16:32]); err != nil {
		return Seed{}, fmt.Errorf("make a partition GUID: %w", err)
	}
	e[16+7] = e[16+7]&0x0f | 0x40 // version 4 (the third field is little-endian)
	e[16+8] = e[16+8]&0x3f | 0x80 // RFC 4122 variant
	binary.LittleEndian.PutUint64(e[32:], first)
	binary.LittleEndian.PutUint64(e[40:], last)
	for i, c := range utf16.Encode([]rune("cidata")) {
		binary.LittleEndian.PutUint16(e[56+2*i:], c)
	}
	g.entriesCRC = crc32.ChecksumIEEE(ents)
	g.backup = lastLBA
	g.lastUsable = lastUsable

	// The backup first, then the primary that points to it.
	backupEntries := lastLBA - entSectors
	if err := d.writeAt(ents, int64(backupEntries)*sec); err != nil {
		return Seed{}, err
	}
	bh := &gptHeader{raw: slices.Clone(g.raw), current: lastLBA, backup: 1, firstUsable: g.firstUsable, lastUsable: lastUsable,
		entriesLBA: backupEntries, entries: g.entries, entrySize: g.entrySize, entriesCRC: g.entriesCRC}
	if err := d.writeAt(bh.encode(), int64(lastLBA)*sec); err != nil {
		return Seed{}, err
	}
	if err := d.writeAt(ents, int64(g.entriesLBA)*sec); err != nil {
		return Seed{}, err
	}
	if err := d.writeAt(g.encode(), sec); err != nil {
		return Seed{}, err
	}
	// The old backup header is now inside the disk: clear it, so that no
	// tool finds a stale table there.
	if oldBackup != lastLBA && oldBackup > 1 && (oldBackup < first || oldBackup > last) {
		if err := d.writeAt(make([]byte, sec), int64(oldBackup)*sec); err != nil {
			return Seed{}, err
		}
	}
	// The protective MBR covers the whole disk.
	for i := range 4 {
		pe := s0[446+16*i : 446+16*(i+1)]
		if pe[4] != 0xee {
			continue
		}
		binary.LittleEndian.PutUint32(pe[12:], uint32(min(lastLBA, 1<<32-1)))
		copy(pe[5:8], chs(int64(lastLBA)))
		if err := d.writeAt(s0, 0); err != nil {
			return Seed{}, err
		}
		break
	}
	return Seed{Partition: slot + 1, Offset: start, Size: size}, nil
}
