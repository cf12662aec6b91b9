package scout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	"github.com/carbide-dev/carbide/edge/internal/imaging"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
)

// DefaultProgressInterval is the least time between two progress reports
// of a step to the API.
const DefaultProgressInterval = 5 * time.Second

// maxStepError bounds CompleteStep's error, as the API does.
const maxStepError = 2048

// seedFiles are the NoCloud seed's files, and whether each must exist.
var seedFiles = []struct {
	name     string
	required bool
}{{"meta-data", true}, {"user-data", true}, {"network-config", false}, {"vendor-data", false}}

// maxSeedFile bounds one seed file.
const maxSeedFile = 4 << 20

// diskName is a kernel block device name, as the inventory reports it.
var diskName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// stepStatus is how a step ended, for CompleteStep.
type stepStatus struct {
	err      error
	bytes    int64
	duration time.Duration
}

// runStep runs an ACTION_INSTALL or ACTION_WIPE, reports its end with
// CompleteStep and returns the API's next instruction. Its error is an
// errCredentials or ctx's: a failed step is reported, not returned.
func (a *Agent) runStep(ctx context.Context, cfg *agentconfig.Config, client agentv1connect.AgentServiceClient, creds *credentials, instr *agentv1.Instruction) (*agentv1.Instruction, error) {
	step := instr.GetStep()
	prog := a.newProgressSender(ctx, client, creds, step)
	start := time.Now()
	var st stepStatus
	switch instr.GetAction() {
	case agentv1.Instruction_ACTION_INSTALL:
		st = a.install(ctx, cfg, instr.GetInstall(), prog)
	default:
		st = a.wipe(ctx, instr.GetWipe(), prog)
	}
	prog.close()
	st.duration = time.Since(start)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	msg := ""
	if st.err != nil {
		msg = truncate(printable(st.err.Error()), maxStepError)
		a.Log.Error(fmt.Sprintf("scout: step %s failed: %s", step, msg))
	} else {
		a.Log.Info(fmt.Sprintf("scout: step %s done in %s", step, st.duration.Round(time.Millisecond)))
	}
	var next *agentv1.Instruction
	err := a.call(ctx, "complete step "+step, func(ctx context.Context) error {
		id, _ := creds.get()
		r, err := client.CompleteStep(ctx, connect.NewRequest(&agentv1.CompleteStepRequest{MachineId: id, Step: step,
			Error: msg, Bytes: st.bytes, Duration: durationpb.New(st.duration)}))
		if err == nil {
			next = r.Msg.GetInstruction()
		}
		return err
	})
	return next, err
}

// disk returns the device path of a disk the API names, or an error
// when the agent does no disk work or the name is not a disk's.
func (a *Agent) disk(name string) (string, error) {
	if a.DevDir == "" {
		return "", errors.New("this agent does not touch disks (it is not the discovery image's init)")
	}
	if !diskName.MatchString(name) || name == "." || name == ".." {
		return "", fmt.Errorf("%q is not a disk's kernel name", name)
	}
	return filepath.Join(a.DevDir, name), nil
}

// install writes the instance's image to its disk and adds the
// cloud-init seed.
func (a *Agent) install(ctx context.Context, cfg *agentconfig.Config, in *agentv1.Install, prog *progressSender) stepStatus {
	dev, err := a.disk(in.GetDisk())
	if err != nil {
		return stepStatus{err: err}
	}
	if want := in.GetDiskSerial(); want != "" {
		if got := a.Collector.diskSerial(in.GetDisk()); got != want {
			return stepStatus{err: fmt.Errorf("disk %s has serial %q, the instruction names %q: not writing to it", in.GetDisk(), got, want)}
		}
	}
	img := in.GetImage()
	src := imaging.Source{URL: img.GetFile().GetUrl(), SHA256: img.GetFile().GetSha256(), Size: img.GetFile().GetSizeBytes()}
	switch img.GetFormat() {
	case instancev1.DiskFormat_DISK_FORMAT_RAW:
		src.Format = imaging.Raw
	case instancev1.DiskFormat_DISK_FORMAT_QCOW2:
		src.Format = imaging.QCOW2
	default:
		return stepStatus{err: fmt.Errorf("image format %s is not one this agent writes", img.GetFormat())}
	}
	switch img.GetCompression() {
	case instancev1.Compression_COMPRESSION_UNSPECIFIED, instancev1.Compression_COMPRESSION_NONE:
		src.Compression = imaging.None
	case instancev1.Compression_COMPRESSION_GZIP:
		src.Compression = imaging.Gzip
	case instancev1.Compression_COMPRESSION_ZSTD:
		src.Compression = imaging.Zstd
	case instancev1.Compression_COMPRESSION_XZ:
		src.Compression = imaging.XZ
	default:
		return stepStatus{err: fmt.Errorf("image compression %s is not one this agent reads", img.GetCompression())}
	}
	hc := a.imageClient(cfg)
	a.Log.Info(fmt.Sprintf("scout: installing %s (%s, compression %s) on %s for instance %s",
		redactURL(src.URL), src.Format, src.Compression, dev, in.GetInstanceId()))
	res, err := imaging.Write(ctx, hc, src, dev, func(p imaging.Progress) {
		verb := "writing the image to " + in.GetDisk()
		if p.Phase == imaging.PhaseVerify {
			verb = "checking the image's SHA-256"
		}
		prog.update(p.Done, p.Total, verb)
	})
	if err != nil {
		return stepStatus{err: fmt.Errorf("write the image: %w", err), bytes: res.Written}
	}
	a.Log.Info(fmt.Sprintf("scout: wrote %d bytes to %s in %s (%.1f MB/s; %d bytes downloaded)",
		res.Written, dev, res.Duration.Round(time.Millisecond), res.MBps, res.Downloaded))
	seedURL := in.GetSeedUrl()
	if seedURL == "" {
		seedURL = cfg.CloudInitURL
	}
	if seedURL == "" {
		return stepStatus{err: errors.New("no cloud-init seed URL: the instruction has no seed_url and the agent's configuration no cloud_init_url (give carbide-pxe a --public-url)"), bytes: res.Written}
	}
	prog.update(0, 0, "adding the cloud-init seed")
	files, err := fetchSeed(ctx, hc, seedURL)
	if err != nil {
		return stepStatus{err: err, bytes: res.Written}
	}
	seed, err := imaging.AddSeed(dev, files)
	if err != nil {
		return stepStatus{err: err, bytes: res.Written}
	}
	a.Log.Info(fmt.Sprintf("scout: cloud-init seed (%d files) in partition %d of %s, %d MiB at %d MiB",
		len(files), seed.Partition, dev, seed.Size>>20, seed.Offset>>20))
	return stepStatus{bytes: res.Written}
}

// fetchSeed fetches the NoCloud seed's files from below seedURL.
func fetchSeed(ctx context.Context, hc *http.Client, seedURL string) (map[string][]byte, error) {
	base, query, _ := strings.Cut(seedURL, "?")
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	if query != "" {
		query = "?" + query
	}
	files := map[string][]byte{}
	for _, f := range seedFiles {
		u := base + f.name
		b, status, err := fetchFile(ctx, hc, u+query)
		switch {
		case err != nil:
			return nil, fmt.Errorf("fetch the cloud-init seed: GET %s: %w", u, err)
		case status == http.StatusNotFound && !f.required:
			continue
		case status != http.StatusOK:
			return nil, fmt.Errorf("fetch the cloud-init seed: GET %s: the server answered %d %s", u, status, http.StatusText(status))
		}
		files[f.name] = b
	}
	return files, nil
}

// fetchFile GETs u and returns its body (at most maxSeedFile bytes) and
// status.
func fetchFile(ctx context.Context, hc *http.Client, u string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, errors.New("not a valid URL")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, unwrapURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSeedFile+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read the body: %w", err)
	}
	if len(b) > maxSeedFile {
		return nil, 0, fmt.Errorf("larger than %d bytes", maxSeedFile)
	}
	return b, resp.StatusCode, nil
}

// wipe wipes every disk the instruction names, going on after a failure
// so that as much as possible is erased; the error names every disk that
// failed.
func (a *Agent) wipe(ctx context.Context, w *agentv1.Wipe, prog *progressSender) stepStatus {
	mode := imaging.Quick
	if w.GetMode() == instancev1.WipeMode_WIPE_MODE_FULL {
		mode = imaging.Full
	}
	var (
		st   stepStatus
		errs []string
	)
	if len(w.GetDisks()) == 0 {
		return stepStatus{err: errors.New("the instruction names no disk to wipe")}
	}
	for _, name := range w.GetDisks() {
		dev, err := a.disk(name)
		if err == nil {
			a.Log.Info(fmt.Sprintf("scout: wiping %s (%s)", dev, mode))
			var res imaging.WipeResult
			res, err = imaging.Wipe(ctx, dev, mode, func(p imaging.Progress) {
				prog.update(p.Done, p.Total, fmt.Sprintf("wiping %s (%s)", name, mode))
			})
			st.bytes += res.Zeroed
			if err == nil {
				msg := fmt.Sprintf("scout: wiped %s: %s, %d of %d bytes in %s", dev, res.Method, res.Zeroed, res.Size, res.Duration.Round(time.Millisecond))
				if res.Regions > 0 {
					msg += fmt.Sprintf(", %d regions", res.Regions)
				}
				if res.Discarded {
					msg += ", then discarded"
				}
				a.Log.Info(msg)
			}
		}
		if ctx.Err() != nil {
			return st
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		st.err = fmt.Errorf("%d of %d disks not wiped: %s", len(errs), len(w.GetDisks()), strings.Join(errs, "; "))
	}
	return st
}

// imageClient is the HTTP client for images and seeds: no overall
// timeout (an image takes as long as it takes), the configuration's CA
// trusted besides the system's.
func (a *Agent) imageClient(cfg *agentconfig.Config) *http.Client {
	if a.ImageHTTP != nil {
		return a.ImageHTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute
	if cfg.CAPEM != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &http.Client{Transport: t}
}

// redactURL is a URL without its query, which may hold a secret.
func redactURL(u string) string {
	s, _, _ := strings.Cut(u, "?")
	return s
}

// unwrapURLError drops the *url.Error around err: it quotes the URL with
// its query.
func unwrapURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// progressSender reports a step's progress to the API in the background,
// at most every ProgressInterval, the latest report replacing one not yet
// sent, so that a slow API never slows the step down.
type progressSender struct {
	a        *Agent
	step     string
	interval time.Duration
	ch       chan *agentv1.ReportProgressRequest
	done     chan struct{}
	last     time.Time
	creds    *credentials
	failed   bool // a report failed (logged once); the sender's goroutine's
}

func (a *Agent) newProgressSender(ctx context.Context, client agentv1connect.AgentServiceClient, creds *credentials, step string) *progressSender {
	p := &progressSender{a: a, step: step, interval: a.ProgressInterval, ch: make(chan *agentv1.ReportProgressRequest, 1),
		done: make(chan struct{}), creds: creds}
	if p.interval <= 0 {
		p.interval = DefaultProgressInterval
	}
	go func() {
		defer close(p.done)
		for req := range p.ch {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := client.ReportProgress(cctx, connect.NewRequest(req))
			cancel()
			if err != nil && ctx.Err() == nil && !p.failed {
				p.failed = true
				a.Log.Warn(fmt.Sprintf("scout: report the progress of step %s: %v (the step goes on)", step, err))
			}
		}
	}()
	return p
}

// update queues a report, unless one was queued less than an interval
// ago.
func (p *progressSender) update(done, total int64, msg string) {
	if time.Since(p.last) < p.interval {
		return
	}
	p.last = time.Now()
	id, _ := p.creds.get()
	req := &agentv1.ReportProgressRequest{MachineId: id, Step: p.step, Done: done, Total: total, Message: truncate(msg, 512)}
	select {
	case p.ch <- req:
	default:
		select {
		case <-p.ch: // replace the report not yet sent
		default:
		}
		p.ch <- req
	}
}

// close stops the sender after the queued report was sent.
func (p *progressSender) close() {
	close(p.ch)
	<-p.done
}
