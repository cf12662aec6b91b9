package imaging

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format is the layout of an image artifact.
type Format int

// The image formats Write takes.
const (
	// Raw is a byte-for-byte disk image.
	Raw Format = iota
	// QCOW2 is a QEMU copy-on-write image, version 2 or 3, without a
	// backing file or encryption; its own zlib (or zstd) compressed
	// clusters are supported.
	QCOW2
)

// String names the format.
func (f Format) String() string {
	switch f {
	case Raw:
		return "raw"
	case QCOW2:
		return "qcow2"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// Compression is how a Raw artifact is compressed as a whole.
type Compression int

// The compressions Write takes.
const (
	None Compression = iota
	Gzip
	Zstd
	XZ
)

// String names the compression.
func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case XZ:
		return "xz"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// Source is an image artifact to install.
type Source struct {
	// URL is where the artifact is fetched from with GET. Only its
	// scheme, host and path appear in errors: a query may hold a secret.
	URL string
	// SHA256 is the hex SHA-256 of the artifact as served (compressed).
	SHA256 string
	Format Format
	// Compression of the whole artifact; only with Raw.
	Compression Compression
	// Size is the artifact's length in bytes, 0 when unknown.
	Size int64
}

// The phases a Progress reports.
const (
	// PhaseVerify downloads a QCOW2 artifact and checks its SHA-256;
	// nothing is written. Done and Total count artifact bytes.
	PhaseVerify = "verify"
	// PhaseWrite writes the disk. For Raw it is the one pass that
	// downloads, checks and writes, and Done and Total count artifact
	// bytes (the decompressed size is not known in advance); for QCOW2,
	// Done and Total count bytes of the guest disk.
	PhaseWrite = "write"
	// PhaseWipe is Wipe's; Done and Total count bytes of the disk.
	PhaseWipe = "wipe"
)

// Progress is how far a phase got. Total is 0 when unknown.
type Progress struct {
	Phase       string
	Done, Total int64
}

// Result is what Write did.
type Result struct {
	// Downloaded counts the bytes received over HTTP, by every pass.
	Downloaded int64
	// Written counts the bytes written to the disk.
	Written  int64
	Duration time.Duration
	// MBps is Written in megabytes (10^6) per second of Duration.
	MBps float64
}

// ChecksumError says that the artifact's SHA-256 is not the one the
// Source names. Write may have written part or all of the disk by then:
// the caller must wipe it.
type ChecksumError struct {
	// URL is the artifact's, without its query.
	URL string
	// Want and Got are hex SHA-256s.
	Want, Got string
}

// Error says the URL and both checksums.
func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s: SHA-256 checksum mismatch: expected %s, got %s", e.URL, e.Want, e.Got)
}

// blockSize is how much Write and Wipe write at once.
const blockSize = 4 << 20

// progressInterval is the least time between two Progress reports of a
// phase, besides its last.
const progressInterval = time.Second

// reporter calls a progress function at most every progressInterval.
type reporter struct {
	fn    func(Progress)
	phase string
	total int64
	last  time.Time
}

func newReporter(fn func(Progress), phase string, total int64) *reporter {
	return &reporter{fn: fn, phase: phase, total: total, last: time.Now()}
}

// report reports done when a progressInterval has passed since the last
// report.
func (r *reporter) report(done int64) {
	if r.fn == nil || time.Since(r.last) < progressInterval {
		return
	}
	r.last = time.Now()
	r.fn(Progress{Phase: r.phase, Done: done, Total: r.total})
}

// end reports done, always.
func (r *reporter) end(done int64) {
	if r.fn != nil {
		r.fn(Progress{Phase: r.phase, Done: done, Total: r.total})
	}
}

// Write installs the image src on dev: downloads it with client (nil:
// http.DefaultClient), checks its SHA-256, and writes the disk image it
// holds to dev from offset 0, then flushes dev. progress, when not nil,
// is called at most about once a second and at the end of each phase.
//
// A Raw artifact is written in one streaming pass; its checksum is known
// only at the end, so a *ChecksumError comes after dev was written. A
// QCOW2 artifact is downloaded once to check the checksum, then read
// again with HTTP range requests while dev is written. An image larger
// than dev is refused before anything is written when its size is known
// in advance (uncompressed or zstd with the content size in its frame
// header, and QCOW2), else as soon as the stream passes dev's end;
// nothing is ever written past dev's end.
func Write(ctx context.Context, client *http.Client, src Source, dev string, progress func(Progress)) (Result, error) {
	start := time.Now()
	if client == nil {
		client = http.DefaultClient
	}
	want, err := hex.DecodeString(src.SHA256)
	if err != nil || len(want) != sha256.Size {
		return Result{}, fmt.Errorf("image %s: the SHA-256 %q is not 64 hex digits", redact(src.URL), src.SHA256)
	}
	switch {
	case src.Format != Raw && src.Format != QCOW2:
		return Result{}, fmt.Errorf("image %s: unknown format %v", redact(src.URL), src.Format)
	case src.Compression < None || src.Compression > XZ:
		return Result{}, fmt.Errorf("image %s: unknown compression %v", redact(src.URL), src.Compression)
	case src.Format == QCOW2 && src.Compression != None:
		return Result{}, fmt.Errorf("image %s: a qcow2 image cannot be compressed as a whole (%v); qcow2 compresses its own clusters", redact(src.URL), src.Compression)
	case src.Size < 0:
		return Result{}, fmt.Errorf("image %s: negative size %d", redact(src.URL), src.Size)
	}
	d, err := openDevice(dev)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	var res Result
	if src.Format == QCOW2 {
		err = writeQCOW2(ctx, client, src, want, d, progress, &res)
	} else {
		err = writeRaw(ctx, client, src, want, d, progress, &res)
	}
	res.Duration = time.Since(start)
	if s := res.Duration.Seconds(); s > 0 {
		res.MBps = float64(res.Written) / 1e6 / s
	}
	return res, err
}

// writeRaw is Write's one pass for a Raw artifact.
func writeRaw(ctx context.Context, client *http.Client, src Source, want []byte, d *device, progress func(Progress), res *Result) error {
	u := redact(src.URL)
	resp, err := get(ctx, client, src.URL, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	size, err := artifactSize(src, resp)
	if err != nil {
		return err
	}
	if src.Compression == None && size > d.size {
		return fmt.Errorf("image %s: %d bytes do not fit on %s (%d bytes)", u, size, d.path, d.size)
	}
	h := sha256.New()
	body := &counter{r: resp.Body, h: h, rep: newReporter(progress, PhaseWrite, size)}
	br := bufio.NewReaderSize(body, 1<<20)
	var r io.Reader = br
	switch src.Compression {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return body.fail(u, fmt.Errorf("read the gzip header: %w", err))
		}
		r = zr
	case Zstd:
		if n, ok := zstdContentSize(br); ok && n > d.size {
			return fmt.Errorf("image %s: %d bytes (the zstd frame's content size) do not fit on %s (%d bytes)", u, n, d.path, d.size)
		}
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return body.fail(u, fmt.Errorf("start the zstd decoder: %w", err))
		}
		defer zr.Close()
		r = zr
	case XZ:
		zr, err := xz.NewReader(br)
		if err != nil {
			return body.fail(u, fmt.Errorf("read the xz header: %w", err))
		}
		r = zr
	}
	buf := make([]byte, blockSize)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := fill(r, buf)
		if n > 0 {
			if off+int64(n) > d.size {
				return fmt.Errorf("image %s: larger than %s (%d bytes); stopped at its end", u, d.path, d.size)
			}
			if err := d.writeAt(buf[:n], off); err != nil {
				return err
			}
			off += int64(n)
			res.Written = off
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return body.fail(u, rerr)
		}
	}
	// Whatever follows the compressed stream is part of the artifact.
	if _, err := io.Copy(io.Discard, br); err != nil {
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
	return d.sync()
}

// fill reads into buf until it is full or r ends; err is io.EOF only
// when r ended cleanly (a decompressor's io.ErrUnexpectedEOF is a
// truncated stream and returned as such).
func fill(r io.Reader, buf []byte) (n int, err error) {
	for n < len(buf) && err == nil {
		var k int
		k, err = r.Read(buf[n:])
		n += k
	}
	if n == len(buf) && err == io.EOF {
		err = nil
	}
	return n, err
}

// artifactSize is the artifact's length from src and the response's
// Content-Length, which must agree when both are known; 0 when neither
// is.
func artifactSize(src Source, resp *http.Response) (int64, error) {
	n := resp.ContentLength
	if n >= 0 && src.Size > 0 && n != src.Size {
		return 0, fmt.Errorf("GET %s: the server sends %d bytes, the image is %d bytes", redact(src.URL), n, src.Size)
	}
	if src.Size > 0 {
		return src.Size, nil
	}
	return max(n, 0), nil
}

// zstdContentSize peeks at the first zstd frame's header and returns the
// content size it declares, if any.
func zstdContentSize(br *bufio.Reader) (int64, bool) {
	b, _ := br.Peek(zstd.HeaderMaxSize)
	var h zstd.Header
	if err := h.Decode(b); err != nil || !h.HasFCS || h.FrameContentSize > 1<<62 {
		return 0, false
	}
	return int64(h.FrameContentSize), true
}

// counter counts and hashes what is read from an HTTP body and reports
// progress.
type counter struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	rep *reporter
	err error
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		c.rep.report(c.n)
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// fail explains err, which came from reading the body through a
// decompressor: a broken download is named as such, before what the
// decompressor made of it.
func (c *counter) fail(u string, err error) error {
	if c.err != nil {
		return fmt.Errorf("GET %s: the body broke off after %d bytes: %w", u, c.n, c.err)
	}
	return fmt.Errorf("image %s: decompress: %w", u, err)
}

// get sends a GET for rawURL with the extra headers and returns the
// response when its status is 200, or 206 when the request has a Range.
func get(ctx context.Context, client *http.Client, rawURL string, header http.Header) (*http.Response, error) {
	u := redact(rawURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, unwrapURLError(err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, unwrapURLError(err))
	}
	want := http.StatusOK
	if header.Get("Range") != "" {
		want = http.StatusPartialContent
	}
	if resp.StatusCode != want {
		resp.Body.Close()
		if want == http.StatusPartialContent && resp.StatusCode == http.StatusOK {
			return nil, fmt.Errorf("GET %s: the server ignores range requests (answered 200 to one), which a qcow2 image needs", u)
		}
		return nil, fmt.Errorf("GET %s: the server answered %s", u, resp.Status)
	}
	return resp, nil
}

// unwrapURLError drops the *url.Error around err: it quotes the whole
// URL, query included.
func unwrapURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// redact returns rawURL without user information, query or fragment,
// for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		s, _, _ := strings.Cut(rawURL, "?")
		return s
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}
