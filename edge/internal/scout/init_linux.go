package scout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"
)

// NewLogger returns the agent's logger: text lines without a time (the
// kernel's console lines carry their own) to w.
func NewLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// NewMachineAgent returns an Agent that works on the machine it runs on,
// with its file system at root ("/").
func NewMachineAgent(log *slog.Logger, console io.Writer, root string, params Params) *Agent {
	c := &Collector{Root: root, BMCAddress: BMCAddress(root, 5*time.Second)}
	return &Agent{
		Log:       log,
		Console:   console,
		Params:    params,
		Collector: c,
		DevDir:    filepath.Join(root, "dev"),
		EnrollBMC: EnrollBMC(root, 5*time.Second),
		LoadModules: func(context.Context) {
			start := time.Now()
			res, err := loadModules(log, root)
			if err != nil {
				log.Error("scout: " + err.Error())
				return
			}
			msg := fmt.Sprintf("scout: loaded %d modules in %s", res.Loaded, time.Since(start).Round(time.Millisecond))
			if res.Present > 0 {
				msg += fmt.Sprintf("; %d were loaded already", res.Present)
			}
			if res.NoDevice > 0 {
				msg += fmt.Sprintf("; %d found no device", res.NoDevice)
			}
			if res.Failed > 0 {
				msg += fmt.Sprintf("; %d failed", res.Failed)
			}
			log.Info(msg)
		},
		LinksUp: func(ctx context.Context) {
			names, err := setLinksUp(log, c)
			if err != nil {
				log.Warn("scout: " + err.Error())
				return
			}
			waitCarrier(ctx, c, names, true, 3*time.Second)
		},
		WaitRandom: func(context.Context) { waitRandom(log) },
		Network: func(ctx context.Context, mac string) error {
			return bringUpNetwork(ctx, log, c, mac)
		},
		QuietConsole: func() { quietConsole(log) },
		HTTP:         &http.Client{Timeout: 30 * time.Second},
		Power:        power,
		SettleQuiet:  time.Second,
		SettleMax:    10 * time.Second,
		MinBackoff:   DefaultMinBackoff,
		MaxBackoff:   DefaultMaxBackoff,
		DefaultWait:  DefaultWait,
	}
}

// Init is the agent as PID 1. It never returns: the kernel panics when
// init exits. It mounts the early file systems, reads its parameters from
// the kernel command line and runs the flow; a panic is logged and the
// flow starts again.
func Init() {
	mountErr := mountEarly()
	console := openConsoles(os.Stdout)
	log := NewLogger(console)
	log.Info("scout: starting")
	if mountErr != nil {
		log.Error("scout: " + mountErr.Error())
	}
	var params Params
	for {
		cmdline, err := os.ReadFile("/proc/cmdline")
		if err == nil {
			params, err = ParseCmdline(string(cmdline))
		}
		if err == nil {
			break
		}
		if params.Usable() {
			log.Warn(fmt.Sprintf("scout: kernel command line: %v; ignoring those parameters", err))
			break
		}
		// Nothing to do without parameters; say why where the operator
		// looks, for as long as the machine stays on.
		log.Error(fmt.Sprintf("scout: kernel command line: %v; fix the boot configuration and reboot", err))
		time.Sleep(time.Minute)
	}
	agent := NewMachineAgent(log, console, "/", params)
	for {
		runOnce(log, agent)
		time.Sleep(5 * time.Second)
	}
}

// runOnce runs the flow and turns a panic into a log line.
func runOnce(log *slog.Logger, agent *Agent) {
	defer func() {
		if r := recover(); r != nil {
			log.Error(fmt.Sprintf("scout: panic: %v; starting over\n%s", r, debug.Stack()))
		}
	}()
	agent.Run(context.Background())
}
