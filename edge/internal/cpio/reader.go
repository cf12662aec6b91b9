package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Entry is one member of an archive, as ReadAll returns it.
type Entry struct {
	Name string
	// Mode holds the file type bits (TypeDir, TypeRegular...) and the
	// permission bits.
	Mode  uint32
	UID   uint32
	GID   uint32
	Nlink uint32
	Mtime uint32
	// RdevMajor and RdevMinor are a device node's numbers.
	RdevMajor, RdevMinor uint32
	// Data is a regular file's contents or a symbolic link's target.
	Data []byte
}

// Type returns the entry's file type bits.
func (e *Entry) Type() uint32 { return e.Mode & typeMask }

// ReadAll reads a newc archive up to its trailer and returns its entries.
// Archives with several concatenated parts, or compressed ones, are the
// caller's to split and decompress.
func ReadAll(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	var (
		out []Entry
		off int64
	)
	skip := func(n int) error {
		_, err := br.Discard(n)
		off += int64(n)
		return err
	}
	for {
		var h [headerLen]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("cpio: archive ends at offset %d without a trailer", off)
			}
			return nil, fmt.Errorf("cpio: read: %w", err)
		}
		off += headerLen
		if string(h[:6]) != Magic {
			return nil, fmt.Errorf("cpio: offset %d: magic %q is not newc's %q", off-headerLen, h[:6], Magic)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("cpio: offset %d: field %d: %w", off-headerLen, i, err)
			}
			f[i] = uint32(v)
		}
		nameLen, size := int(f[11]), int(f[6])
		if nameLen == 0 || nameLen > 4096 {
			return nil, fmt.Errorf("cpio: offset %d: name size %d", off-headerLen, nameLen)
		}
		name := make([]byte, nameLen)
		if _, err := io.ReadFull(br, name); err != nil {
			return nil, fmt.Errorf("cpio: read a name: %w", err)
		}
		off += int64(nameLen)
		if name[nameLen-1] != 0 {
			return nil, fmt.Errorf("cpio: offset %d: name is not NUL-terminated", off-int64(nameLen))
		}
		if err := skip(pad(headerLen + nameLen)); err != nil {
			return nil, fmt.Errorf("cpio: read: %w", err)
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("cpio: read the data of %s: %w", name[:nameLen-1], err)
		}
		off += int64(size)
		if string(name[:nameLen-1]) == Trailer {
			return out, nil
		}
		if err := skip(pad(size)); err != nil {
			return nil, fmt.Errorf("cpio: read: %w", err)
		}
		out = append(out, Entry{
			Name: string(name[:nameLen-1]), Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5],
			RdevMajor: f[9], RdevMinor: f[10], Data: data,
		})
	}
}
