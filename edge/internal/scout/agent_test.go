package scout

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	"github.com/carbide-dev/carbide/edge/internal/syncbuf"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

const (
	bootMAC   = "52:54:00:aa:bb:cc"
	machineA  = "0b7e2f9c-4a51-4c1e-9a39-7d1a5e0c0001"
	machineB  = "0b7e2f9c-4a51-4c1e-9a39-7d1a5e0c0002"
	firstTok  = "agent-token-one"
	bootNonce = "Ym9vdC1ub25jZS1zZWNyZXQtc2VjcmV0"
	secondTok = "agent-token-two"
	thirdTok  = "agent-token-three"
)

// call is one RPC as the fake API saw it.
type call struct {
	Machine string
	Auth    string
	MAC     string // of the inventory's first NIC, for reports
}

// fakeAPI is an AgentService whose answers the test scripts by call
// number (from 0).
type fakeAPI struct {
	agentv1connect.UnimplementedAgentServiceHandler
	report      func(n int) (*agentv1.ReportInventoryResponse, error)
	instruction func(n int) (*agentv1.Instruction, error)
	enroll      func(n int) error
	// complete answers the n-th CompleteStep.
	complete func(n int, req *agentv1.CompleteStepRequest) (*agentv1.Instruction, error)

	mu           sync.Mutex
	reports      []call
	instructions []call
	enrolments   []*agentv1.EnrollBMCRequest
	progress     []*agentv1.ReportProgressRequest
	completes    []*agentv1.CompleteStepRequest
}

var _ agentv1connect.AgentServiceHandler = (*fakeAPI)(nil)

func (f *fakeAPI) ReportInventory(_ context.Context, req *connect.Request[agentv1.ReportInventoryRequest]) (*connect.Response[agentv1.ReportInventoryResponse], error) {
	f.mu.Lock()
	n := len(f.reports)
	c := call{Machine: req.Msg.GetMachineId(), Auth: req.Header().Get("Authorization")}
	if nics := req.Msg.GetInventory().GetNics(); len(nics) > 0 {
		c.MAC = nics[0].GetMac()
	}
	f.reports = append(f.reports, c)
	f.mu.Unlock()
	resp, err := f.report(n)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeAPI) GetInstruction(_ context.Context, req *connect.Request[agentv1.GetInstructionRequest]) (*connect.Response[agentv1.GetInstructionResponse], error) {
	f.mu.Lock()
	n := len(f.instructions)
	f.instructions = append(f.instructions, call{Machine: req.Msg.GetMachineId(), Auth: req.Header().Get("Authorization")})
	f.mu.Unlock()
	if f.instruction == nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected GetInstruction %d", n))
	}
	instr, err := f.instruction(n)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.GetInstructionResponse{Instruction: instr}), nil
}

func (f *fakeAPI) EnrollBMC(_ context.Context, req *connect.Request[agentv1.EnrollBMCRequest]) (*connect.Response[agentv1.EnrollBMCResponse], error) {
	f.mu.Lock()
	n := len(f.enrolments)
	f.enrolments = append(f.enrolments, req.Msg)
	f.mu.Unlock()
	if f.enroll != nil {
		if err := f.enroll(n); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&agentv1.EnrollBMCResponse{}), nil
}

func (f *fakeAPI) calls() ([]call, []call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.reports...), append([]call(nil), f.instructions...)
}

// harness runs an Agent against a configuration server and a fake API
// over TLS, with every machine-touching step replaced.
type harness struct {
	agent    *Agent
	log      *syncbuf.Buffer
	console  *syncbuf.Buffer
	api      *fakeAPI
	apiURL   string
	caPEM    string
	mu       sync.Mutex
	steps    []string // what the agent did to the machine, in order
	fetches  int
	powerErr []error // returned by the first calls of Power
}

// config is a valid configuration for the fake API.
func (h *harness) config(machine, token string) string {
	b, err := json.Marshal(agentconfig.Config{APIURL: h.apiURL, CAPEM: h.caPEM, MachineID: machine, Token: token,
		TokenExpireTime: time.Now().Add(time.Hour)})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (h *harness) step(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.steps = append(h.steps, s)
}

// newHarness starts the servers; configs answers the n-th (from 0)
// request for the configuration with a status and a body.
func newHarness(t *testing.T, api *fakeAPI, configs func(h *harness, n int) (int, string)) *harness {
	t.Helper()
	testsecret.Register(t, firstTok, secondTok, thirdTok)
	h := &harness{log: &syncbuf.Buffer{}, console: &syncbuf.Buffer{}, api: api}

	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(api))
	apiSrv := httptest.NewUnstartedServer(mux)
	apiSrv.EnableHTTP2 = true
	apiSrv.StartTLS()
	t.Cleanup(apiSrv.Close)
	h.apiURL = apiSrv.URL
	h.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiSrv.Certificate().Raw}))

	cfgSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != agentconfig.Path+bootMAC+".json" {
			http.NotFound(w, r)
			return
		}
		h.mu.Lock()
		n := h.fetches
		h.fetches++
		h.mu.Unlock()
		status, body := configs(h, n)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(cfgSrv.Close)

	h.agent = &Agent{
		Log:       NewLogger(h.log),
		Console:   h.console,
		Params:    Params{ConfigURL: cfgSrv.URL + agentconfig.Path + bootMAC + ".json?boot=" + bootNonce, MAC: bootMAC},
		Collector: &Collector{Root: "testdata/vm"},
		LoadModules: func(context.Context) {
			h.step("modules")
		},
		LinksUp:    func(context.Context) { h.step("links up") },
		WaitRandom: func(context.Context) { h.step("random") },
		QuietConsole: func() {
			if h.console.String() != "" {
				h.step("quiet console after printing")
				return
			}
			h.step("quiet console")
		},
		Network: func(_ context.Context, mac string) error {
			h.step("network " + mac)
			return nil
		},
		HTTP:        cfgSrv.Client(),
		SettleQuiet: time.Millisecond,
		SettleMax:   10 * time.Millisecond,
		MinBackoff:  time.Millisecond,
		MaxBackoff:  5 * time.Millisecond,
		DefaultWait: 5 * time.Millisecond,
	}
	return h
}

// run runs the agent until it powers off or reboots, and returns the
// action.
func (h *harness) run(t *testing.T) PowerAction {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		action PowerAction
		calls  int
	)
	h.agent.Power = func(a PowerAction) error {
		h.step("power " + a.String())
		if calls++; calls <= len(h.powerErr) {
			return h.powerErr[calls-1]
		}
		action = a
		cancel()
		return nil
	}
	done := make(chan struct{})
	go func() {
		h.agent.Run(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("the agent did not power off or reboot within 20s; log:\n%s", h.log)
	}
	if ctx.Err() == nil {
		t.Fatalf("the agent returned without powering off or rebooting; log:\n%s", h.log)
	}
	return action
}

func (h *harness) checkLog(t *testing.T, want ...string) {
	t.Helper()
	log := h.log.String()
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("the log has no %q:\n%s", w, log)
		}
	}
	for _, tok := range []string{firstTok, secondTok, thirdTok, bootNonce} {
		if strings.Contains(log, tok) || strings.Contains(h.console.String(), tok) {
			t.Errorf("the log or console contains the secret %q:\n%s", tok, log)
		}
	}
}

func wait(d time.Duration, reason string) *agentv1.Instruction {
	i := &agentv1.Instruction{Action: agentv1.Instruction_ACTION_WAIT, Reason: reason}
	if d > 0 {
		i.Wait = durationpb.New(d)
	}
	return i
}

// TestAgentReports: the configuration is not there at first (503, with
// a reason), then the agent reports, learns that the hardware is another
// machine and gets a new token, waits as told, and powers off.
func TestAgentReports(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{
		report: func(int) (*agentv1.ReportInventoryResponse, error) {
			return &agentv1.ReportInventoryResponse{
				Machine:     &machinev1.Machine{Id: machineB, State: machinev1.MachineState_MACHINE_STATE_INVENTORIED},
				AgentToken:  secondTok,
				Instruction: wait(time.Millisecond, "hardware checks are running"),
			}, nil
		},
		instruction: func(n int) (*agentv1.Instruction, error) {
			if n < 2 {
				return wait(0, "hardware checks are running"), nil
			}
			return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF, Reason: "machine is READY"}, nil
		},
	}
	h := newHarness(t, api, func(h *harness, n int) (int, string) {
		if n == 0 {
			return http.StatusServiceUnavailable, "machine " + bootMAC + " is not enrolled yet\n"
		}
		return http.StatusOK, h.config(machineA, firstTok)
	})
	if got := h.run(t); got != PowerOff {
		t.Errorf("power action %s, want powering off", got)
	}
	reports, instructions := api.calls()
	wantReports := []call{{Machine: machineA, Auth: "Bearer " + firstTok, MAC: "52:54:00:aa:bb:cc"}}
	if diff := cmp.Diff(wantReports, reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	next := call{Machine: machineB, Auth: "Bearer " + secondTok}
	if diff := cmp.Diff([]call{next, next, next}, instructions); diff != "" {
		t.Errorf("GetInstruction calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"modules", "random", "network " + bootMAC, "power powering off"}, h.steps); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	h.checkLog(t,
		`503 Service Unavailable: machine 52:54:00:aa:bb:cc is not enrolled yet`,
		`scout: configuration from `+strings.TrimSuffix(h.agent.Params.ConfigURL, "?boot="+bootNonce)+`: API `+h.apiURL+`, machine `+machineA,
		`scout: this hardware is machine `+machineB+` (was `+machineA+`)`,
		`scout: reported inventory; machine `+machineB+` is INVENTORIED`,
		`scout: waiting (ACTION_WAIT): hardware checks are running`,
		`scout: powering off: machine is READY`)
	if n := strings.Count(h.log.String(), "scout: waiting"); n != 1 {
		t.Errorf("%d lines say the agent is waiting for the same reason, want 1", n)
	}
}

// TestAgentNewToken: when the API rejects the token, the agent fetches
// its configuration again and reports with the new token.
func TestAgentNewToken(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{
		report: func(n int) (*agentv1.ReportInventoryResponse, error) {
			if n == 0 {
				return &agentv1.ReportInventoryResponse{
					Machine:     &machinev1.Machine{Id: machineA, State: machinev1.MachineState_MACHINE_STATE_INVENTORIED},
					Instruction: wait(time.Millisecond, "checks"),
				}, nil
			}
			return &agentv1.ReportInventoryResponse{
				Machine:     &machinev1.Machine{Id: machineA, State: machinev1.MachineState_MACHINE_STATE_FAILED},
				Instruction: &agentv1.Instruction{Action: agentv1.Instruction_ACTION_REBOOT, Reason: "retry the checks"},
			}, nil
		},
		instruction: func(int) (*agentv1.Instruction, error) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("agent token expired"))
		},
	}
	h := newHarness(t, api, func(h *harness, n int) (int, string) {
		if n == 0 {
			return http.StatusOK, h.config(machineA, firstTok)
		}
		return http.StatusOK, h.config(machineA, thirdTok)
	})
	if got := h.run(t); got != Reboot {
		t.Errorf("power action %s, want rebooting", got)
	}
	reports, instructions := api.calls()
	wantReports := []call{
		{Machine: machineA, Auth: "Bearer " + firstTok, MAC: bootMAC},
		{Machine: machineA, Auth: "Bearer " + thirdTok, MAC: bootMAC},
	}
	if diff := cmp.Diff(wantReports, reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]call{{Machine: machineA, Auth: "Bearer " + firstTok}}, instructions); diff != "" {
		t.Errorf("GetInstruction calls (-want +got):\n%s", diff)
	}
	h.checkLog(t, "agent token expired; fetching the configuration again", "scout: rebooting: retry the checks",
		"machine "+machineA+" is FAILED")
}

// TestAgentRetries: failed calls, bad configurations and a refused power
// off are retried; none of it logs the token.
func TestAgentRetries(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{
		report: func(n int) (*agentv1.ReportInventoryResponse, error) {
			if n < 2 {
				return nil, connect.NewError(connect.CodeUnavailable, errors.New("database is starting"))
			}
			return &agentv1.ReportInventoryResponse{
				Machine:     &machinev1.Machine{Id: machineA, State: machinev1.MachineState_MACHINE_STATE_READY},
				Instruction: &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF},
			}, nil
		},
	}
	h := newHarness(t, api, func(h *harness, n int) (int, string) {
		switch n {
		case 0:
			return http.StatusOK, `{"api_url": "` + h.apiURL + `", "token": "` + firstTok + `",`
		case 1:
			return http.StatusOK, `{"api_url": "` + h.apiURL + `", "token": "` + firstTok + `"}`
		case 2:
			return http.StatusOK, `{"api_url": "ftp://x", "machine_id": "` + machineA + `", "token": "` + firstTok + `", "ca_pem": "not PEM"}`
		case 3:
			return http.StatusOK, `{"api_url": 7, "token": "` + firstTok + `"}`
		case 4:
			return http.StatusNotFound, strings.Repeat("x", 1000)
		}
		return http.StatusOK, h.config(machineA, firstTok)
	})
	h.powerErr = []error{errors.New("reboot: operation not permitted")}
	if got := h.run(t); got != PowerOff {
		t.Errorf("power action %s, want powering off", got)
	}
	reports, _ := api.calls()
	if len(reports) != 3 {
		t.Errorf("%d reports, want 3 (two failed)", len(reports))
	}
	h.checkLog(t,
		"not valid JSON: syntax error at offset",
		"machine_id is empty",
		`api_url \"ftp://x\" is not an http(s) URL; ca_pem holds no PEM certificate`,
		"field api_url has the wrong type",
		"404 Not Found: "+strings.Repeat("x", maxErrorBody)+"...",
		"scout: report the inventory: unavailable: database is starting; retrying in",
		"scout: powering off: the API said so",
		"reboot: operation not permitted; trying again in")
	if strings.Contains(h.log.String(), strings.Repeat("x", maxErrorBody+1)) {
		t.Error("the log holds more of the error body than it should")
	}
}

// TestAgentPrints: in print mode the agent prints the inventory on one
// line, needs no network, and powers off.
func TestAgentPrints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &fakeAPI{}, func(*harness, int) (int, string) { return http.StatusTeapot, "" })
	h.agent.Params = Params{Print: true}
	if got := h.run(t); got != PowerOff {
		t.Errorf("power action %s, want powering off", got)
	}
	if diff := cmp.Diff([]string{"modules", "links up", "quiet console", "power powering off"}, h.steps); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	out := h.console.String()
	line, ok := strings.CutPrefix(out, InventoryPrefix+" ")
	if !ok || strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("console output %q: want one line starting with %q", out, InventoryPrefix)
	}
	inv := &machinev1.Inventory{}
	if err := protojson.Unmarshal([]byte(line), inv); err != nil {
		t.Fatalf("the printed inventory: %v", err)
	}
	if inv.GetCpu().GetThreads() != 4 || inv.GetNics()[0].GetMac() != bootMAC {
		t.Errorf("printed inventory %v is not the one of testdata/vm", inv)
	}
	if h.fetches != 0 {
		t.Errorf("print mode fetched the configuration %d times", h.fetches)
	}
	h.checkLog(t, "scout: powering off: inventory printed (print mode)")
}

// enrolPassword is what the fake in-band enrolment says it set.
const enrolPassword = "Fr3shBMCpassw0rdAbCd"

// readyAndEnrol is a report answer: the machine is Ready, enrol its BMC
// (or not), power off.
func readyAndEnrol(enrol bool) func(int) (*agentv1.ReportInventoryResponse, error) {
	return func(int) (*agentv1.ReportInventoryResponse, error) {
		return &agentv1.ReportInventoryResponse{
			Machine:     &machinev1.Machine{Id: machineA, State: machinev1.MachineState_MACHINE_STATE_READY},
			AgentToken:  secondTok,
			Instruction: &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF, Reason: "machine is READY"},
			EnrollBmc:   enrol,
		}, nil
	}
}

// TestAgentEnrollsBMC: when the report asks for it, the agent creates its
// BMC user in band and sends it to the API before it follows the
// instruction; the password is in no log line.
func TestAgentEnrollsBMC(t *testing.T) {
	t.Parallel()
	testsecret.Register(t, enrolPassword)
	api := &fakeAPI{report: readyAndEnrol(true)}
	h := newHarness(t, api, func(h *harness, n int) (int, string) { return http.StatusOK, h.config(machineA, firstTok) })
	h.agent.EnrollBMC = func(context.Context) (*BMCEnrolment, error) {
		h.step("enrol BMC")
		return &BMCEnrolment{Channel: 1, Address: "198.18.0.23", MAC: "52:54:00:be:ef:01", UserID: 3, Username: BMCUsername, Password: enrolPassword}, nil
	}
	if got := h.run(t); got != PowerOff {
		t.Errorf("power action %s, want powering off", got)
	}
	want := []*agentv1.EnrollBMCRequest{{MachineId: machineA, Address: "198.18.0.23", Mac: "52:54:00:be:ef:01", Username: "carbide", Password: enrolPassword}}
	if diff := cmp.Diff(want, api.enrolments, protocmp.Transform()); diff != "" {
		t.Errorf("EnrollBMC calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"modules", "random", "network " + bootMAC, "enrol BMC", "power powering off"}, h.steps); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	h.checkLog(t,
		`scout: BMC user 3 (carbide) set in band with a new 20-byte password, ADMINISTRATOR on LAN channel 1; BMC address 198.18.0.23, MAC 52:54:00:be:ef:01`,
		`scout: BMC enrolled: machine `+machineA+` is reached at 198.18.0.23 as user carbide`)
	if strings.Contains(h.log.String(), enrolPassword) {
		t.Error("the log holds the BMC password")
	}
}

// TestAgentBMCEnrolmentFailures: a report that does not ask for
// enrolment leaves the BMC alone; an in-band failure, or an API that
// refuses the enrolment, is logged and discovery goes on.
func TestAgentBMCEnrolmentFailures(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		ask       bool
		inBand    error
		api       error
		wantCalls int
		wantLog   string
	}{
		"not asked": {ask: false, wantCalls: 0, wantLog: "scout: powering off"},
		"in band":   {ask: true, inBand: errors.New("set the user name: BMC answered with completion code 0xd4 (insufficient privilege)"), wantLog: "scout: BMC not enrolled: set the user name: BMC answered with completion code 0xd4"},
		"refused": {ask: true, api: connect.NewError(connect.CodeFailedPrecondition, errors.New("an operator set the credentials")), wantCalls: 1,
			wantLog: "scout: BMC not enrolled: send it to the API: failed_precondition: an operator set the credentials"},
		"unavailable": {ask: true, api: connect.NewError(connect.CodeUnavailable, errors.New("down")), wantCalls: enrolAttempts,
			wantLog: "scout: BMC not enrolled: send it to the API: unavailable: down"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testsecret.Register(t, enrolPassword)
			api := &fakeAPI{report: readyAndEnrol(tc.ask), enroll: func(int) error { return tc.api }}
			h := newHarness(t, api, func(h *harness, n int) (int, string) { return http.StatusOK, h.config(machineA, firstTok) })
			var inBand int
			h.agent.EnrollBMC = func(context.Context) (*BMCEnrolment, error) {
				inBand++
				if tc.inBand != nil {
					return nil, tc.inBand
				}
				return &BMCEnrolment{Channel: 1, Address: "198.18.0.23", UserID: 3, Username: BMCUsername, Password: enrolPassword}, nil
			}
			if got := h.run(t); got != PowerOff {
				t.Errorf("power action %s, want powering off", got)
			}
			if tc.ask != (inBand == 1) {
				t.Errorf("in-band enrolment ran %d times; asked: %t", inBand, tc.ask)
			}
			if len(api.enrolments) != tc.wantCalls {
				t.Errorf("%d EnrollBMC calls, want %d", len(api.enrolments), tc.wantCalls)
			}
			h.checkLog(t, tc.wantLog)
			if strings.Contains(h.log.String(), enrolPassword) {
				t.Error("the log holds the BMC password")
			}
		})
	}
}
