package pxed

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	"github.com/pin/tftp/v3"
)

// TestRun starts the daemon on loopback with a fake API, boots a machine
// through it over real sockets (HTTP and TFTP), reads its metrics, and
// stops it.
func TestRun(t *testing.T) {
	t.Parallel()
	fake := newFakeBoot()
	fake.leases[testMAC] = "127.0.0.1"
	top := t.TempDir()
	tftpRoot, artifacts := filepath.Join(top, "ipxe"), filepath.Join(top, "artifacts")
	ipxeBinary := randomBytes(70_001)
	mustWrite(t, filepath.Join(tftpRoot, "undionly.kpxe"), ipxeBinary)
	mustWrite(t, filepath.Join(artifacts, "scout", "vmlinuz"), kernelBytes())
	mustWrite(t, filepath.Join(artifacts, "scout", "scout.cpio.gz"), []byte("initrd"))
	caFile, caPEM := writeCA(t, top, "ca.crt")

	c := DefaultConfig()
	c.APIURL = fake.serve(t)
	c.HTTPListen = "127.0.0.1:0"
	c.TFTPListen = "127.0.0.1:0"
	c.MetricsListen = "127.0.0.1:0"
	c.TFTPRoot = tftpRoot
	c.ArtifactsDir = artifacts
	c.AgentAPIURL = "https://198.18.0.1:1079"
	c.AgentCAFile = caFile

	log := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addrs := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, testLogger(log), func(a Addrs) { addrs <- a }) }()
	var a Addrs
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	base := "http://" + a.HTTP.String()

	// The iPXE script, over HTTP.
	body, resp := httpGet(t, base+"/ipxe/"+strings.ToUpper(testMAC), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "kernel "+base+"/artifacts/scout/vmlinuz initrd=scout.cpio.gz ") ||
		!strings.Contains(body, "carbide.config="+base+"/agent/"+testMAC+".json?boot="+testNonce+" ") {
		t.Errorf("GET /ipxe: %d\n%s", resp.StatusCode, body)
	}
	// The agent configuration, at the URL of the script: the request
	// comes from 127.0.0.1, which holds the lease here.
	body, resp = httpGet(t, base+"/agent/"+testMAC+".json?boot="+testNonce, nil)
	var cfg agentconfig.Config
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &cfg) != nil ||
		cfg.Token != testToken || cfg.CAPEM != caPEM || cfg.APIURL != c.AgentAPIURL {
		t.Errorf("GET /agent: %d\n%s", resp.StatusCode, body)
	}
	// A range of the kernel.
	body, resp = httpGet(t, base+"/artifacts/scout/vmlinuz", http.Header{"Range": {"bytes=1000-1999"}})
	if resp.StatusCode != http.StatusPartialContent || body != string(kernelBytes()[1000:2000]) {
		t.Errorf("GET /artifacts range: %d, %d bytes", resp.StatusCode, len(body))
	}
	// iPXE over TFTP.
	tc, err := tftp.NewClient(a.TFTP.String())
	if err != nil {
		t.Fatal(err)
	}
	tc.SetBlockSize(1468)
	tc.RequestTSize(true)
	wt, err := tc.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), ipxeBinary) {
		t.Errorf("TFTP: %v, %d bytes", err, buf.Len())
	}

	// Metrics and health.
	if body, resp := httpGet(t, "http://"+a.Metrics.String()+"/healthz", nil); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
	eventually(t, "the TFTP transfer in the metrics", func() bool {
		body, _ := httpGet(t, "http://"+a.Metrics.String()+"/metrics", nil)
		return strings.Contains(body, `carbide_pxe_tftp_transfers_total{result="ok"} 1`)
	})
	// A request is counted once its response is written, so the client
	// may see the response first.
	for _, want := range []string{
		`carbide_pxe_http_requests_total{code="200",route="ipxe"} 1`,
		`carbide_pxe_http_requests_total{code="200",route="agent"} 1`,
		`carbide_pxe_http_requests_total{code="206",route="artifacts"} 1`,
		`carbide_pxe_scripts_total{action="discovery"} 1`,
		`carbide_pxe_tftp_bytes_total 70001`,
		`go_goroutines`,
	} {
		eventually(t, want+" in /metrics", func() bool {
			body, _ := httpGet(t, "http://"+a.Metrics.String()+"/metrics", nil)
			return strings.Contains(body, want)
		})
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after its context ended, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, l := range []string{a.HTTP.String(), a.Metrics.String()} {
		if conn, err := net.Dial("tcp", l); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Run returned", l)
		}
	}
	logs := log.String()
	for _, want := range []string{`msg="serving HTTP"`, `msg="serving TFTP"`, `msg="stopped serving"`, `msg="tftp transfer"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not hold %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, testToken) {
		t.Errorf("the log holds the agent token:\n%s", logs)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	top := t.TempDir()
	tests := map[string]struct {
		edit func(*Config)
		want string
	}{
		"invalid configuration": {edit: func(c *Config) { c.APIURL = "" }, want: "api-url: empty"},
		"HTTP port in use":      {edit: func(c *Config) { c.HTTPListen = busy.Addr().String() }, want: "listen for HTTP"},
		"metrics port in use":   {edit: func(c *Config) { c.MetricsListen = busy.Addr().String() }, want: "listen for metrics"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := DefaultConfig()
			c.APIURL = "http://127.0.0.1:1"
			c.HTTPListen, c.TFTPListen, c.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			c.TFTPRoot, c.ArtifactsDir = top, top
			tt.edit(&c)
			err := c.Run(t.Context(), testLogger(io.Discard))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func httpGet(t *testing.T, url string, header http.Header) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	if req.Header == nil {
		req.Header = http.Header{}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp
}
