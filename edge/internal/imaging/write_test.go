package imaging

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// compressWith compresses b with the real command-line tool of c.
func compressWith(t *testing.T, c Compression, b []byte) []byte {
	t.Helper()
	switch c {
	case None:
		return b
	case Gzip:
		return []byte(run(t, b, needTool(t, "gzip", "gzip"), "-c", "-6"))
	case Zstd:
		// From a file, zstd records the content size in the frame header.
		return []byte(run(t, nil, needTool(t, "zstd", "zstd"), "-c", "-q", "-3", writeFile(t, "in", b)))
	case XZ:
		return []byte(run(t, b, needTool(t, "xz", "xz-utils"), "-c", "-1", "-T1"))
	}
	t.Fatalf("no compressor for %v", c)
	return nil
}

func TestWriteRaw(t *testing.T) {
	t.Parallel()
	img := diskImage()
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			art := compressWith(t, c, img)
			srv := serveArtifact(t, art)
			disk := newDisk(t, 16<<20)
			fillDisk(t, disk, int64(len(img)), 4096, 0xaa) // past the image: must stay
			var pl progressLog
			res, err := Write(context.Background(), srv.Client(),
				Source{URL: srv.URL + "/image" + secretQuery, SHA256: sha256Hex(art), Compression: c, Size: int64(len(art))},
				disk, pl.add)
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			got := readFile(t, disk)
			if !bytes.Equal(got[:len(img)], img) {
				t.Error("the disk does not hold the image")
			}
			if !bytes.Equal(got[len(img):len(img)+4096], bytes.Repeat([]byte{0xaa}, 4096)) {
				t.Error("Write changed the disk past the image's end")
			}
			if res.Written != int64(len(img)) || res.Downloaded != int64(len(art)) {
				t.Errorf("Result: written %d, downloaded %d; want %d, %d", res.Written, res.Downloaded, len(img), len(art))
			}
			if res.Duration <= 0 || res.MBps <= 0 {
				t.Errorf("Result: duration %v, rate %v", res.Duration, res.MBps)
			}
			if p, ok := pl.last(PhaseWrite); !ok || p.Done != int64(len(art)) || p.Total != int64(len(art)) {
				t.Errorf("last progress %+v (reported: %v); want done = total = %d", p, ok, len(art))
			}
		})
	}
}

// TestWriteRawUnknownSize writes an artifact whose size neither the
// source nor the server says (chunked encoding).
func TestWriteRawUnknownSize(t *testing.T) {
	t.Parallel()
	img := diskImage()
	art := compressWith(t, Gzip, img)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for b := art; len(b) > 0; {
			n := min(len(b), 100000)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	}))
	t.Cleanup(srv.Close)
	disk := newDisk(t, 8<<20)
	res, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL, SHA256: sha256Hex(art), Compression: Gzip}, disk, nil)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if res.Written != int64(len(img)) || !bytes.Equal(readFile(t, disk)[:len(img)], img) {
		t.Error("the disk does not hold the image")
	}
}

func TestWriteChecksumMismatch(t *testing.T) {
	t.Parallel()
	img := diskImage()
	for _, f := range []Format{Raw, QCOW2} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			art := img
			if f == QCOW2 {
				art = toQCOW2(t, img)
			}
			srv := serveArtifact(t, art)
			disk := newDisk(t, 16<<20)
			wrong := sha256Hex([]byte("another image"))
			_, err := Write(context.Background(), srv.Client(),
				Source{URL: srv.URL + "/image" + secretQuery, SHA256: wrong, Format: f}, disk, nil)
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("Write: %v; want a *ChecksumError", err)
			}
			if ce.Want != wrong || ce.Got != sha256Hex(art) {
				t.Errorf("ChecksumError want %s got %s; want %s got %s", ce.Want, ce.Got, wrong, sha256Hex(art))
			}
			msg := err.Error()
			if !strings.Contains(msg, "expected "+wrong) || !strings.Contains(msg, "got "+sha256Hex(art)) || !strings.Contains(msg, srv.URL+"/image") {
				t.Errorf("message %q does not say the URL, expected and actual", msg)
			}
			if strings.Contains(msg, "s3cr3t") {
				t.Errorf("message %q shows the query", msg)
			}
			if f == QCOW2 && !isZero(readFile(t, disk)) {
				t.Error("a qcow2 image whose checksum is wrong was written")
			}
		})
	}
}

// TestWriteTooLarge: an image larger than the disk is refused before
// anything is written, when its size is known in advance.
func TestWriteTooLarge(t *testing.T) {
	t.Parallel()
	img := diskImage()
	tests := map[string]struct {
		art []byte
		src Source
	}{
		"raw":   {art: img},
		"zstd":  {art: compressWith(t, Zstd, img), src: Source{Compression: Zstd}},
		"qcow2": {art: toQCOW2(t, img), src: Source{Format: QCOW2}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := serveArtifact(t, tt.art)
			disk := newDisk(t, 4<<20)
			src := tt.src
			src.URL, src.SHA256 = srv.URL+"/image", sha256Hex(tt.art)
			_, err := Write(context.Background(), srv.Client(), src, disk, nil)
			if err == nil || !strings.Contains(err.Error(), "fit on") {
				t.Fatalf("Write: %v; want a refusal that the image does not fit", err)
			}
			if !isZero(readFile(t, disk)) {
				t.Error("the disk was written")
			}
		})
	}
	// A compressed stream without its size stops at the disk's end.
	t.Run("gzip", func(t *testing.T) {
		t.Parallel()
		art := compressWith(t, Gzip, img)
		srv := serveArtifact(t, art)
		disk := newDisk(t, 4<<20)
		_, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL + "/image", SHA256: sha256Hex(art), Compression: Gzip}, disk, nil)
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("Write: %v; want an error that the image is larger than the disk", err)
		}
		if n := len(readFile(t, disk)); n != 4<<20 {
			t.Errorf("the disk file grew to %d bytes", n)
		}
	})
}

func TestWriteHTTPErrors(t *testing.T) {
	t.Parallel()
	img := diskImage()
	gz := compressWith(t, Gzip, img)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/truncated", "/truncated.gz":
			body := img
			if r.URL.Path == "/truncated.gz" {
				body = gz
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:len(body)/2])
			// Returning with fewer bytes than announced closes the
			// connection.
		case "/norange":
			w.Write(img)
		default:
			http.Error(w, "no such image", http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	tests := map[string]struct {
		src  Source
		want []string
	}{
		"404":            {src: Source{URL: srv.URL + "/missing" + secretQuery, SHA256: sha256Hex(img)}, want: []string{srv.URL + "/missing", "404"}},
		"truncated":      {src: Source{URL: srv.URL + "/truncated" + secretQuery, SHA256: sha256Hex(img)}, want: []string{srv.URL + "/truncated", "broke off"}},
		"truncated gzip": {src: Source{URL: srv.URL + "/truncated.gz" + secretQuery, SHA256: sha256Hex(gz), Compression: Gzip}, want: []string{srv.URL + "/truncated.gz", "broke off"}},
		"size mismatch":  {src: Source{URL: srv.URL + "/norange" + secretQuery, SHA256: sha256Hex(img), Size: 1234}, want: []string{srv.URL + "/norange", "ended after"}},
		"bad checksum":   {src: Source{URL: srv.URL + "/x" + secretQuery, SHA256: "abc"}, want: []string{"64 hex digits"}},
		"qcow2 gzip":     {src: Source{URL: srv.URL + "/x" + secretQuery, SHA256: sha256Hex(img), Format: QCOW2, Compression: Gzip}, want: []string{"cannot be compressed"}},
		"qcow2 no range": {src: Source{URL: srv.URL + "/norange" + secretQuery, SHA256: sha256Hex(img), Format: QCOW2}, want: []string{"not a qcow2 image"}},
		"unreachable":    {src: Source{URL: "http://127.0.0.1:1/image" + secretQuery, SHA256: sha256Hex(img)}, want: []string{"http://127.0.0.1:1/image", "refused"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			disk := newDisk(t, 16<<20)
			_, err := Write(context.Background(), srv.Client(), tt.src, disk, nil)
			if err == nil {
				t.Fatal("Write succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error %q shows the query", err)
			}
		})
	}
}

// TestWriteNoRanges: a qcow2 image from a server that ignores ranges is
// refused with a clear error after the checksum pass.
func TestWriteNoRanges(t *testing.T) {
	t.Parallel()
	q := toQCOW2(t, diskImage())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(q) }))
	t.Cleanup(srv.Close)
	_, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL, SHA256: sha256Hex(q), Format: QCOW2}, newDisk(t, 16<<20), nil)
	if err == nil || !strings.Contains(err.Error(), "ignores range requests") {
		t.Fatalf("Write: %v; want an error that the server ignores ranges", err)
	}
}

func TestWriteCanceled(t *testing.T) {
	t.Parallel()
	img := diskImage()
	srv := serveArtifact(t, img)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Write(ctx, srv.Client(), Source{URL: srv.URL + "/image", SHA256: sha256Hex(img)}, newDisk(t, 16<<20), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v; want context.Canceled", err)
	}
}

func TestWriteMissingDisk(t *testing.T) {
	t.Parallel()
	img := diskImage()
	srv := serveArtifact(t, img)
	_, err := Write(context.Background(), srv.Client(), Source{URL: srv.URL + "/image", SHA256: sha256Hex(img)}, t.TempDir()+"/nope", nil)
	if err == nil || !strings.Contains(err.Error(), "open the disk") {
		t.Fatalf("Write: %v; want an error opening the disk", err)
	}
}
