package scout

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
)

// ParamInventory on the kernel command line selects what the agent does
// with the inventory; the only value is "print" (PrintInventory).
const ParamInventory = "carbide.inventory"

// PrintInventory is the value of ParamInventory that makes the agent print
// the inventory and power off instead of reporting it.
const PrintInventory = "print"

// Params are the agent's kernel command-line parameters.
type Params struct {
	// ConfigURL is where the configuration is served (carbide.config).
	ConfigURL string
	// MAC is the MAC address the machine booted from (carbide.mac), in
	// lower case; empty when not given.
	MAC string
	// Print is set by carbide.inventory=print.
	Print bool
}

// ParseCmdline reads the agent's parameters from a kernel command line
// (the contents of /proc/cmdline). Values may be double-quoted. The error
// lists every parameter that is wrong; the parameters that are right are
// returned either way, and Usable says whether they are enough to go on.
func ParseCmdline(cmdline string) (Params, error) {
	var (
		p    Params
		errs []error
	)
	for _, arg := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(arg, "=")
		switch key {
		case agentconfig.ParamConfig:
			u, err := url.Parse(value)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("%s=%q: want an http:// or https:// URL", key, value))
				continue
			}
			p.ConfigURL = value
		case agentconfig.ParamMAC:
			mac, err := net.ParseMAC(value)
			if err != nil || len(mac) != 6 {
				errs = append(errs, fmt.Errorf("%s=%q: want a MAC address such as 52:54:00:12:34:56", key, value))
				continue
			}
			p.MAC = mac.String()
		case ParamInventory:
			if value != PrintInventory {
				errs = append(errs, fmt.Errorf("%s=%q: the only value is %q", key, value, PrintInventory))
				continue
			}
			p.Print = true
		}
	}
	if !p.Print && p.ConfigURL == "" && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("the kernel command line has neither %s=<URL> nor %s=%s",
			agentconfig.ParamConfig, ParamInventory, PrintInventory))
	}
	return p, errors.Join(errs...)
}

// Usable reports whether the agent has something to do: a configuration
// URL, or print mode.
func (p Params) Usable() bool {
	return p.Print || p.ConfigURL != ""
}

// splitCmdline splits a kernel command line at spaces outside double
// quotes, and drops the quotes, as the kernel's parser does.
func splitCmdline(s string) []string {
	var (
		out    []string
		cur    strings.Builder
		quoted bool
		inArg  bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if inArg {
				out = append(out, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		out = append(out, cur.String())
	}
	return out
}
