package bmcd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/carbide-dev/carbide/edge/internal/daemon"
)

// Role is the daemon's role in the Carbide API: its client certificate is
// bmc.crt in the PKI directory.
const Role = "bmc"

// Config is the configuration of the BMC daemon. The zero value is not
// usable: start from [DefaultConfig].
type Config struct {
	// APIConfig is how the daemon reaches the Carbide API, with the
	// client certificate of the bmc role (Role).
	daemon.APIConfig

	// Worker names the daemon to the API, in leases and operations; it
	// must differ between the daemons. Default: host name and process id.
	Worker string
	// MaxConcurrent is how many machines the daemon works on at once
	// (operations and polls together). Each machine has one actor at a
	// time, whatever the number of daemons, so this also bounds the calls
	// to each BMC to one.
	MaxConcurrent int
	// PollInterval is how often each machine's power state is read; 0
	// turns polling off. The API hands out the machines seen longest ago
	// first, so polls spread over the interval.
	PollInterval time.Duration
	// ClaimInterval is how long the daemon waits before asking for work
	// again after a claim that found none.
	ClaimInterval time.Duration
	// CallTimeout bounds each call to a BMC.
	CallTimeout time.Duration
	// Attempts is how often an operation is tried when the BMC fails in a
	// way that may pass (a timeout, a refused connection); RetryBackoff is
	// the wait after the first failure, doubled after each.
	Attempts     int
	RetryBackoff time.Duration
	// Providers is the order in which protocols are tried for a BMC whose
	// protocol is auto: "redfish", "ipmi".
	Providers []string
	// RedfishCAFile, when set, holds the CAs Redfish certificates must
	// chain to; otherwise they are not verified (BMCs mostly ship
	// self-signed ones).
	RedfishCAFile string
	// IPMIIgnoreBootValid trusts an IPMI boot override's device even
	// when the BMC reports it not valid (see Options.IPMIIgnoreBootValid).
	IPMIIgnoreBootValid bool
	// ShutdownTimeout is how long work in progress may take to finish
	// when the daemon stops; then its leases are released.
	ShutdownTimeout time.Duration

	// MetricsListen is the address of the metrics listener; "" for none.
	MetricsListen   string
	MetricsTimeouts daemon.HTTPTimeouts
	// DebugPprof serves the runtime profiles on the metrics listener.
	DebugPprof bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "carbide-bmc"
	}
	return Config{
		APIConfig:       daemon.DefaultAPIConfig(),
		Worker:          host + "-" + strconv.Itoa(os.Getpid()),
		MaxConcurrent:   32,
		PollInterval:    60 * time.Second,
		ClaimInterval:   time.Second,
		CallTimeout:     20 * time.Second,
		Attempts:        3,
		RetryBackoff:    time.Second,
		Providers:       []string{"redfish", "ipmi"},
		ShutdownTimeout: 30 * time.Second,
		MetricsListen:   "127.0.0.1:9169",
		MetricsTimeouts: daemon.DefaultMetricsTimeouts(),
	}
}

// Validate reports every problem of the configuration in one error, each
// naming its flag.
func (c *Config) Validate() error {
	errs := c.APIConfig.Validate(Role)
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Worker == "" || len(c.Worker) > 128 {
		add("worker: %q; give a name of 1 to 128 characters that no other carbide-bmc uses", c.Worker)
	}
	if c.MaxConcurrent < 1 || c.MaxConcurrent > 256 {
		add("max-concurrent: %d; give 1 to 256", c.MaxConcurrent)
	}
	if c.PollInterval < 0 || (c.PollInterval > 0 && c.PollInterval < time.Second) || c.PollInterval > 24*time.Hour {
		add("poll-interval: %s; give 0 (no polling) or 1s to 24h", c.PollInterval)
	}
	if c.ClaimInterval < 10*time.Millisecond || c.ClaimInterval > time.Minute {
		add("claim-interval: %s; give 10ms to 1m", c.ClaimInterval)
	}
	if c.CallTimeout <= 0 {
		add("call-timeout: %s; give a positive duration, e.g. 20s", c.CallTimeout)
	}
	if c.Attempts < 1 || c.Attempts > 10 {
		add("attempts: %d; give 1 to 10", c.Attempts)
	}
	if c.RetryBackoff < 0 {
		add("retry-backoff: %s; give a duration of 0 or more", c.RetryBackoff)
	}
	if len(c.Providers) == 0 {
		add("providers: empty; give redfish, ipmi or both, in the order to try them")
	}
	seen := map[string]bool{}
	for _, p := range c.Providers {
		if p != "redfish" && p != "ipmi" {
			add("providers: %q is not a protocol; give redfish and/or ipmi", p)
		} else if seen[p] {
			add("providers: %q appears twice", p)
		}
		seen[p] = true
	}
	if c.ShutdownTimeout < 0 {
		add("shutdown-timeout: %s; give a duration of 0 or more", c.ShutdownTimeout)
	}
	if c.MetricsListen != "" {
		errs = append(errs, c.MetricsTimeouts.Check("metrics-")...)
	}
	return errors.Join(errs...)
}
