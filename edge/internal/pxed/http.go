package pxed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	"github.com/carbide-dev/carbide/edge/internal/daemon"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// retryAfterSeconds is the Retry-After of a 503: iPXE waits that long and
// sends the request again.
const retryAfterSeconds = "5"

// HTTPHandler serves the daemon's HTTP routes: iPXE scripts, agent
// configuration, artifacts, cloud-init data and cloud-init's phone-home.
type HTTPHandler struct {
	api        BootAPI
	apiTimeout time.Duration
	publicURL  string
	// artifacts is the artifacts directory; nil serves none.
	artifacts   *os.Root
	scripts     scripts
	agentAPIURL string
	agentCAPEM  string
	metrics     *Metrics
	logger      *slog.Logger
	mux         *http.ServeMux
	// writeTimeout is how long a response may go without progress.
	writeTimeout time.Duration
}

// NewHTTPHandler returns the HTTP handler of c, which must be valid. It
// opens c.ArtifactsDir, which Close closes, and reads the agent's CA
// bundle once.
func NewHTTPHandler(c *Config, api BootAPI, m *Metrics, logger *slog.Logger) (*HTTPHandler, error) {
	h := &HTTPHandler{
		api:        api,
		apiTimeout: c.APITimeout,
		publicURL:  strings.TrimSuffix(c.PublicURL, "/"),
		scripts: scripts{
			kernel:       c.DiscoveryKernel,
			initrd:       c.DiscoveryInitrd,
			kernelArgs:   strings.Fields(c.DiscoveryKernelArgs),
			retrySeconds: int(c.RetryInterval / time.Second),
		},
		agentAPIURL:  c.agentAPIURL(),
		metrics:      m,
		logger:       logger,
		writeTimeout: c.HTTPTimeouts.Write,
	}
	if f := c.agentCAFile(); f != "" {
		pem, err := readCAPEM(f)
		if err != nil {
			return nil, fmt.Errorf("read the agent's CA bundle: %w", err)
		}
		h.agentCAPEM = pem
	}
	if c.ArtifactsDir != "" {
		root, err := os.OpenRoot(c.ArtifactsDir)
		if err != nil {
			return nil, fmt.Errorf("open the artifacts directory: %w", err)
		}
		h.artifacts = root
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+ipxePath+"{mac}", h.route(routeIPXE, h.serveIPXE))
	mux.Handle("GET "+agentconfig.Path+"{file}", h.route(routeAgent, h.serveAgentConfig))
	mux.Handle("GET "+cloudInitPath+"{mac}/{file}", h.route(routeCloudInit, h.serveCloudInit))
	mux.Handle("POST "+phoneHomePath+"{mac}", h.route(routePhoneHome, h.servePhoneHome))
	if h.artifacts != nil {
		mux.Handle("GET "+artifactsPath+"{path...}", h.route(routeArtifacts, h.serveArtifact))
	}
	h.mux = mux
	return h, nil
}

// Close closes the artifacts directory.
func (h *HTTPHandler) Close() error {
	if h.artifacts != nil {
		return h.artifacts.Close()
	}
	return nil
}

// ServeHTTP serves r, and logs and counts it.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, route: routeOther, rc: http.NewResponseController(w),
		writeTimeout: h.writeTimeout, timeouts: h.metrics.httpTimeouts}
	h.mux.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	elapsed := time.Since(start)
	h.metrics.httpRequests.WithLabelValues(rec.route, strconv.Itoa(rec.status)).Inc()
	h.metrics.httpSeconds.WithLabelValues(rec.route).Observe(elapsed.Seconds())
	h.metrics.httpBytes.WithLabelValues(rec.route).Add(float64(rec.bytes))

	level := slog.LevelInfo
	if rec.status >= 500 {
		level = slog.LevelWarn
	}
	// The path only: a query string is never logged.
	attrs := append([]slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", rec.status),
		slog.Int64("bytes", rec.bytes), slog.Duration("duration", elapsed), slog.String("client", clientHost(r)),
	}, rec.attrs...)
	h.logger.LogAttrs(r.Context(), level, "http request", attrs...)
}

// route wraps a route's handler so that its requests are counted under
// name.
func (h *HTTPHandler) route(name string, f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.route = name
		}
		f(w, r)
	})
}

// httpChunk is how much of a response may be sent per write timeout: the
// write deadline moves on before each chunk.
const httpChunk = 1 << 20

// recorder notes the status and size of a response, and attributes for
// the request's log line. It moves the write deadline on before each write
// (each httpChunk of an artifact), and counts a write that times out.
type recorder struct {
	http.ResponseWriter
	route  string
	status int
	bytes  int64
	attrs  []slog.Attr

	rc           *http.ResponseController
	writeTimeout time.Duration // 0: the deadline is left alone
	timeouts     *prometheus.CounterVec
	timedOut     bool
}

// progress moves the write deadline on, before a write.
func (r *recorder) progress() {
	if r.writeTimeout > 0 {
		// An error means the writer cannot take deadlines (a test's
		// recorder); the server's WriteTimeout then stands.
		_ = r.rc.SetWriteDeadline(time.Now().Add(r.writeTimeout))
	}
}

// failed counts err once if it is the write timeout's.
func (r *recorder) failed(err error) {
	if err != nil && !r.timedOut && errors.Is(err, os.ErrDeadlineExceeded) && r.timeouts != nil {
		r.timedOut = true
		r.timeouts.WithLabelValues(daemon.TimeoutWrite).Inc()
	}
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.progress()
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	r.failed(err)
	return n, err
}

// ReadFrom keeps the underlying writer's sendfile path for artifacts: it
// sends src in chunks of httpChunk, each a LimitedReader of the file that
// sendfile takes, moving the write deadline on before each.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var total int64
	for {
		chunk := &io.LimitedReader{R: src, N: httpChunk}
		lr, limited := src.(*io.LimitedReader)
		if limited {
			chunk = &io.LimitedReader{R: lr.R, N: min(lr.N, httpChunk)}
		}
		want := chunk.N
		r.progress()
		var n int64
		var err error
		if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
			n, err = rf.ReadFrom(chunk)
		} else {
			n, err = io.Copy(r.ResponseWriter, chunk)
		}
		if limited {
			lr.N -= n
		}
		total += n
		r.bytes += n
		r.failed(err)
		if err != nil || n < want || want == 0 {
			return total, err
		}
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// annotate adds attributes to the request's log line.
func annotate(w http.ResponseWriter, attrs ...slog.Attr) {
	if rec, ok := w.(*recorder); ok {
		rec.attrs = append(rec.attrs, attrs...)
	}
}

// clientHost is the address the request came from.
func clientHost(r *http.Request) string {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().String()
	}
	return r.RemoteAddr
}

// clientIPv4 is the IPv4 address the request came from, "" for another
// kind: the API issues an agent token only to the address leased to the
// machine.
func clientIPv4(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	if a := ap.Addr().Unmap(); a.Is4() {
		return a.String()
	}
	return ""
}

// plain writes a short plain-text response.
func plain(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, format+"\n", args...)
}

// noStore marks a response as not to be cached: it is per machine and
// per moment, and may hold a token.
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
}

// macParam returns the normalised MAC of the request's path, or answers
// 400 and returns false.
func macParam(w http.ResponseWriter, raw string) (string, bool) {
	mac, ok := parseMAC(raw)
	if !ok {
		plain(w, http.StatusBadRequest, "%q is not a MAC address; give six hex bytes such as 52:54:00:12:34:56", raw)
	}
	return mac, ok
}

// bootConfig asks the API how the machine req names boots. It counts
// and logs a failure; the caller answers it.
func (h *HTTPHandler) bootConfig(ctx context.Context, w http.ResponseWriter, req *bootv1.GetBootConfigRequest) (*bootv1.GetBootConfigResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, h.apiTimeout)
	defer cancel()
	annotate(w, slog.String("mac", req.GetMac()))
	resp, err := h.api.GetBootConfig(ctx, req)
	if err != nil {
		code := connect.CodeOf(err).String()
		h.metrics.apiErrors.WithLabelValues(code).Inc()
		annotate(w, slog.String("api_code", code))
		if connect.CodeOf(err) != connect.CodeNotFound {
			annotate(w, slog.String("api_error", err.Error()))
		}
		return nil, err
	}
	annotate(w, slog.String("machine_id", resp.GetMachineId()), slog.String("action", resp.GetAction().String()))
	if reason := resp.GetTokenWithheldReason(); reason != "" {
		annotate(w, slog.String("token_withheld_reason", reason))
	}
	return resp, nil
}

// knownMachine is bootConfig for the routes that serve a known machine
// only: an unknown MAC gets 404 and a failed call 503, and it returns false.
func (h *HTTPHandler) knownMachine(w http.ResponseWriter, r *http.Request, req *bootv1.GetBootConfigRequest) (*bootv1.GetBootConfigResponse, bool) {
	resp, err := h.bootConfig(r.Context(), w, req)
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		plain(w, http.StatusNotFound, "no machine has MAC %s", req.GetMac())
		return nil, false
	case err != nil:
		unavailable(w)
		return nil, false
	}
	return resp, true
}

// unavailable answers a failed API call: 503 with Retry-After, which iPXE
// obeys by asking again.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", retryAfterSeconds)
	plain(w, http.StatusServiceUnavailable, "the Carbide API cannot be reached; try again in %s seconds", retryAfterSeconds)
}

// invalid answers an API response the daemon will not use.
func (h *HTTPHandler) invalid(w http.ResponseWriter, err error) {
	h.metrics.apiErrors.WithLabelValues(codeInvalidResponse).Inc()
	annotate(w, slog.String("error", err.Error()))
	plain(w, http.StatusInternalServerError, "the Carbide API's answer for this machine cannot be served; see the daemon's log")
}

// baseURL is the URL machines reach the daemon at, without a trailing
// slash: --public-url, else http://<Host header>.
func (h *HTTPHandler) baseURL(r *http.Request) (string, bool) {
	if h.publicURL != "" {
		return h.publicURL, true
	}
	if !validHostPort(r.Host) {
		return "", false
	}
	return "http://" + r.Host, true
}

// serveIPXE serves GET /ipxe/{mac}: the machine's iPXE script.
func (h *HTTPHandler) serveIPXE(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	mac, ok := macParam(w, r.PathValue("mac"))
	if !ok {
		return
	}
	base, ok := h.baseURL(r)
	if !ok {
		plain(w, http.StatusBadRequest, "the Host header %q is not a host name or address; set --public-url", r.Host)
		return
	}
	var script []byte
	var action string
	// Serving a discovery script starts a new boot of the machine, when
	// the request comes from its leased address; the script carries the
	// boot's nonce to the agent.
	resp, err := h.bootConfig(r.Context(), w, &bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: clientIPv4(r), StartBoot: true})
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		script, err = h.scripts.renderUnknown(base, mac)
		action = scriptUnknown
	case err != nil:
		unavailable(w)
		return
	default:
		script, err = h.scripts.render(base, mac, resp)
		switch resp.GetAction() {
		case bootv1.BootAction_BOOT_ACTION_DISCOVERY:
			action = scriptDiscovery
		case bootv1.BootAction_BOOT_ACTION_NETBOOT:
			action = scriptNetboot
		default:
			action = scriptLocalDisk
		}
	}
	if err != nil {
		h.invalid(w, err)
		return
	}
	h.metrics.scripts.WithLabelValues(action).Inc()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(script)))
	w.Write(script)
}

// serveAgentConfig serves GET /agent/{mac}.json: the discovery agent's
// configuration, with the token the API issues to the machine.
func (h *HTTPHandler) serveAgentConfig(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	raw, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	if !ok {
		plain(w, http.StatusNotFound, "not found; the agent configuration is at %s<mac>.json", agentconfig.Path)
		return
	}
	mac, ok := macParam(w, raw)
	if !ok {
		return
	}
	nonce := r.URL.Query().Get(agentconfig.ParamBoot)
	if nonce == "" {
		plain(w, http.StatusForbidden, "the URL carries no boot nonce (?%s=...); boot the machine through its iPXE script, which gives the agent this URL with one", agentconfig.ParamBoot)
		return
	}
	if !validNonce(nonce) {
		plain(w, http.StatusBadRequest, "the boot nonce is malformed; use the URL the machine's iPXE script gave the agent")
		return
	}
	resp, ok := h.knownMachine(w, r, &bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: clientIPv4(r), BootNonce: nonce})
	if !ok {
		return
	}
	if resp.GetAction() != bootv1.BootAction_BOOT_ACTION_DISCOVERY {
		plain(w, http.StatusConflict, "machine %s is not being discovered (it boots %s); it has no agent configuration",
			resp.GetMachineId(), actionName(resp.GetAction()))
		return
	}
	if resp.GetAgentToken() == "" {
		reason := resp.GetTokenWithheldReason()
		if reason == "" {
			reason = "the Carbide API issued no agent token for this machine"
		}
		plain(w, http.StatusForbidden, "%s", reason)
		return
	}
	if !validMachineID(resp.GetMachineId()) {
		h.invalid(w, fmt.Errorf("the API returned an invalid machine id %q", resp.GetMachineId()))
		return
	}
	if !resp.GetAgentTokenExpireTime().IsValid() {
		h.invalid(w, errors.New("the API returned an agent token without a valid expiry time"))
		return
	}
	cfg := agentconfig.Config{
		APIURL:          h.agentAPIURL,
		CAPEM:           h.agentCAPEM,
		MachineID:       resp.GetMachineId(),
		Token:           resp.GetAgentToken(),
		TokenExpireTime: resp.GetAgentTokenExpireTime().AsTime(),
	}
	if base, ok := h.baseURL(r); ok {
		cfg.CloudInitURL = base + cloudInitPath + mac + "/"
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		h.invalid(w, fmt.Errorf("encode the agent configuration: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// actionName is a boot action in the words of a message.
func actionName(a bootv1.BootAction) string {
	switch a {
	case bootv1.BootAction_BOOT_ACTION_DISCOVERY:
		return "the discovery image"
	case bootv1.BootAction_BOOT_ACTION_LOCAL_DISK:
		return "from its local disk"
	case bootv1.BootAction_BOOT_ACTION_NETBOOT:
		return "its instance's netboot image"
	}
	return a.String()
}

// serveArtifact serves GET /artifacts/{path...}: a regular file under the
// artifacts directory, with Range, If-Modified-Since and HEAD support. It
// never lists a directory.
func (h *HTTPHandler) serveArtifact(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("path")
	f, info, err := openFile(h.artifacts, name)
	if err != nil {
		refusal := fileRefusal(err)
		annotate(w, slog.String("refused", refusal), slog.String("error", err.Error()))
		switch refusal {
		case "invalid":
			plain(w, http.StatusBadRequest, "not a path inside the artifacts directory")
		case "not_found":
			plain(w, http.StatusNotFound, "no such artifact")
		default:
			plain(w, http.StatusForbidden, "this artifact may not be served")
		}
		return
	}
	defer f.Close()
	http.ServeContent(w, r, info.Name(), info.ModTime(), f)
}

// serveCloudInit serves GET /cloud-init/{mac}/{meta-data,user-data,
// network-config,vendor-data}: a NoCloud seed for the machine. It asks the
// API for the instance's cloud-init data with the request's address, and
// the API returns it only when that address holds the MAC's lease: the
// tenant's user data goes to the machine itself and nowhere else. Without
// it (no instance, or another address) the seed is the machine's own:
// its id and host name, and no network-config (404: cloud-init then
// configures its fallback network, DHCP).
func (h *HTTPHandler) serveCloudInit(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	file := r.PathValue("file")
	if !seedFiles[file] {
		plain(w, http.StatusNotFound, "not found; the seed has meta-data, user-data, network-config and vendor-data")
		return
	}
	mac, ok := macParam(w, r.PathValue("mac"))
	if !ok {
		return
	}
	resp, ok := h.knownMachine(w, r, &bootv1.GetBootConfigRequest{Mac: mac, ClientAddress: clientIPv4(r), CloudInit: true})
	if !ok {
		return
	}
	contentType := "text/plain; charset=utf-8"
	var body []byte
	var err error
	if ci := resp.GetCloudInit(); ci != nil {
		annotate(w, slog.String("instance_id", ci.GetInstanceId()))
		switch file {
		case "meta-data":
			body, err = instanceMetaData(resp)
		case "user-data":
			// The tenant's bytes, verbatim: any format cloud-init reads,
			// not necessarily text.
			body = ci.GetUserData()
			contentType = "application/octet-stream"
		case "network-config":
			body, err = instanceNetworkConfig(resp, mac)
			if errors.Is(err, errNoNetworkConfig) {
				plain(w, http.StatusNotFound, "instance %s has no network configuration (its machine holds no lease); cloud-init configures its fallback network", ci.GetInstanceId())
				return
			}
		case "vendor-data":
			base, ok := h.baseURL(r)
			if !ok {
				plain(w, http.StatusBadRequest, "the Host header %q is not a host name or address; set --public-url", r.Host)
				return
			}
			body, err = instanceVendorData(resp, base, mac)
		}
	} else {
		switch file {
		case "meta-data":
			body, err = metaData(resp)
		case "user-data":
			body, err = userData(resp)
		case "network-config":
			plain(w, http.StatusNotFound, "machine %s has no instance, so no network-config; cloud-init configures its fallback network", resp.GetMachineId())
			return
		case "vendor-data":
			// Empty.
		}
	}
	if err != nil {
		h.invalid(w, err)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// maxPhoneHomeBody is the most of a phone-home body the daemon reads:
// cloud-init posts a few form fields (all of them, with the host's SSH
// public keys, take about 3 KiB).
const maxPhoneHomeBody = 8 << 10

// servePhoneHome serves POST /phone-home/{mac}: cloud-init's phone_home
// module reports that the operating system of the machine's instance
// booted, posting instance_id (and hostname) form-encoded. The daemon
// passes it to the API with the request's address, which must hold the
// MAC's lease; the instance is then Running.
func (h *HTTPHandler) servePhoneHome(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	mac, ok := macParam(w, r.PathValue("mac"))
	if !ok {
		return
	}
	annotate(w, slog.String("mac", mac))
	r.Body = http.MaxBytesReader(w, r.Body, maxPhoneHomeBody)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			plain(w, http.StatusRequestEntityTooLarge, "the body is larger than %d bytes; post instance_id and hostname only", maxPhoneHomeBody)
			return
		}
		plain(w, http.StatusBadRequest, "the body is not a form: %v", err)
		return
	}
	id := r.PostForm.Get("instance_id")
	if !validUUID(id) {
		plain(w, http.StatusBadRequest, "instance_id %q is not an instance id (a UUID); post instance_id=<the instance id of the meta-data>", id)
		return
	}
	id = strings.ToLower(id)
	annotate(w, slog.String("instance_id", id), slog.String("hostname", r.PostForm.Get("hostname")))
	client := clientIPv4(r)
	if client == "" {
		plain(w, http.StatusForbidden, "the request did not come from an IPv4 address; only the address leased to %s may phone home", mac)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.apiTimeout)
	defer cancel()
	_, err := h.api.PhoneHome(ctx, &bootv1.PhoneHomeRequest{Mac: mac, ClientAddress: client, InstanceId: id})
	if err != nil {
		code := connect.CodeOf(err)
		h.metrics.apiErrors.WithLabelValues(code.String()).Inc()
		annotate(w, slog.String("api_code", code.String()))
		msg := err.Error()
		if ce, ok := errors.AsType[*connect.Error](err); ok && ce.Message() != "" {
			msg = ce.Message()
		}
		switch code {
		case connect.CodeFailedPrecondition, connect.CodePermissionDenied:
			annotate(w, slog.String("refused", msg))
			plain(w, http.StatusForbidden, "%s", msg)
		case connect.CodeNotFound:
			plain(w, http.StatusNotFound, "%s", msg)
		case connect.CodeInvalidArgument:
			plain(w, http.StatusBadRequest, "%s", msg)
		default:
			annotate(w, slog.String("api_error", err.Error()))
			unavailable(w)
		}
		return
	}
	plain(w, http.StatusOK, "instance %s phoned home", id)
}
