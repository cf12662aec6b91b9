package imaging

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// qcow2 header fields and flags (docs/interop/qcow2.txt in QEMU).
const (
	qcowMagic = 0x514649fb // "QFI\xfb"

	qcowIncompatDirty       = 1 << 0
	qcowIncompatCorrupt     = 1 << 1
	qcowIncompatExternal    = 1 << 2
	qcowIncompatCompression = 1 << 3
	qcowIncompatExtendedL2  = 1 << 4

	qcowOffsetMask   = 0x00fffffffffffe00
	qcowCompressed   = 1 << 62
	qcowZeroFlag     = 1
	qcowMaxTableSize = 32 << 20 // bytes of L1 table read at most
)

// qcowHeader is what Write needs of a qcow2 header.
type qcowHeader struct {
	version     uint32
	clusterBits uint32
	size        uint64
	l1Size      uint32
	l1Offset    uint64
	zstd        bool
}

func (h *qcowHeader) clusterSize() int64 { return 1 << h.clusterBits }

// parseQCOWHeader reads and checks a qcow2 header from its first bytes
// (at least 112). It refuses what Write does not support.
func parseQCOWHeader(b []byte) (*qcowHeader, error) {
	if len(b) < 72 || binary.BigEndian.Uint32(b) != qcowMagic {
		return nil, errors.New("not a qcow2 image (no QFI\\xfb magic)")
	}
	be := binary.BigEndian
	h := &qcowHeader{
		version:     be.Uint32(b[4:]),
		clusterBits: be.Uint32(b[20:]),
		size:        be.Uint64(b[24:]),
		l1Size:      be.Uint32(b[36:]),
		l1Offset:    be.Uint64(b[40:]),
	}
	if h.version != 2 && h.version != 3 {
		return nil, fmt.Errorf("qcow2 version %d is not supported (2 and 3 are)", h.version)
	}
	if be.Uint64(b[8:]) != 0 {
		return nil, errors.New("the qcow2 image has a backing file; flatten it first (qemu-img convert -O qcow2)")
	}
	if crypt := be.Uint32(b[32:]); crypt != 0 {
		return nil, fmt.Errorf("the qcow2 image is encrypted (method %d); encrypted images are not supported", crypt)
	}
	if h.clusterBits < 9 || h.clusterBits > 21 {
		return nil, fmt.Errorf("qcow2 cluster bits %d out of range 9..21", h.clusterBits)
	}
	if h.version == 3 {
		if len(b) < 104 {
			return nil, errors.New("qcow2 v3 header truncated")
		}
		incompat := be.Uint64(b[72:])
		hdrLen := be.Uint32(b[100:])
		switch {
		case incompat&qcowIncompatCorrupt != 0:
			return nil, errors.New("the qcow2 image is marked corrupt")
		case incompat&qcowIncompatExternal != 0:
			return nil, errors.New("the qcow2 image keeps its data in an external file; not supported")
		case incompat&qcowIncompatExtendedL2 != 0:
			return nil, errors.New("the qcow2 image has extended L2 entries (subclusters); not supported")
		case incompat&^(qcowIncompatDirty|qcowIncompatCompression) != 0:
			return nil, fmt.Errorf("the qcow2 image has unknown incompatible features %#x", incompat)
		}
		if incompat&qcowIncompatCompression != 0 {
			if hdrLen < 105 || len(b) < 105 {
				return nil, errors.New("qcow2 header says it has a compression type but is too short for one")
			}
			switch b[104] {
			case 0:
			case 1:
				h.zstd = true
			default:
				return nil, fmt.Errorf("qcow2 compression type %d is not supported (zlib and zstd are)", b[104])
			}
		}
	}
	if h.size > 1<<62 {
		return nil, fmt.Errorf("qcow2 virtual size %d out of range", h.size)
	}
	l2Entries := uint64(h.clusterSize() / 8)
	needL1 := (h.size + uint64(h.clusterSize())*l2Entries - 1) / (uint64(h.clusterSize()) * l2Entries)
	if uint64(h.l1Size) < needL1 {
		return nil, fmt.Errorf("qcow2 L1 table has %d entries, the virtual size needs %d", h.l1Size, needL1)
	}
	if needL1*8 > qcowMaxTableSize {
		return nil, fmt.Errorf("qcow2 L1 table of %d entries is too large", needL1)
	}
	return h, nil
}

// writeQCOW2 is Write for a QCOW2 artifact: a pass that checks the
// SHA-256, then one that writes the guest disk through range requests.
func writeQCOW2(ctx context.Context, client *http.Client, src Source, want []byte, d *device, progress func(Progress), res *Result) error {
	u := redact(src.URL)
	// Pass 1: download and check, writing nothing. The header is read on
	// the way, so an unsupported or too large image fails early.
	resp, err := get(ctx, client, src.URL, nil)
	if err != nil {
		return err
	}
	size, err := artifactSize(src, resp)
	if err != nil {
		resp.Body.Close()
		return err
	}
	h := sha256.New()
	body := &counter{r: resp.Body, h: h, rep: newReporter(progress, PhaseVerify, size)}
	head := make([]byte, 512)
	n, err := io.ReadFull(body, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		resp.Body.Close()
		return body.fail(u, err)
	}
	hdr, err := parseQCOWHeader(head[:n])
	if err != nil {
		resp.Body.Close()
		return fmt.Errorf("image %s: %w", u, err)
	}
	if int64(hdr.size) > d.size {
		resp.Body.Close()
		return fmt.Errorf("image %s: its disk of %d bytes does not fit on %s (%d bytes)", u, hdr.size, d.path, d.size)
	}
	_, err = io.Copy(io.Discard, &ctxReader{ctx: ctx, r: body})
	resp.Body.Close()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return body.fail(u, err)
	}
	res.Downloaded = body.n
	body.rep.end(body.n)
	if size > 0 && body.n != size {
		return fmt.Errorf("GET %s: the body ended after %d of %d bytes", u, body.n, size)
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return &ChecksumError{URL: u, Want: hex.EncodeToString(want), Got: hex.EncodeToString(got)}
	}

	// Pass 2: the same bytes (the server must say they did not change),
	// read where the tables point.
	ra := &httpReaderAt{ctx: ctx, client: client, url: src.URL, size: body.n, header: http.Header{}}
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		ra.header.Set("If-Match", etag)
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		ra.header.Set("If-Unmodified-Since", lm)
	}
	q := &qcowReader{h: hdr, r: ra}
	err = q.writeTo(ctx, d, newReporter(progress, PhaseWrite, int64(hdr.size)), res)
	res.Downloaded += ra.downloaded
	if err != nil {
		return fmt.Errorf("image %s: %w", u, err)
	}
	return d.sync()
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// qcowReader reads a qcow2 image's guest disk.
type qcowReader struct {
	h *qcowHeader
	r io.ReaderAt
	// zdec decodes zstd compressed clusters, made on first use.
	zdec *zstd.Decoder
}

// writeTo writes the whole guest disk to d from offset 0 in order,
// unallocated and zero clusters as zeros.
func (q *qcowReader) writeTo(ctx context.Context, d *device, rep *reporter, res *Result) error {
	cs := q.h.clusterSize()
	l2Entries := cs / 8
	total := int64(q.h.size)
	needL1 := (total + cs*l2Entries - 1) / (cs * l2Entries)

	// The header again: it must be the one pass 1 checked.
	head := make([]byte, 512)
	if err := readFullAt(q.r, head, 0); err != nil {
		return fmt.Errorf("read the qcow2 header: %w", err)
	}
	if h2, err := parseQCOWHeader(head); err != nil || *h2 != *q.h {
		return errors.New("the qcow2 header changed between the checksum pass and the write pass")
	}
	l1 := make([]byte, needL1*8)
	if err := readFullAt(q.r, l1, int64(q.h.l1Offset)); err != nil {
		return fmt.Errorf("read the qcow2 L1 table: %w", err)
	}
	l2 := make([]byte, cs)
	out := make([]byte, blockSize)
	used := 0         // bytes of out in use
	var written int64 // bytes of the guest disk written to d
	cluster := make([]byte, cs)
	flush := func() error {
		if used == 0 {
			return nil
		}
		if err := d.writeAt(out[:used], written); err != nil {
			return err
		}
		written += int64(used)
		res.Written = written
		used = 0
		rep.report(written)
		return ctx.Err()
	}
	for i := int64(0); i < needL1; i++ {
		l2Off := int64(binary.BigEndian.Uint64(l1[i*8:]) & qcowOffsetMask)
		if l2Off != 0 {
			if err := readFullAt(q.r, l2, l2Off); err != nil {
				return fmt.Errorf("read qcow2 L2 table %d: %w", i, err)
			}
		}
		for j := int64(0); j < l2Entries; j++ {
			guest := (i*l2Entries + j) * cs
			if guest >= total {
				break
			}
			n := min(cs, total-guest)
			var entry uint64
			if l2Off != 0 {
				entry = binary.BigEndian.Uint64(l2[j*8:])
			}
			if err := q.cluster(entry, cluster); err != nil {
				return fmt.Errorf("guest offset %d: %w", guest, err)
			}
			// cs divides blockSize (clusters are at most 2 MiB).
			copy(out[used:], cluster[:n])
			used += int(n)
			if used == len(out) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	rep.end(written)
	return nil
}

// cluster decodes the cluster an L2 entry describes into buf.
func (q *qcowReader) cluster(entry uint64, buf []byte) error {
	cs := q.h.clusterSize()
	if entry&qcowCompressed != 0 {
		x := 62 - (q.h.clusterBits - 8)
		off := int64(entry & (1<<x - 1))
		sectors := int64((entry>>x)&(1<<(q.h.clusterBits-8)-1)) + 1
		n := sectors*512 - off%512
		comp := make([]byte, n)
		if err := readFullAt(q.r, comp, off); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read a compressed cluster: %w", err)
		}
		var zr io.Reader
		if q.h.zstd {
			if q.zdec == nil {
				dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
				if err != nil {
					return fmt.Errorf("start the zstd decoder: %w", err)
				}
				q.zdec = dec
			}
			if err := q.zdec.Reset(bytes.NewReader(comp)); err != nil {
				return fmt.Errorf("decompress a cluster: %w", err)
			}
			zr = q.zdec
		} else {
			zr = flate.NewReader(bytes.NewReader(comp))
		}
		if _, err := io.ReadFull(zr, buf[:cs]); err != nil {
			return fmt.Errorf("decompress a cluster: %w", err)
		}
		return nil
	}
	off := int64(entry & qcowOffsetMask)
	if off == 0 || (q.h.version == 3 && entry&qcowZeroFlag != 0) {
		clear(buf)
		return nil
	}
	if off%cs != 0 {
		return fmt.Errorf("cluster offset %d is not aligned to the cluster size", off)
	}
	if err := readFullAt(q.r, buf, off); err != nil {
		return fmt.Errorf("read a cluster: %w", err)
	}
	return nil
}

// readFullAt reads len(p) bytes at off; a read that ends early is
// io.ErrUnexpectedEOF.
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readAhead is how much httpReaderAt fetches at once: qcow2 clusters
// mostly follow each other in the file, so one request serves many.
const readAhead = 8 << 20

// httpReaderAt reads a URL with HTTP range requests, a window of
// readAhead bytes at a time.
type httpReaderAt struct {
	ctx    context.Context
	client *http.Client
	url    string
	size   int64
	header http.Header

	win        []byte
	winOff     int64
	downloaded int64
}

// ReadAt reads from the window, fetching the one that starts at off when
// p is not in it.
func (h *httpReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	done := 0
	for done < len(p) {
		o := off + int64(done)
		if o >= h.size {
			return done, io.EOF
		}
		if o < h.winOff || o >= h.winOff+int64(len(h.win)) {
			if err := h.fetch(o, max(readAhead, int64(len(p)-done))); err != nil {
				return done, err
			}
		}
		done += copy(p[done:], h.win[o-h.winOff:])
	}
	return done, nil
}

// fetch reads [off, off+n) into the window, clamped to the size.
func (h *httpReaderAt) fetch(off, n int64) error {
	n = min(n, h.size-off)
	hdr := h.header.Clone()
	hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	resp, err := get(h.ctx, h.client, h.url, hdr)
	if err != nil {
		if strings.Contains(err.Error(), "412") {
			return fmt.Errorf("%w (the image changed on the server after its checksum was checked)", err)
		}
		return err
	}
	defer resp.Body.Close()
	want := fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, h.size)
	if cr := resp.Header.Get("Content-Range"); cr != want {
		return fmt.Errorf("GET %s: asked for %s, the server sent Content-Range %q", redact(h.url), want, cr)
	}
	if int64(cap(h.win)) < n {
		h.win = make([]byte, n)
	}
	h.win = h.win[:n]
	k, err := io.ReadFull(resp.Body, h.win)
	h.downloaded += int64(k)
	if err != nil {
		h.win = h.win[:0]
		return fmt.Errorf("GET %s: range at %d broke off after %d of %d bytes: %w", redact(h.url), off, k, n, err)
	}
	h.winOff = off
	return nil
}
