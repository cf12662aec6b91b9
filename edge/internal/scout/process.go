package scout

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// NewProcessAgent returns an Agent that runs as an ordinary process on a
// system whose network is already up: it reads the inventory below root,
// fetches its configuration from configURL, reports and follows the API's
// instructions, but loads no modules, configures no network and never
// powers the system off or reboots it: it logs what it was told and waits
// until ctx is done.
func NewProcessAgent(log *slog.Logger, root, configURL string) *Agent {
	return &Agent{
		Log:         log,
		Console:     io.Discard,
		Params:      Params{ConfigURL: configURL},
		Collector:   &Collector{Root: root},
		LoadModules: func(context.Context) {},
		LinksUp:     func(context.Context) {},
		WaitRandom:  func(context.Context) {},
		Network:     func(context.Context, string) error { return nil },
		HTTP:        &http.Client{Timeout: 30 * time.Second},
		Power:       func(PowerAction) error { return nil },
		MinBackoff:  DefaultMinBackoff,
		MaxBackoff:  DefaultMaxBackoff,
		DefaultWait: DefaultWait,
	}
}
