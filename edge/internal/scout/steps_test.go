package scout

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	agentv1 "github.com/carbide-dev/carbide/gen/carbide/agent/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/testsecret"
)

func (f *fakeAPI) ReportProgress(_ context.Context, req *connect.Request[agentv1.ReportProgressRequest]) (*connect.Response[agentv1.ReportProgressResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress = append(f.progress, req.Msg)
	return connect.NewResponse(&agentv1.ReportProgressResponse{}), nil
}

func (f *fakeAPI) CompleteStep(_ context.Context, req *connect.Request[agentv1.CompleteStepRequest]) (*connect.Response[agentv1.CompleteStepResponse], error) {
	f.mu.Lock()
	n := len(f.completes)
	f.completes = append(f.completes, req.Msg)
	f.mu.Unlock()
	if f.complete == nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected CompleteStep %d", n))
	}
	instr, err := f.complete(n, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.CompleteStepResponse{Instruction: instr}), nil
}

// stepAnswer is a report answer that starts a step.
func stepAnswer(instr *agentv1.Instruction) func(int) (*agentv1.ReportInventoryResponse, error) {
	return func(int) (*agentv1.ReportInventoryResponse, error) {
		return &agentv1.ReportInventoryResponse{
			Machine:     &machinev1.Machine{Id: machineA, State: machinev1.MachineState_MACHINE_STATE_READY},
			Instruction: instr,
		}, nil
	}
}

// testImage is a small raw disk image with an MBR and one partition
// (1 MiB to 3 MiB), so that a seed can be added after it.
func testImage() []byte {
	img := make([]byte, 3<<20)
	for i := 512; i < len(img); i++ {
		img[i] = byte(i*7 + i>>11)
	}
	e := img[446:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], 4096)
	img[510], img[511] = 0x55, 0xaa
	return img
}

// seedServer serves a gzip-compressed image and a NoCloud seed without
// network-config, all behind a token query.
func seedServer(t *testing.T, gz []byte, seed map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "seed-secret" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if r.URL.Path == "/image.gz" {
			w.Write(gz)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/seed/")
		if b, found := seed[name]; ok && found {
			fmt.Fprint(w, b)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestAgentInstalls: ACTION_INSTALL writes the image to the named disk,
// adds the seed, reports progress and completes the step; a failure is
// reported with CompleteStep and never written past.
func TestAgentInstalls(t *testing.T) {
	t.Parallel()
	testsecret.Register(t, "seed-secret")
	img := testImage()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(img)
	zw.Close()
	gz := buf.Bytes()
	sum := sha256.Sum256(gz)
	seed := map[string]string{"meta-data": "instance-id: i-1\nlocal-hostname: node-01\n", "user-data": "#cloud-config\nhostname: node-01\n", "vendor-data": ""}
	srv := seedServer(t, gz, seed)

	tests := map[string]struct {
		sha256 string
		serial string
		disk   string
		noDev  bool
		// seed is where the seed is: "instruction", "config" or "".
		seed string
		// untouched: the step is refused before the disk is written.
		untouched bool
		wantErr   string
	}{
		"installs":                {sha256: hex.EncodeToString(sum[:]), serial: "vm-disk-1", disk: "vda", seed: "instruction"},
		"seed from configuration": {sha256: hex.EncodeToString(sum[:]), disk: "vda", seed: "config"},
		"no seed URL":             {sha256: hex.EncodeToString(sum[:]), disk: "vda", wantErr: "no cloud-init seed URL"},
		"wrong checksum":          {sha256: strings.Repeat("0", 64), serial: "vm-disk-1", disk: "vda", seed: "instruction", wantErr: "SHA-256 checksum mismatch: expected " + strings.Repeat("0", 64)},
		"wrong serial":            {sha256: hex.EncodeToString(sum[:]), serial: "another", disk: "vda", seed: "instruction", untouched: true, wantErr: `disk vda has serial "vm-disk-1", the instruction names "another"`},
		"bad disk name":           {sha256: hex.EncodeToString(sum[:]), disk: "../vda", seed: "instruction", untouched: true, wantErr: "is not a disk's kernel name"},
		"no disk work":            {sha256: hex.EncodeToString(sum[:]), disk: "vda", noDev: true, seed: "instruction", untouched: true, wantErr: "does not touch disks"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			instr := &agentv1.Instruction{Action: agentv1.Instruction_ACTION_INSTALL, Step: "write_image", Reason: "instance i-1",
				Install: &agentv1.Install{InstanceId: "i-1", Disk: tc.disk, DiskSerial: tc.serial,
					Image: &instancev1.DiskImage{
						File:        &instancev1.Artifact{Url: srv.URL + "/image.gz?token=seed-secret", Sha256: tc.sha256, SizeBytes: int64(len(gz))},
						Format:      instancev1.DiskFormat_DISK_FORMAT_RAW,
						Compression: instancev1.Compression_COMPRESSION_GZIP,
					}}}
			api := &fakeAPI{report: stepAnswer(instr), complete: func(int, *agentv1.CompleteStepRequest) (*agentv1.Instruction, error) {
				return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_REBOOT, Reason: "boot the instance"}, nil
			}}
			seedURL := srv.URL + "/seed/?token=seed-secret"
			if tc.seed == "instruction" {
				instr.Install.SeedUrl = seedURL
			}
			h := newHarness(t, api, func(h *harness, n int) (int, string) {
				if tc.seed != "config" {
					return http.StatusOK, h.config(machineA, firstTok)
				}
				b, err := json.Marshal(agentconfig.Config{APIURL: h.apiURL, CAPEM: h.caPEM, MachineID: machineA, Token: firstTok,
					TokenExpireTime: time.Now().Add(time.Hour), CloudInitURL: seedURL})
				if err != nil {
					panic(err)
				}
				return http.StatusOK, string(b)
			})
			dev := t.TempDir()
			disk := filepath.Join(dev, "vda")
			if err := os.WriteFile(disk, make([]byte, 16<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			if !tc.noDev {
				h.agent.DevDir = dev
			}
			h.agent.ProgressInterval = 1
			if got := h.run(t); got != Reboot {
				t.Errorf("power action %s, want rebooting", got)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if len(api.completes) != 1 {
				t.Fatalf("%d CompleteStep calls, want 1", len(api.completes))
			}
			c := api.completes[0]
			if c.GetStep() != "write_image" || c.GetMachineId() != machineA || c.GetDuration().AsDuration() <= 0 {
				t.Errorf("CompleteStep %v", c)
			}
			if strings.Contains(c.GetError(), "seed-secret") || strings.Contains(h.log.String(), "seed-secret") {
				t.Errorf("the step's error or the log shows the URL's query: %q", c.GetError())
			}
			got, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				if !strings.Contains(c.GetError(), tc.wantErr) {
					t.Errorf("CompleteStep error %q, want one saying %q", c.GetError(), tc.wantErr)
				}
				if tc.untouched && !bytes.Equal(got, make([]byte, len(got))) {
					t.Error("the disk was written although the step was refused")
				}
				return
			}
			if c.GetError() != "" || c.GetBytes() != int64(len(img)) {
				t.Errorf("CompleteStep error %q, bytes %d; want none, %d", c.GetError(), c.GetBytes(), len(img))
			}
			if !bytes.Equal(got[512:len(img)], img[512:]) {
				t.Error("the disk does not hold the image")
			}
			// The seed: partition 2 from 3 MiB, FAT labelled CIDATA, with
			// the files' contents.
			e := got[446+16:]
			if e[4] != 0x0e || binary.LittleEndian.Uint32(e[8:]) != 3<<20/512 {
				t.Errorf("MBR entry 2: type %#x at sector %d; want 0x0e at %d", e[4], binary.LittleEndian.Uint32(e[8:]), 3<<20/512)
			}
			if fs := got[3<<20:]; string(fs[43:49]) != "CIDATA" {
				t.Errorf("the seed partition's label is %q", fs[43:54])
			}
			for n, b := range seed {
				if b != "" && !bytes.Contains(got[3<<20:], []byte(b)) {
					t.Errorf("the seed does not hold %s", n)
				}
			}
			if len(api.progress) == 0 || api.progress[len(api.progress)-1].GetStep() != "write_image" {
				t.Errorf("progress reports %v", api.progress)
			}
			h.checkLog(t, "scout: step write_image (ACTION_INSTALL): instance i-1",
				"scout: wrote 3145728 bytes to "+disk,
				"scout: cloud-init seed (3 files) in partition 2 of "+disk,
				"scout: step write_image done")
		})
	}
}

// TestAgentWipes: ACTION_WIPE wipes every named disk, goes on past one
// that fails, and reports the outcome.
func TestAgentWipes(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		mode      instancev1.WipeMode
		disks     []string
		wantErr   string
		wantBytes int64
		wantZero  bool
	}{
		"full":         {mode: instancev1.WipeMode_WIPE_MODE_FULL, disks: []string{"vda"}, wantBytes: 8 << 20, wantZero: true},
		"quick":        {mode: instancev1.WipeMode_WIPE_MODE_QUICK, disks: []string{"vda"}, wantBytes: 2 << 20},
		"missing disk": {mode: instancev1.WipeMode_WIPE_MODE_FULL, disks: []string{"vdb", "vda"}, wantBytes: 8 << 20, wantZero: true, wantErr: "1 of 2 disks not wiped: open the disk"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			instr := &agentv1.Instruction{Action: agentv1.Instruction_ACTION_WIPE, Step: "wipe", Wipe: &agentv1.Wipe{Mode: tc.mode, Disks: tc.disks}}
			api := &fakeAPI{report: stepAnswer(instr), complete: func(int, *agentv1.CompleteStepRequest) (*agentv1.Instruction, error) {
				return &agentv1.Instruction{Action: agentv1.Instruction_ACTION_POWER_OFF, Reason: "machine is READY"}, nil
			}}
			h := newHarness(t, api, func(h *harness, n int) (int, string) { return http.StatusOK, h.config(machineA, firstTok) })
			h.agent.DevDir = t.TempDir()
			h.agent.ProgressInterval = 1
			disk := filepath.Join(h.agent.DevDir, "vda")
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0xa5}, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := h.run(t); got != PowerOff {
				t.Errorf("power action %s, want powering off", got)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if len(api.completes) != 1 {
				t.Fatalf("%d CompleteStep calls, want 1", len(api.completes))
			}
			c := api.completes[0]
			if c.GetStep() != "wipe" || c.GetBytes() != tc.wantBytes || !strings.Contains(c.GetError(), tc.wantErr) || (tc.wantErr == "") != (c.GetError() == "") {
				t.Errorf("CompleteStep step %q bytes %d error %q; want wipe, %d, %q", c.GetStep(), c.GetBytes(), c.GetError(), tc.wantBytes, tc.wantErr)
			}
			got, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			if isZero := bytes.Equal(got, make([]byte, len(got))); isZero != tc.wantZero {
				t.Errorf("the disk is all zeros: %v, want %v", isZero, tc.wantZero)
			}
			if !tc.wantZero && (!bytes.Equal(got[:1<<20], make([]byte, 1<<20)) || got[4<<20] != 0xa5) {
				t.Error("a quick wipe did not zero the first MiB only")
			}
			h.checkLog(t, "scout: wiping "+disk)
		})
	}
}
