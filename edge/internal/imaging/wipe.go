package imaging

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// WipeMode says how thoroughly Wipe erases a disk.
type WipeMode int

// The modes of Wipe.
const (
	// Quick zeroes the first and last MiB of the disk and of every
	// partition its tables describe, where partition tables and the
	// signatures of filesystems, LVM and RAID live, then discards the
	// disk when it can.
	Quick WipeMode = iota
	// Full erases every byte: secure discard, else the device's zero-out,
	// else writes of zeros.
	Full
)

// String names the mode.
func (m WipeMode) String() string {
	switch m {
	case Quick:
		return "quick"
	case Full:
		return "full"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// The methods a WipeResult names.
const (
	MethodQuick         = "quick"          // signature regions zeroed
	MethodSecureDiscard = "secure-discard" // BLKSECDISCARD
	MethodZeroOut       = "zero-out"       // BLKZEROOUT
	MethodOverwrite     = "overwrite"      // zeros written
)

// WipeResult is what Wipe did, for the agent's log.
type WipeResult struct {
	Mode   WipeMode
	Method string
	// Size is the disk's size in bytes.
	Size int64
	// Zeroed counts the bytes zeroed (by writes or the device's
	// zero-out) or securely discarded.
	Zeroed int64
	// Regions is how many regions a quick wipe zeroed.
	Regions int
	// Discarded says a quick wipe also discarded the whole disk.
	Discarded bool
	Duration  time.Duration
}

// wipeChunk bounds one BLKZEROOUT or BLKSECDISCARD request, so that
// progress is reported and ctx checked between them.
const wipeChunk = 1 << 30

// Wipe erases the disk dev as mode says and flushes it. progress, when
// not nil, is called at most about once a second and at the end.
func Wipe(ctx context.Context, dev string, mode WipeMode, progress func(Progress)) (WipeResult, error) {
	start := time.Now()
	d, err := openDevice(dev)
	if err != nil {
		return WipeResult{}, err
	}
	defer d.Close()
	res := WipeResult{Mode: mode, Size: d.size}
	switch mode {
	case Quick:
		err = d.wipeQuick(ctx, progress, &res)
	case Full:
		err = d.wipeFull(ctx, progress, &res)
	default:
		err = fmt.Errorf("unknown wipe mode %v", mode)
	}
	if err == nil {
		err = d.sync()
	}
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("wipe %s (%v): %w", dev, mode, err)
	}
	return res, nil
}

// wipeQuick zeroes the signature regions and discards the disk.
func (d *device) wipeQuick(ctx context.Context, progress func(Progress), res *WipeResult) error {
	regions := quickRegions(d.size, partitions(d))
	var total int64
	for _, r := range regions {
		total += r.size
	}
	rep := newReporter(progress, PhaseWipe, total)
	for _, r := range regions {
		if err := ctx.Err(); err != nil {
			return err
		}
		base := res.Zeroed
		if err := d.zeroRange(r.off, r.size, func(done int64) error {
			rep.report(base + done)
			return ctx.Err()
		}); err != nil {
			return err
		}
		res.Zeroed += r.size
		res.Regions++
	}
	res.Method = MethodQuick
	rep.end(res.Zeroed)
	// The regions are written, and flushed, first: a discard need not
	// read back as zeros, and BLKDISCARD drops the device's cached pages
	// in its range, dirty ones too, so zeros not yet written back would be
	// lost and the disk left as it was.
	if err := d.sync(); err != nil {
		return err
	}
	if d.block {
		switch err := d.rangeIoctl(unix.BLKDISCARD, 0, d.size); {
		case err == nil:
			res.Discarded = true
		case !unsupported(err):
			return fmt.Errorf("discard: %w", err)
		}
	}
	return nil
}

// quickRegions returns, sorted and merged, the first and last MiB of the
// disk and of each partition, clamped to the disk.
func quickRegions(size int64, parts []extent) []extent {
	var rs []extent
	add := func(e extent) {
		n := min(int64(mib), e.size)
		rs = append(rs, extent{e.off, n}, extent{e.off + e.size - n, n})
	}
	add(extent{0, size})
	for _, p := range parts {
		add(p)
	}
	slices.SortFunc(rs, func(a, b extent) int { return cmp.Compare(a.off, b.off) })
	var out []extent
	for _, r := range rs {
		if r.off >= size || r.size <= 0 {
			continue
		}
		r.size = min(r.size, size-r.off)
		if n := len(out); n > 0 && r.off <= out[n-1].off+out[n-1].size {
			out[n-1].size = max(out[n-1].size, r.off+r.size-out[n-1].off)
			continue
		}
		out = append(out, r)
	}
	return out
}

// wipeFull erases every byte with the best method the disk has.
func (d *device) wipeFull(ctx context.Context, progress func(Progress), res *WipeResult) error {
	rep := newReporter(progress, PhaseWipe, d.size)
	if d.block {
		for _, m := range []struct {
			name string
			req  uint
		}{{MethodSecureDiscard, unix.BLKSECDISCARD}, {MethodZeroOut, unix.BLKZEROOUT}} {
			err := d.chunked(ctx, m.req, rep, res)
			if err == nil {
				res.Method = m.name
				rep.end(res.Zeroed)
				return nil
			}
			// Only a refusal of the first request falls through to the
			// next method; a failure halfway is an error.
			if res.Zeroed > 0 || !unsupported(err) {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	err := d.zeroRange(0, d.size, func(done int64) error {
		res.Zeroed = done
		rep.report(done)
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	res.Method = MethodOverwrite
	rep.end(res.Zeroed)
	return nil
}

// chunked runs a range ioctl over the whole disk, wipeChunk at a time.
func (d *device) chunked(ctx context.Context, req uint, rep *reporter, res *WipeResult) error {
	for off := int64(0); off < d.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(wipeChunk), d.size-off)
		if err := d.rangeIoctl(req, off, n); err != nil {
			return err
		}
		off += n
		res.Zeroed = off
		rep.report(off)
	}
	return nil
}
