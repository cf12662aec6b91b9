// Package cpio writes cpio archives in the "newc" format (magic "070701"),
// the format the Linux kernel unpacks an initramfs from
// (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// A Writer adds directories, regular files, symbolic links and device
// nodes, creating missing parent directories first (the kernel does not),
// and ends the archive with the TRAILER!!! entry on Close. Every entry is
// owned by root and has modification time 0, so the same input gives the
// same bytes. Compression is the caller's: wrap the output in a
// gzip.Writer.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Magic starts every newc header.
const Magic = "070701"

// Trailer is the name of the entry that ends an archive.
const Trailer = "TRAILER!!!"

// headerLen is the size of a newc header: the magic and 13 fields of 8
// hexadecimal digits.
const headerLen = 6 + 13*8

// File type bits of the header's mode field (as in <sys/stat.h>).
const (
	TypeDir     = 0o040000
	TypeRegular = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
	typeMask    = 0o170000
)

// ErrClosed is returned by a Writer's methods after Close.
var ErrClosed = errors.New("cpio: archive already closed")

// Writer writes a newc archive to an io.Writer.
type Writer struct {
	w      io.Writer
	ino    uint32
	names  map[string]uint32 // entry name -> file type
	err    error             // the first write error; every later call returns it
	closed bool
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, names: map[string]uint32{}}
}

// Mkdir adds a directory, and its missing parents. Adding a directory
// that is already in the archive is not an error.
func (w *Writer) Mkdir(name string, perm fs.FileMode) error {
	name, err := w.prepare(name)
	if err != nil {
		return err
	}
	if typ, ok := w.names[name]; ok {
		if typ == TypeDir {
			return nil
		}
		return fmt.Errorf("cpio: mkdir %s: already in the archive as another type", name)
	}
	return w.entry(name, TypeDir|modeBits(perm), 2, 0, 0, nil)
}

// WriteFile adds a regular file holding data, creating missing parent
// directories.
func (w *Writer) WriteFile(name string, perm fs.FileMode, data []byte) error {
	name, err := w.prepare(name)
	if err != nil {
		return err
	}
	if err := w.unique(name); err != nil {
		return err
	}
	return w.entry(name, TypeRegular|modeBits(perm), 1, 0, 0, data)
}

// Symlink adds a symbolic link name pointing at target, creating missing
// parent directories of name.
func (w *Writer) Symlink(name, target string) error {
	name, err := w.prepare(name)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("cpio: symlink %s: empty target", name)
	}
	if err := w.unique(name); err != nil {
		return err
	}
	return w.entry(name, TypeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDevice adds a character device node, e.g. dev/console (5, 1).
func (w *Writer) CharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	return w.device(name, TypeChar, perm, major, minor)
}

// BlockDevice adds a block device node.
func (w *Writer) BlockDevice(name string, perm fs.FileMode, major, minor uint32) error {
	return w.device(name, TypeBlock, perm, major, minor)
}

func (w *Writer) device(name string, typ uint32, perm fs.FileMode, major, minor uint32) error {
	name, err := w.prepare(name)
	if err != nil {
		return err
	}
	if err := w.unique(name); err != nil {
		return err
	}
	return w.entry(name, typ|modeBits(perm), 1, major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	err := w.header(Trailer, 0, 0, 1, 0, 0, 0)
	w.closed = true
	return err
}

// prepare cleans name into the archive's form (relative, no "." or ".."
// elements) and adds its missing parent directories.
func (w *Writer) prepare(name string) (string, error) {
	if w.err != nil {
		return "", w.err
	}
	if w.closed {
		return "", ErrClosed
	}
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == "" || clean == Trailer {
		return "", fmt.Errorf("cpio: invalid entry name %q", name)
	}
	if dir := path.Dir(clean); dir != "." {
		if typ, ok := w.names[dir]; ok && typ != TypeDir {
			return "", fmt.Errorf("cpio: %s: parent %s is not a directory", clean, dir)
		} else if !ok {
			if err := w.Mkdir(dir, 0o755); err != nil {
				return "", err
			}
		}
	}
	return clean, nil
}

func (w *Writer) unique(name string) error {
	if _, ok := w.names[name]; ok {
		return fmt.Errorf("cpio: %s is already in the archive", name)
	}
	return nil
}

// modeBits converts the permission, setuid, setgid and sticky bits of
// perm to the header's mode bits.
func modeBits(perm fs.FileMode) uint32 {
	m := uint32(perm.Perm())
	if perm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// entry writes one header, the name and data, each padded to 4 bytes.
func (w *Writer) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s: %d bytes is more than a newc entry holds", name, len(data))
	}
	w.ino++
	if err := w.header(name, w.ino, mode, nlink, uint32(len(data)), rmajor, rminor); err != nil {
		return err
	}
	if err := w.write(data, pad(len(data))); err != nil {
		return err
	}
	w.names[name] = mode & typeMask
	return nil
}

func (w *Writer) header(name string, ino, mode, nlink, size, rmajor, rminor uint32) error {
	nameLen := len(name) + 1 // with its NUL
	b := make([]byte, 0, headerLen+nameLen+3)
	b = append(b, Magic...)
	for _, v := range []uint32{
		ino, mode, 0 /* uid */, 0 /* gid */, nlink, 0, /* mtime */
		size, 0, 0 /* devmajor, devminor */, rmajor, rminor, uint32(nameLen), 0, /* check */
	} {
		b = fmt.Appendf(b, "%08x", v)
	}
	b = append(b, name...)
	b = append(b, 0)
	return w.write(b, pad(headerLen+nameLen))
}

var zeros [3]byte

// write writes b followed by n bytes of padding, and remembers a failure.
func (w *Writer) write(b []byte, n int) error {
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("cpio: write: %w", err)
		return w.err
	}
	if n > 0 {
		if _, err := w.w.Write(zeros[:n]); err != nil {
			w.err = fmt.Errorf("cpio: write: %w", err)
			return w.err
		}
	}
	return nil
}

// pad returns the number of bytes that bring n to a multiple of 4.
func pad(n int) int {
	return (4 - n%4) % 4
}
