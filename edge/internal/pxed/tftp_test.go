package pxed

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// tftpEnv is a TFTP server on 127.0.0.1 serving a temporary root.
type tftpEnv struct {
	addr    string // host:port
	root    string
	outside string // a file next to the root that must never be served
	files   map[string][]byte
	metrics *Metrics
	log     *syncbuf.Buffer
}

func newTFTPEnv(t *testing.T) *tftpEnv {
	t.Helper()
	return newTFTPEnvWith(t, DefaultConfig().TFTPMaxTransfers)
}

// newTFTPEnvWith is newTFTPEnv with at most maxTransfers at once.
func newTFTPEnvWith(t *testing.T, maxTransfers int) *tftpEnv {
	t.Helper()
	top := t.TempDir()
	env := &tftpEnv{
		root:    filepath.Join(top, "root"),
		outside: filepath.Join(top, "secret"),
		log:     &syncbuf.Buffer{},
		files: map[string][]byte{
			"undionly.kpxe":   randomBytes(100_003),
			"efi/snponly.efi": randomBytes(4 * 1024), // a whole number of 1024-byte blocks
			"small.txt":       []byte("hello\n"),
		},
	}
	mustWrite(t, env.outside, []byte(secretContent))
	for name, b := range env.files {
		mustWrite(t, filepath.Join(env.root, name), b)
	}
	if err := os.Symlink(env.outside, filepath.Join(env.root, "link-out")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(env.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	env.metrics = m
	th := NewTFTPHandler(root, maxTransfers, m, testLogger(env.log))
	srv := tftp.NewServer(th.Read, th.Write)
	srv.SetTimeout(time.Second)
	conn, err := ListenTFTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = conn.LocalAddr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	t.Cleanup(func() {
		srv.Shutdown()
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return env
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// eventually waits for cond, which the server makes true once it has seen
// the client's last acknowledgement.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Errorf("gave up waiting: %s", what)
}

func (env *tftpEnv) counted(t *testing.T, result string, want float64) {
	t.Helper()
	eventually(t, "carbide_pxe_tftp_transfers_total{result="+result+"} = "+strconv.FormatFloat(want, 'f', -1, 64), func() bool {
		return testutil.ToFloat64(env.metrics.tftpTransfers.WithLabelValues(result)) == want
	})
}

func TestTFTPRead(t *testing.T) {
	t.Parallel()
	env := newTFTPEnv(t)
	tests := map[string]struct {
		file    string
		blksize int // 0: the default, 512
		tsize   bool
	}{
		"blksize and tsize":            {file: "undionly.kpxe", blksize: 1428, tsize: true},
		"no options":                   {file: "undionly.kpxe"},
		"whole blocks":                 {file: "efi/snponly.efi", blksize: 1024, tsize: true},
		"largest blksize for loopback": {file: "undionly.kpxe", blksize: 65464, tsize: true},
		"smaller than a block":         {file: "small.txt", tsize: true},
	}
	var ok float64
	for name, tt := range tests {
		c, err := tftp.NewClient(env.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(2 * time.Second)
		if tt.blksize != 0 {
			c.SetBlockSize(tt.blksize)
		}
		c.RequestTSize(tt.tsize)
		wt, err := c.Receive(tt.file, "octet")
		if err != nil {
			t.Errorf("%s: Receive: %v", name, err)
			continue
		}
		size, hasSize := wt.(tftp.IncomingTransfer).Size()
		if tt.tsize && (!hasSize || size != int64(len(env.files[tt.file]))) {
			t.Errorf("%s: tsize %d (%v), want %d", name, size, hasSize, len(env.files[tt.file]))
		}
		if !tt.tsize && hasSize {
			t.Errorf("%s: tsize %d sent without being asked for", name, size)
		}
		var buf bytes.Buffer
		n, err := wt.WriteTo(&buf)
		if err != nil {
			t.Errorf("%s: WriteTo: %v", name, err)
			continue
		}
		if n != int64(len(env.files[tt.file])) || !bytes.Equal(buf.Bytes(), env.files[tt.file]) {
			t.Errorf("%s: received %d bytes that differ from the file's %d", name, n, len(env.files[tt.file]))
		}
		ok++
	}
	env.counted(t, tftpOK, ok)
	var total int
	for _, tt := range tests {
		total += len(env.files[tt.file])
	}
	eventually(t, "carbide_pxe_tftp_bytes_total", func() bool {
		return testutil.ToFloat64(env.metrics.tftpBytes) == float64(total)
	})
	log := env.log.String()
	for _, want := range []string{`msg="tftp transfer" client=127.0.0.1 file=undionly.kpxe bytes=100003 duration=`, "file=efi/snponly.efi bytes=4096"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not hold %q:\n%s", want, log)
		}
	}
}

// TestTFTPOptionsOnTheWire reads the first packets of a transfer by hand:
// the option acknowledgement carries the block size asked for and the
// file's size, and the first data block has that block size.
func TestTFTPOptionsOnTheWire(t *testing.T) {
	t.Parallel()
	env := newTFTPEnv(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	server, err := net.ResolveUDPAddr("udp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	rrq := []byte{0, 1}
	for _, s := range []string{"undionly.kpxe", "octet", "blksize", "1468", "tsize", "0"} {
		rrq = append(append(rrq, s...), 0)
	}
	if _, err := conn.WriteTo(rrq, server); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if op := binary.BigEndian.Uint16(buf); op != 6 {
		t.Fatalf("first reply has opcode %d, want 6 (OACK): %q", op, buf[:n])
	}
	opts := map[string]string{}
	fields := strings.Split(strings.TrimSuffix(string(buf[2:n]), "\x00"), "\x00")
	for i := 0; i+1 < len(fields); i += 2 {
		opts[fields[i]] = fields[i+1]
	}
	want := map[string]string{"blksize": "1468", "tsize": strconv.Itoa(len(env.files["undionly.kpxe"]))}
	for k, v := range want {
		if opts[k] != v {
			t.Errorf("OACK %s = %q, want %q (all: %v)", k, opts[k], v, opts)
		}
	}
	if _, err := conn.WriteTo([]byte{0, 4, 0, 0}, from); err != nil { // ACK 0
		t.Fatal(err)
	}
	n, _, err = conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if op, block := binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]); op != 3 || block != 1 {
		t.Fatalf("second reply: opcode %d block %d, want DATA block 1", op, block)
	}
	if n-4 != 1468 || !bytes.Equal(buf[4:n], env.files["undionly.kpxe"][:1468]) {
		t.Errorf("DATA block 1 has %d bytes, want the file's first 1468", n-4)
	}
	// End the transfer: an ERROR packet from the client.
	if _, err := conn.WriteTo(append([]byte{0, 5, 0, 0}, "done\x00"...), from); err != nil {
		t.Fatal(err)
	}
	env.counted(t, tftpFailed, 1)
}

func TestTFTPWriteRefused(t *testing.T) {
	t.Parallel()
	env := newTFTPEnv(t)
	c, err := tftp.NewClient(env.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	for _, name := range []string{"new.bin", "undionly.kpxe", "../escape.bin"} {
		rf, err := c.Send(name, "octet")
		if err == nil {
			_, err = rf.ReadFrom(strings.NewReader("overwrite"))
		}
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("write of %s: %v, want the server's read-only error", name, err)
		}
	}
	env.counted(t, tftpWriteRefused, 3)
	if _, err := os.Stat(filepath.Join(env.root, "new.bin")); err == nil {
		t.Error("new.bin was created")
	}
	if b, _ := os.ReadFile(filepath.Join(env.root, "undionly.kpxe")); !bytes.Equal(b, env.files["undionly.kpxe"]) {
		t.Error("undionly.kpxe was changed")
	}
	if !strings.Contains(env.log.String(), `msg="tftp write refused" client=127.0.0.1 file=new.bin`) {
		t.Errorf("the refusal is not logged:\n%s", env.log)
	}
}

func TestTFTPTraversal(t *testing.T) {
	t.Parallel()
	env := newTFTPEnv(t)
	tests := map[string]struct {
		result, message string
	}{
		"../secret":               {tftpInvalid, "access violation"},
		"efi/../../secret":        {tftpInvalid, "access violation"},
		"efi/../undionly.kpxe":    {tftpInvalid, "access violation"},
		env.outside:               {tftpInvalid, "access violation"}, // absolute
		"/undionly.kpxe":          {tftpInvalid, "access violation"},
		"link-out":                {tftpDenied, "access violation"},
		"efi":                     {tftpNotFound, "file not found"}, // a directory
		"missing.efi":             {tftpNotFound, "file not found"},
		"undionly.kpxe/../secret": {tftpInvalid, "access violation"},
	}
	counts := map[string]float64{}
	for name, tt := range tests {
		c, err := tftp.NewClient(env.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(2 * time.Second)
		c.RequestTSize(true)
		wt, err := c.Receive(name, "octet")
		if err == nil {
			var buf bytes.Buffer
			wt.WriteTo(&buf)
			t.Errorf("read of %q succeeded with %d bytes", name, buf.Len())
			continue
		}
		if !strings.Contains(err.Error(), tt.message) || strings.Contains(err.Error(), env.root) {
			t.Errorf("read of %q: %v, want %q and no server path", name, err, tt.message)
		}
		counts[tt.result]++
	}
	for result, n := range counts {
		env.counted(t, result, n)
	}
}

// TestTFTPRealClients reads and writes with the TFTP clients installed on
// this machine: curl (tftp://) and busybox tftp. tftp-hpa and atftp are
// not used: they are not installed where this test was written.
func TestTFTPRealClients(t *testing.T) {
	t.Parallel()
	env := newTFTPEnv(t)
	host, port, err := net.SplitHostPort(env.addr)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	local := filepath.Join(out, "upload.bin")
	mustWrite(t, local, []byte("overwrite"))

	type step struct {
		args    []string
		file    string // the file a read must produce, "" for a refusal
		outFile string
	}
	clients := map[string][]step{
		"curl": {
			{args: []string{"--tftp-blksize", "1024", "-o", filepath.Join(out, "curl-1"), "tftp://" + env.addr + "/undionly.kpxe"}, file: "undionly.kpxe", outFile: "curl-1"},
			{args: []string{"-o", filepath.Join(out, "curl-2"), "tftp://" + env.addr + "/efi/snponly.efi"}, file: "efi/snponly.efi", outFile: "curl-2"},
			{args: []string{"-o", filepath.Join(out, "curl-3"), "tftp://" + env.addr + "/link-out"}, outFile: "curl-3"},
			{args: []string{"-T", local, "tftp://" + env.addr + "/upload.bin"}},
		},
		"busybox": {
			{args: []string{"tftp", "-g", "-b", "1468", "-r", "undionly.kpxe", "-l", filepath.Join(out, "bb-1"), host, port}, file: "undionly.kpxe", outFile: "bb-1"},
			{args: []string{"tftp", "-g", "-r", "../secret", "-l", filepath.Join(out, "bb-2"), host, port}, outFile: "bb-2"},
			{args: []string{"tftp", "-g", "-r", env.outside, "-l", filepath.Join(out, "bb-3"), host, port}, outFile: "bb-3"},
			{args: []string{"tftp", "-p", "-l", local, "-r", "upload.bin", host, port}},
		},
	}
	for client, steps := range clients {
		bin, err := exec.LookPath(client)
		if err != nil {
			t.Errorf("%s is not installed (install curl and busybox to run this test): %v", client, err)
			continue
		}
		if client == "busybox" {
			if out, err := exec.Command(bin, "tftp", "--help").CombinedOutput(); !strings.Contains(string(out), "tftp") {
				t.Errorf("busybox has no tftp applet: %v\n%s", err, out)
				continue
			}
		}
		for _, s := range steps {
			args := s.args
			if client == "curl" {
				args = append([]string{"--silent", "--show-error", "--max-time", "30"}, args...)
			}
			cmd := exec.Command(bin, args...)
			output, err := cmd.CombinedOutput()
			if s.file != "" {
				if err != nil {
					t.Errorf("%s %v: %v\n%s", client, args, err, output)
					continue
				}
				got, _ := os.ReadFile(filepath.Join(out, s.outFile))
				if !bytes.Equal(got, env.files[s.file]) {
					t.Errorf("%s %v: got %d bytes that differ from the file's %d", client, args, len(got), len(env.files[s.file]))
				}
				continue
			}
			if err == nil {
				t.Errorf("%s %v succeeded; want it refused", client, args)
			}
			if s.outFile != "" {
				if got, _ := os.ReadFile(filepath.Join(out, s.outFile)); strings.Contains(string(got), secretContent) {
					t.Errorf("%s %v received the file outside the root", client, args)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(env.root, "upload.bin")); err == nil {
		t.Error("a client created upload.bin")
	}
	env.counted(t, tftpOK, 3)
	env.counted(t, tftpWriteRefused, 2)
}

// TestTFTPTransferCap holds the only transfer slot with a client that
// does not acknowledge, and checks that the next request gets an error
// packet saying the server is busy, is counted, and that the slot serves
// again once the stalled transfer has ended.
func TestTFTPTransferCap(t *testing.T) {
	t.Parallel()
	env := newTFTPEnvWith(t, 1)
	stalled, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	server, err := net.ResolveUDPAddr("udp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.WriteTo(append([]byte{0, 1}, "undionly.kpxe\x00octet\x00"...), server); err != nil {
		t.Fatal(err)
	}
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1024)
	n, transfer, err := stalled.ReadFrom(buf)
	if err != nil || n < 4 || binary.BigEndian.Uint16(buf) != 3 {
		t.Fatalf("first block of the stalled transfer: %d bytes, %v", n, err)
	}

	c, err := tftp.NewClient(env.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(1)
	_, err = c.Receive("small.txt", "octet")
	if err == nil || !strings.Contains(err.Error(), "server busy") {
		t.Fatalf("a transfer beyond the cap: %v; want the server's busy error packet", err)
	}
	env.counted(t, tftpBusy, 1)

	// The stalled client ends its transfer with an error packet; then the
	// slot is free again.
	if _, err := stalled.WriteTo([]byte{0, 5, 0, 0, 'b', 'y', 'e', 0}, transfer); err != nil {
		t.Fatal(err)
	}
	env.counted(t, tftpFailed, 1)
	wt, err := c.Receive("small.txt", "octet")
	if err != nil {
		t.Fatalf("after the stalled transfer ended: %v", err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || got.String() != "hello\n" {
		t.Errorf("after the stalled transfer ended: read %q, %v", got.String(), err)
	}
}
