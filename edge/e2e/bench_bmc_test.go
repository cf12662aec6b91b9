package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

var (
	bmcFleet     = flag.Int("bmc.fleet", 1000, "BenchmarkBMCFleet: simulated Redfish BMCs")
	bmcPollSecs  = flag.Int("bmc.poll", 10, "BenchmarkBMCFleet: the daemons' --poll-interval, seconds")
	bmcPollPhase = flag.Duration("bmc.pollfor", 30*time.Second, "BenchmarkBMCFleet: how long the polling phase is measured")
)

// BenchmarkBMCFleet measures two carbide-bmc daemons on one API on
// PostgreSQL serving -bmc.fleet simulated Redfish BMCs (in-memory
// machines, no VMs): how fast a power-on of every machine completes
// (operations/s), then how many power-state polls they make per second
// with -bmc.poll and what each costs in CPU (the daemons and the API;
// PostgreSQL is not counted).
func BenchmarkBMCFleet(b *testing.B) {
	n := *bmcFleet
	testsecret.Register(b, e2eBMCPassword)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbURL := startPostgres(b)
	dataDir := b.TempDir()
	apiProc := startProc(b, nil, "carbide-api", bins.api, "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--database-url", dbURL)
	a := apiFrom(b, apiProc, dataDir)

	machines := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rf, err := bmcsim.StartRedfish(ctx, bmcsim.RedfishConfig{Password: e2eBMCPassword})
			if err != nil {
				errs <- err
				return
			}
			b.Cleanup(rf.Stop)
			m, err := a.client.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
				Macs: []string{fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)}}))
			if err != nil {
				errs <- err
				return
			}
			ap := netip.MustParseAddrPort(rf.Addr().String())
			machines[i] = m.Msg.GetMachine().GetId()
			if _, err := a.client.BMC.SetBMC(ctx, connect.NewRequest(&bmcv1.SetBMCRequest{MachineId: machines[i],
				Address: "127.0.0.1", Port: uint32(ap.Port()), Protocol: bmcv1.Protocol_PROTOCOL_REDFISH,
				Username: "admin", Password: e2eBMCPassword})); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}

	daemons := func(poll int) []*proc {
		var ps []*proc
		for _, name := range []string{"a", "b"} {
			ps = append(ps, startProc(b, nil, "carbide-bmc "+name, bins.bmc, "--pki-dir", a.pki, "--api-url", "https://"+a.addr,
				"--worker", name, "--poll-interval", fmt.Sprintf("%ds", poll), "--claim-interval", "100ms",
				"--metrics-listen", "127.0.0.1:0"))
		}
		return ps
	}

	// Operations: a power-on of every machine, with polling off.
	for _, id := range machines {
		if _, err := a.client.BMC.RequestOperation(ctx, connect.NewRequest(&bmcv1.RequestOperationRequest{
			MachineId: id, Type: bmcv1.OperationType_OPERATION_TYPE_POWER_ON})); err != nil {
			b.Fatal(err)
		}
	}
	api0 := procTicks(b, apiProc)
	start := time.Now()
	ds := daemons(0)
	succeeded := func() int {
		count := 0
		for page := ""; ; {
			resp, err := a.client.BMC.ListOperations(ctx, connect.NewRequest(&bmcv1.ListOperationsRequest{PageSize: 1000, PageToken: page,
				States: []bmcv1.OperationState{bmcv1.OperationState_OPERATION_STATE_SUCCEEDED}}))
			if err != nil {
				b.Fatal(err)
			}
			count += len(resp.Msg.GetOperations())
			if page = resp.Msg.GetNextPageToken(); page == "" {
				return count
			}
		}
	}
	for succeeded() < n {
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d of %d power-ons succeeded in 10 minutes", succeeded(), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	opTicks := procTicks(b, ds...) + procTicks(b, apiProc) - api0
	for _, p := range ds {
		p.stop(b)
	}
	b.ReportMetric(float64(n)/took.Seconds(), "ops/s")
	b.ReportMetric(ticksMs(opTicks)/float64(n), "cpu-ms/op")

	// Polls: two daemons read every machine's power state each -bmc.poll.
	ds = daemons(*bmcPollSecs)
	metricsAddr := regexp.MustCompile(`metrics=(\S+)`)
	time.Sleep(*bmcPollPhase / 3) // the first round
	reads := func() float64 {
		total := 0.0
		for _, p := range ds {
			m := p.waitOutput(b, metricsAddr, 10*time.Second)
			total += scrape(b, "http://"+m[1]+"/metrics", `carbide_bmc_power_reads_total{result="ok"}`)
		}
		return total
	}
	r0, t0 := reads(), procTicks(b, ds...)+procTicks(b, apiProc)
	w0 := time.Now()
	time.Sleep(*bmcPollPhase)
	r1, t1 := reads(), procTicks(b, ds...)+procTicks(b, apiProc)
	polls := r1 - r0
	b.ReportMetric(polls/time.Since(w0).Seconds(), "polls/s")
	b.ReportMetric(float64(n)/float64(*bmcPollSecs), "polls/s-wanted")
	if polls > 0 {
		b.ReportMetric(ticksMs(t1-t0)/polls, "cpu-ms/poll")
	}
}

// procTicks is the CPU time (user and system clock ticks) ps have used.
func procTicks(t testing.TB, ps ...*proc) int64 {
	t.Helper()
	var total int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		for _, i := range []int{11, 12} { // utime, stime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			total += v
		}
	}
	return total
}

// ticksMs converts clock ticks (100 a second) to milliseconds.
func ticksMs(t int64) float64 { return float64(t) * 10 }

// scrape returns one sample of a Prometheus endpoint.
func scrape(t testing.TB, url, sample string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
