package imaging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// device is an open disk: a block device or a regular file standing in
// for one.
type device struct {
	f     *os.File
	path  string
	block bool
	size  int64
	// sector is the logical sector size: what partition tables count in.
	sector int64
}

// openDevice opens dev for reading and writing. A block device is
// opened exclusively, so that one that is mounted or in use by the
// kernel (a RAID member, a device-mapper target) is refused with EBUSY.
func openDevice(dev string) (*device, error) {
	st, err := os.Stat(dev)
	if err != nil {
		return nil, fmt.Errorf("open the disk: %w", err)
	}
	flags := os.O_RDWR
	block := st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	switch {
	case block:
		flags |= unix.O_EXCL
	case st.Mode().IsRegular():
	default:
		return nil, fmt.Errorf("open the disk: %s is neither a block device nor a regular file", dev)
	}
	f, err := os.OpenFile(dev, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open the disk: %w", err)
	}
	d := &device{f: f, path: dev, block: block, sector: 512}
	if d.size, err = fileSize(f); err != nil {
		f.Close()
		return nil, err
	}
	if block {
		if n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && n >= 512 && n <= 65536 && n&(n-1) == 0 {
			d.sector = int64(n)
		}
	}
	return d, nil
}

// Close closes the device.
func (d *device) Close() error { return d.f.Close() }

// sync flushes what was written to the disk itself.
func (d *device) sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", d.path, err)
	}
	return nil
}

// DeviceSize returns the size in bytes of dev: a block device's
// (BLKGETSIZE64) or a regular file's.
func DeviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, fmt.Errorf("open the disk: %w", err)
	}
	defer f.Close()
	return fileSize(f)
}

// fileSize is the size of a block device or regular file.
func fileSize(f *os.File) (int64, error) {
	var n uint64
	err := ioctl(f, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
	if err == nil {
		return int64(n), nil
	}
	if !errors.Is(err, unix.ENOTTY) {
		return 0, fmt.Errorf("read the size of %s: %w", f.Name(), err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("read the size of %s: %w", f.Name(), err)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("read the size of %s: not a block device or regular file", f.Name())
	}
	return st.Size(), nil
}

// rangeIoctl runs BLKDISCARD, BLKSECDISCARD or BLKZEROOUT over
// [off, off+n).
func (d *device) rangeIoctl(req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	return ioctl(d.f, req, uintptr(unsafe.Pointer(&r[0])))
}

// unsupported says a block-device request is not available here: a
// regular file (ENOTTY), a device without it (EOPNOTSUPP), or a request
// the driver refuses for this device (EINVAL).
func unsupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

func ioctl(f *os.File, req uint, arg uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), arg)
	if e != 0 {
		return e
	}
	return nil
}

// zeros is a block of zeros to write from; never written to.
var zeros = make([]byte, blockSize)

// zeroRange writes zeros over [off, off+n) in blocks of blockSize,
// calling each after every block with the bytes written so far.
func (d *device) zeroRange(off, n int64, each func(done int64) error) error {
	var done int64
	for done < n {
		k := min(n-done, blockSize)
		if _, err := d.f.WriteAt(zeros[:k], off+done); err != nil {
			return fmt.Errorf("write zeros to %s at %d: %w", d.path, off+done, err)
		}
		done += k
		if each != nil {
			if err := each(done); err != nil {
				return err
			}
		}
	}
	return nil
}

// readAt reads exactly len(p) bytes at off.
func (d *device) readAt(p []byte, off int64) error {
	if _, err := d.f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s at %d: beyond its end", d.path, off)
		}
		return fmt.Errorf("read %s at %d: %w", d.path, off, err)
	}
	return nil
}

// writeAt writes p at off.
func (d *device) writeAt(p []byte, off int64) error {
	if _, err := d.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("write %s at %d: %w", d.path, off, err)
	}
	return nil
}

// isZero says b holds only zeros.
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
