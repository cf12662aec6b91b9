package scout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// InventoryPrefix starts the console line on which the agent prints the
// inventory in print mode, followed by a space and the inventory as
// protojson.
const InventoryPrefix = "CARBIDE-INVENTORY"

// Defaults of an Agent's timing.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
	// DefaultWait is how long ACTION_WAIT waits when the instruction has
	// no duration.
	DefaultWait = 10 * time.Second
)

// Agent is the discovery flow: load modules, bring up the network, fetch
// the configuration, report the inventory and follow instructions. Its
// function fields are what touches the machine; NewMachineAgent sets them
// for the machine the agent runs on, tests set fakes.
type Agent struct {
	Log *slog.Logger
	// Console receives the inventory line in print mode.
	Console io.Writer
	Params  Params
	// Collector takes the inventory; its Root is also where Settle looks.
	Collector *Collector
	// LoadModules loads the image's kernel modules and logs how it went.
	LoadModules func(ctx context.Context)
	// LinksUp sets the NICs up and waits briefly for their carrier, so
	// that a print-mode inventory shows link state.
	LinksUp func(ctx context.Context)
	// WaitRandom waits until the kernel's random number generator is
	// ready, which DHCP and TLS need.
	WaitRandom func(ctx context.Context)
	// Network brings up the NIC with the given MAC (or the first with a
	// link) by DHCP, and keeps its lease until ctx is done.
	Network func(ctx context.Context, mac string) error
	// QuietConsole, when set, stops kernel messages from reaching the
	// console, so that none can split the inventory line.
	QuietConsole func()
	// HTTP fetches the configuration.
	HTTP *http.Client
	// Power powers the machine off or reboots it; it returns only when
	// that failed (or, in tests, instead of ending the process).
	Power func(PowerAction) error
	// SettleQuiet and SettleMax bound the wait for new devices after
	// the modules are loaded.
	SettleQuiet, SettleMax time.Duration
	// MinBackoff and MaxBackoff bound the waits between retries; the
	// wait doubles after each failure.
	MinBackoff, MaxBackoff time.Duration
	// DefaultWait is ACTION_WAIT's wait when the instruction has none.
	DefaultWait time.Duration
	// EnrollBMC, when set, creates or resets the agent's BMC user in
	// band, as the API asks after a report; it returns nil and no error
	// when the machine has no in-band BMC.
	EnrollBMC func(ctx context.Context) (*BMCEnrolment, error)

	// DevDir is where the disks' device nodes are (/dev), for
	// ACTION_INSTALL and ACTION_WIPE; empty, the agent refuses those
	// steps. Tests point it at a directory of regular files.
	DevDir string
	// ImageHTTP, when set, fetches images and cloud-init seeds; by
	// default a client without an overall timeout that trusts the
	// configuration's CA.
	ImageHTTP *http.Client
	// ProgressInterval is the least time between two progress reports
	// of a step (DefaultProgressInterval when 0).
	ProgressInterval time.Duration

	// bmcEnrolled says the API stored this boot's BMC user.
	bmcEnrolled bool
}

// Run runs the flow until ctx is done; in an agent that is PID 1, never.
// Every failure is logged and retried.
func (a *Agent) Run(ctx context.Context) {
	a.LoadModules(ctx)
	a.settle(ctx)
	if a.Params.Print {
		a.LinksUp(ctx)
		inv := a.collect(ctx)
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(inv)
		if err != nil {
			// Collect cleans every string, so this cannot happen;
			// say so if it does.
			a.Log.Error("scout: encode the inventory: " + err.Error())
			b = []byte("{}")
		}
		if a.QuietConsole != nil {
			a.QuietConsole()
		}
		// One write, for the same reason.
		if _, err := a.Console.Write([]byte(InventoryPrefix + " " + string(b) + "\n")); err != nil {
			a.Log.Error("scout: print the inventory: " + err.Error())
		}
		a.power(ctx, PowerOff, "inventory printed ("+PrintInventory+" mode)")
		return
	}
	a.WaitRandom(ctx)
	a.retry(ctx, "bring up the network", func(ctx context.Context) error {
		return a.Network(ctx, a.Params.MAC)
	})
	b := a.newBackoff()
	for ctx.Err() == nil {
		cfg := a.fetchConfig(ctx)
		if cfg == nil {
			return
		}
		err := a.session(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		d := b.next()
		a.Log.Warn(fmt.Sprintf("scout: %v; fetching the configuration again in %s", err, d))
		if !sleep(ctx, d) {
			return
		}
	}
}

// settle waits until no block device or network interface has appeared
// for SettleQuiet (at most SettleMax): drivers probe, and SCSI and NVMe
// scan, in the background after their modules are loaded.
func (a *Agent) settle(ctx context.Context) {
	list := func() string {
		var names []string
		for _, dir := range []string{"sys/block", "sys/class/net"} {
			entries, _ := os.ReadDir(a.Collector.path(dir))
			for _, e := range entries {
				names = append(names, dir+"/"+e.Name())
			}
		}
		return strings.Join(names, " ")
	}
	start := time.Now()
	last, changed := list(), start
	for time.Since(changed) < a.SettleQuiet && time.Since(start) < a.SettleMax {
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
		if now := list(); now != last {
			last, changed = now, time.Now()
		}
	}
}

// collect takes the inventory and logs what it could not read.
func (a *Agent) collect(ctx context.Context) *machinev1.Inventory {
	inv, err := a.Collector.Collect(ctx)
	if err != nil {
		a.Log.Warn("scout: inventory incomplete: " + strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	a.Log.Info(fmt.Sprintf("scout: inventory: %s %s, serial %q, uuid %s; %d threads; %d MiB; %d disks; %d NICs",
		inv.GetSystem().GetManufacturer(), inv.GetSystem().GetProduct(), inv.GetSystem().GetSerial(),
		inv.GetSystem().GetUuid(), inv.GetCpu().GetThreads(), inv.GetMemoryBytes()>>20, len(inv.GetDisks()), len(inv.GetNics())))
	return inv
}

// fetchConfig gets the configuration from Params.ConfigURL, retrying
// until the server answers 200 with a usable configuration. It returns nil
// only when ctx is done.
func (a *Agent) fetchConfig(ctx context.Context) *agentconfig.Config {
	var cfg *agentconfig.Config
	a.retry(ctx, "fetch the configuration", func(ctx context.Context) error {
		c, err := a.getConfig(ctx)
		cfg = c
		return err
	})
	if cfg != nil {
		a.Log.Info(fmt.Sprintf("scout: configuration from %s: API %s, machine %s", a.configURLForLog(), cfg.APIURL, cfg.MachineID))
	}
	return cfg
}

// configURLForLog is the configuration URL without its query, which
// carries the boot's nonce: a secret, never logged.
func (a *Agent) configURLForLog() string {
	u, _, _ := strings.Cut(a.Params.ConfigURL, "?")
	return u
}

// maxErrorBody bounds how much of a non-200 answer is logged.
const maxErrorBody = 300

func (a *Agent) getConfig(ctx context.Context) (*agentconfig.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Params.ConfigURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		// The error quotes the URL: without its query (the boot nonce).
		var uerr *url.Error
		if errors.As(err, &uerr) {
			return nil, fmt.Errorf("GET %s: %w", a.configURLForLog(), uerr.Err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := printable(strings.Join(strings.Fields(string(body)), " "))
		if len(msg) > maxErrorBody {
			msg = truncate(msg, maxErrorBody) + "..."
		}
		return nil, fmt.Errorf("%s answered %s: %s", a.configURLForLog(), resp.Status, msg)
	}
	var cfg agentconfig.Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		// The body holds the token: never print it.
		return nil, fmt.Errorf("%s answered with a configuration that is not valid JSON: %w", a.configURLForLog(), jsonError(err))
	}
	var errs []error
	if u, err := url.Parse(cfg.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("api_url %q is not an http(s) URL", cfg.APIURL))
	}
	if cfg.MachineID == "" {
		errs = append(errs, errors.New("machine_id is empty"))
	}
	if cfg.Token == "" {
		errs = append(errs, errors.New("token is empty"))
	}
	if cfg.CAPEM != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(cfg.CAPEM)) {
		errs = append(errs, errors.New("ca_pem holds no PEM certificate"))
	}
	if err := joinErrors(errs); err != nil {
		return nil, fmt.Errorf("configuration from %s: %w", a.configURLForLog(), err)
	}
	return &cfg, nil
}

// joinErrors joins errors into one whose message is a single line, for
// the console: "a; b".
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// jsonError keeps the position of a JSON syntax error and drops the rest,
// which could quote the document.
func jsonError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("syntax error at offset %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("field %s has the wrong type", typ.Field)
	}
	return errors.New("cannot decode")
}

// credentials are the machine the agent speaks for and its token; a
// report may replace both.
type credentials struct {
	mu        sync.Mutex
	machineID string
	token     string
}

func (c *credentials) get() (string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.machineID, c.token
}

func (c *credentials) set(machineID, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if machineID != "" {
		c.machineID = machineID
	}
	if token != "" {
		c.token = token
	}
}

// tokenSource is the SDK's token source: the current token.
func (c *credentials) tokenSource(context.Context) (string, error) {
	_, tok := c.get()
	return tok, nil
}

// newAgentClient returns an AgentService client for the configuration.
func newAgentClient(cfg *agentconfig.Config, creds *credentials) (agentv1connect.AgentServiceClient, error) {
	opts := []carbide.Option{carbide.WithTokenSource(creds.tokenSource)}
	if strings.HasPrefix(cfg.APIURL, "https:") {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAPEM != "" {
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM([]byte(cfg.CAPEM))
		}
		opts = append(opts, carbide.WithTLS(tc))
	}
	c, err := carbide.New(cfg.APIURL, opts...)
	if err != nil {
		return nil, err
	}
	return c.Agent, nil
}

// errCredentials wraps an API error that a new configuration (a new
// token) may cure.
type errCredentials struct{ err error }

func (e errCredentials) Error() string { return e.err.Error() }
func (e errCredentials) Unwrap() error { return e.err }

// session reports the inventory with cfg's credentials and follows the
// API's instructions. It returns when the API rejects the credentials
// (the caller fetches the configuration again), or when ctx is done.
func (a *Agent) session(ctx context.Context, cfg *agentconfig.Config) error {
	creds := &credentials{machineID: cfg.MachineID, token: cfg.Token}
	client, err := newAgentClient(cfg, creds)
	if err != nil {
		return fmt.Errorf("connect to the API: %w", err)
	}
	inv := a.collect(ctx)
	var resp *agentv1.ReportInventoryResponse
	err = a.call(ctx, "report the inventory", func(ctx context.Context) error {
		id, _ := creds.get()
		r, err := client.ReportInventory(ctx, connect.NewRequest(&agentv1.ReportInventoryRequest{MachineId: id, Inventory: inv}))
		if err == nil {
			resp = r.Msg
		}
		return err
	})
	if err != nil {
		return err
	}
	if id := resp.GetMachine().GetId(); id != "" && id != cfg.MachineID {
		a.Log.Info(fmt.Sprintf("scout: this hardware is machine %s (was %s); speaking for it from now on", id, cfg.MachineID))
	}
	creds.set(resp.GetMachine().GetId(), resp.GetAgentToken())
	id, _ := creds.get()
	a.Log.Info(fmt.Sprintf("scout: reported inventory; machine %s is %s", id, stateName(resp.GetMachine().GetState())))
	if resp.GetEnrollBmc() && a.EnrollBMC != nil && !a.bmcEnrolled {
		a.enrolBMC(ctx, client, creds)
	}

	instr := resp.GetInstruction()
	lastReason := ""
	for {
		switch instr.GetAction() {
		case agentv1.Instruction_ACTION_POWER_OFF:
			a.power(ctx, PowerOff, instr.GetReason())
			return ctx.Err()
		case agentv1.Instruction_ACTION_REBOOT:
			a.power(ctx, Reboot, instr.GetReason())
			return ctx.Err()
		case agentv1.Instruction_ACTION_INSTALL, agentv1.Instruction_ACTION_WIPE:
			a.Log.Info(fmt.Sprintf("scout: step %s (%s): %s", instr.GetStep(), instr.GetAction(), instr.GetReason()))
			next, err := a.runStep(ctx, cfg, client, creds, instr)
			if err != nil {
				return err
			}
			instr, lastReason = next, ""
			continue
		default: // ACTION_WAIT, and what this agent does not know
			d := a.DefaultWait
			if w := instr.GetWait(); w != nil && w.AsDuration() > 0 {
				d = w.AsDuration()
			}
			if reason := instr.GetReason(); reason != lastReason || instr.GetAction() != agentv1.Instruction_ACTION_WAIT {
				a.Log.Info(fmt.Sprintf("scout: waiting (%s): %s", instr.GetAction(), reason))
				lastReason = reason
			}
			if !sleep(ctx, d) {
				return ctx.Err()
			}
		}
		err := a.call(ctx, "get an instruction", func(ctx context.Context) error {
			id, _ := creds.get()
			r, err := client.GetInstruction(ctx, connect.NewRequest(&agentv1.GetInstructionRequest{MachineId: id}))
			if err == nil {
				instr = r.Msg.GetInstruction()
			}
			return err
		})
		if err != nil {
			return err
		}
	}
}

// enrolAttempts bounds the tries of EnrollBMC when the API cannot be
// reached: enrolment never holds discovery up.
const enrolAttempts = 3

// enrolBMC creates or resets the agent's BMC user in band and sends it to
// the API. A failure is logged and discovery goes on; the password is
// never logged.
func (a *Agent) enrolBMC(ctx context.Context, client agentv1connect.AgentServiceClient, creds *credentials) {
	e, err := a.EnrollBMC(ctx)
	if err != nil {
		a.Log.Warn("scout: BMC not enrolled: " + err.Error())
		return
	}
	if e == nil {
		a.Log.Info("scout: the API asked to enrol the BMC, but there is no in-band IPMI device")
		return
	}
	size := "20-byte password"
	if e.Short {
		size = "16-byte password (the BMC cannot confirm a 20-byte one)"
	}
	mac := e.MAC
	if mac == "" {
		mac = "unknown"
	}
	a.Log.Info(fmt.Sprintf("scout: BMC user %d (%s) set in band with a new %s, ADMINISTRATOR on LAN channel %d; BMC address %s, MAC %s",
		e.UserID, e.Username, size, e.Channel, e.Address, mac))
	b := a.newBackoff()
	for attempt := 1; ; attempt++ {
		id, _ := creds.get()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := client.EnrollBMC(cctx, connect.NewRequest(&agentv1.EnrollBMCRequest{MachineId: id,
			Address: e.Address, Mac: e.MAC, Username: e.Username, Password: e.Password}))
		cancel()
		if err == nil {
			a.bmcEnrolled = true
			a.Log.Info(fmt.Sprintf("scout: BMC enrolled: machine %s is reached at %s as user %s", id, e.Address, e.Username))
			return
		}
		if ctx.Err() != nil {
			return
		}
		code := connect.CodeOf(err)
		if attempt >= enrolAttempts || (code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded && code != connect.CodeUnknown) {
			a.Log.Warn(fmt.Sprintf("scout: BMC not enrolled: send it to the API: %v", err))
			return
		}
		d := b.next()
		a.Log.Warn(fmt.Sprintf("scout: enrol the BMC: %v; retrying in %s", err, d))
		if !sleep(ctx, d) {
			return
		}
	}
}

// stateName is a machine state without its enum prefix: "READY".
func stateName(s machinev1.MachineState) string {
	return strings.TrimPrefix(s.String(), "MACHINE_STATE_")
}

// call runs an API call, retrying with backoff, until it succeeds. It
// returns an errCredentials when the API rejects the credentials, and
// ctx's error when ctx is done.
func (a *Agent) call(ctx context.Context, what string, fn func(context.Context) error) error {
	b := a.newBackoff()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if code := connect.CodeOf(err); code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied {
			return errCredentials{fmt.Errorf("%s: %w", what, err)}
		}
		d := b.next()
		a.Log.Warn(fmt.Sprintf("scout: %s: %v; retrying in %s", what, err, d))
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// power powers off or reboots, retrying if the kernel refuses.
func (a *Agent) power(ctx context.Context, action PowerAction, reason string) {
	if reason == "" {
		reason = "the API said so"
	}
	a.Log.Info(fmt.Sprintf("scout: %s: %s", action, reason))
	b := a.newBackoff()
	for {
		err := a.Power(action)
		if err == nil {
			// Only a test's Power returns: wait for its end.
			<-ctx.Done()
			return
		}
		d := b.next()
		a.Log.Error(fmt.Sprintf("scout: %v; trying again in %s", err, d))
		if !sleep(ctx, d) {
			return
		}
	}
}

// retry runs fn until it succeeds or ctx is done, logging each failure.
func (a *Agent) retry(ctx context.Context, what string, fn func(context.Context) error) {
	b := a.newBackoff()
	for ctx.Err() == nil {
		err := fn(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		d := b.next()
		a.Log.Warn(fmt.Sprintf("scout: %s: %v; retrying in %s", what, err, d))
		if !sleep(ctx, d) {
			return
		}
	}
}

// PowerAction is what Agent.Power does.
type PowerAction int

// The power actions.
const (
	PowerOff PowerAction = iota
	Reboot
)

// String is how the console log says it: "powering off", "rebooting".
func (a PowerAction) String() string {
	if a == Reboot {
		return "rebooting"
	}
	return "powering off"
}

// backoff doubles a wait from min to max.
type backoff struct {
	cur, max time.Duration
}

func (a *Agent) newBackoff() *backoff {
	return &backoff{cur: a.MinBackoff, max: a.MaxBackoff}
}

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d
}

// sleep waits for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
