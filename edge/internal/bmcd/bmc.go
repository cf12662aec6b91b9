// Package bmcd is the BMC side of carbide-bmc: it reaches a machine's BMC
// over IPMI (ipmitool) or Redfish through bmclib, powers the machine on,
// off and through resets, sets its next boot device and reads its power
// state. Every error it returns says whether retrying can help
// ([IsTransient]) and what to fix, and never holds a password.
package bmcd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	"github.com/bmc-toolbox/bmclib/v2/providers/redfish"
	"github.com/jacobweinstock/registrar"
	"github.com/stmcginnis/gofish/common"
)

// Protocol is how a BMC is reached.
type Protocol string

// Protocols.
const (
	// ProtocolAuto tries Options.AutoOrder and uses what answers.
	ProtocolAuto    Protocol = "auto"
	ProtocolIPMI    Protocol = "ipmi"
	ProtocolRedfish Protocol = "redfish"
)

// Target is one machine's BMC.
type Target struct {
	// Host is the BMC's address or name.
	Host string
	// Port is the IPMI (UDP) or Redfish (HTTPS) port; 0 means the
	// protocol's default, 623 or 443. With ProtocolAuto a non-zero port
	// is used for both.
	Port int
	// Protocol is auto, ipmi or redfish; empty means auto.
	Protocol Protocol
	// Username and Password are the BMC account.
	Username, Password string
}

// Validate reports every problem with t in one error.
func (t Target) Validate() error {
	var errs []error
	if t.Host == "" {
		errs = append(errs, errors.New("BMC host is empty"))
	}
	if t.Port < 0 || t.Port > 65535 {
		errs = append(errs, fmt.Errorf("BMC port %d is out of range 0-65535", t.Port))
	}
	switch t.Protocol {
	case "", ProtocolAuto, ProtocolIPMI, ProtocolRedfish:
	default:
		errs = append(errs, fmt.Errorf("BMC protocol %q is not one of auto, ipmi, redfish", t.Protocol))
	}
	if t.Username == "" {
		errs = append(errs, errors.New("BMC username is empty"))
	}
	return errors.Join(errs...)
}

// port is the port of protocol p.
func (t Target) port(p Protocol) int {
	if t.Port != 0 {
		return t.Port
	}
	if p == ProtocolRedfish {
		return 443
	}
	return 623
}

// addr is host:port of protocol p, as messages show it.
func (t Target) addr(p Protocol) string {
	return net.JoinHostPort(t.Host, strconv.Itoa(t.port(p)))
}

// Options tune how a BMC is reached. The zero value is usable.
type Options struct {
	// Timeout bounds each call (Open, and each operation); 20 s when 0.
	Timeout time.Duration
	// AutoOrder is the order in which ProtocolAuto tries protocols;
	// Redfish then IPMI when empty.
	AutoOrder []Protocol
	// IPMICipherSuite is ipmitool's -C; "3" when empty (what OpenIPMI's
	// ipmi_sim and most BMCs accept without a slow discovery).
	IPMICipherSuite string
	// IpmitoolPath is the ipmitool program; found on PATH when empty.
	IpmitoolPath string
	// RedfishRootCAs verifies the Redfish certificate. When nil the
	// certificate is not verified: BMCs mostly ship self-signed ones.
	RedfishRootCAs *x509.CertPool
	// IPMIIgnoreBootValid makes BootOverride count an IPMI boot
	// override with a device as in effect even when the BMC reports the
	// boot flags valid bit clear: for BMCs that never set it (OpenIPMI's
	// ipmi_sim keeps the device only). On a BMC that does, a one-time
	// override a boot used up, or that lapsed, then looks in effect.
	IPMIIgnoreBootValid bool
}

const defaultTimeout = 20 * time.Second

// providerName is bmclib's provider for each protocol.
var providerName = map[Protocol]string{
	ProtocolIPMI:    ipmitool.ProviderName,
	ProtocolRedfish: redfish.ProviderName,
}

// PowerState is a machine's power as its BMC reports it.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// BootDevice is a next boot device.
type BootDevice string

// Boot devices.
const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
	BootBIOS BootDevice = "bios"
)

// Client is an open connection to one BMC. It is not safe for concurrent
// use: one machine's operations run one at a time.
type Client struct {
	target    Target
	opts      Options
	bmc       *bmclib.Client
	protocols []Protocol // the protocols that opened, in order of use
}

// Open connects to t's BMC with the protocols t allows, in the configured
// order, and keeps those that answered. Close it when done (a Redfish
// session is ended then).
func Open(ctx context.Context, t Target, o Options) (*Client, error) {
	if err := t.Validate(); err != nil {
		return nil, &Error{Op: "open", msg: "check the BMC settings: " + err.Error()}
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.IPMICipherSuite == "" {
		o.IPMICipherSuite = "3"
	}
	order := []Protocol{t.Protocol}
	if t.Protocol == "" || t.Protocol == ProtocolAuto {
		order = o.AutoOrder
		if len(order) == 0 {
			order = []Protocol{ProtocolRedfish, ProtocolIPMI}
		}
	}
	opts := []bmclib.Option{
		bmclib.WithPerProviderTimeout(o.Timeout),
		bmclib.WithIpmitoolPort(strconv.Itoa(t.port(ProtocolIPMI))),
		bmclib.WithIpmitoolCipherSuite(o.IPMICipherSuite),
		bmclib.WithRedfishPort(strconv.Itoa(t.port(ProtocolRedfish))),
	}
	if o.IpmitoolPath != "" {
		opts = append(opts, bmclib.WithIpmitoolPath(o.IpmitoolPath))
	}
	if o.RedfishRootCAs != nil {
		opts = append(opts, bmclib.WithSecureTLS(o.RedfishRootCAs))
	}
	c := &Client{target: t, opts: o, bmc: bmclib.NewClient(t.Host, t.Username, t.Password, opts...)}

	// Keep only the providers of the wanted protocols, in order.
	var picked registrar.Drivers
	var missing []string
	for _, p := range order {
		name, ok := providerName[p]
		if !ok {
			return nil, &Error{Op: "open", msg: fmt.Sprintf("check the BMC settings: protocol %q in the auto order is not one of ipmi, redfish", p)}
		}
		d := c.bmc.Registry.For(name)
		if len(d) == 0 {
			missing = append(missing, fmt.Sprintf("%s (provider %s not available; for IPMI install ipmitool)", p, name))
			continue
		}
		picked = append(picked, d...)
		c.protocols = append(c.protocols, p)
	}
	c.bmc.Registry.Drivers = picked
	if len(picked) == 0 {
		return nil, &Error{Op: "open", msg: "no way to reach BMC " + t.Host + ": " + strings.Join(missing, "; ")}
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := c.bmc.Open(ctx); err != nil {
		return nil, c.classify(ctx, "open", err)
	}
	var opened []Protocol
	for _, p := range c.protocols {
		if len(c.bmc.Registry.For(providerName[p])) > 0 {
			opened = append(opened, p)
		}
	}
	c.protocols = opened
	return c, nil
}

// Protocols are the protocols that answered at Open, in the order they
// are used.
func (c *Client) Protocols() []Protocol { return slices.Clone(c.protocols) }

// Close ends the session with the BMC.
func (c *Client) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if err := c.bmc.Close(ctx); err != nil {
		return c.classify(ctx, "close", err)
	}
	return nil
}

// PowerOn powers the machine on; it does nothing when it is on already.
func (c *Client) PowerOn(ctx context.Context) error { return c.setPower(ctx, "power on", "on") }

// PowerOff cuts the machine's power at once (a hard off).
func (c *Client) PowerOff(ctx context.Context) error { return c.setPower(ctx, "power off", "off") }

// SoftOff asks the operating system to shut down (ACPI power button); the
// machine is off only once it has.
func (c *Client) SoftOff(ctx context.Context) error { return c.setPower(ctx, "soft off", "soft") }

// Cycle turns the power off and on again (IPMI chassis power cycle,
// Redfish ForceRestart). The machine must be on.
func (c *Client) Cycle(ctx context.Context) error { return c.setPower(ctx, "power cycle", "cycle") }

// Reset resets the machine (IPMI chassis power reset, Redfish PowerCycle).
func (c *Client) Reset(ctx context.Context) error { return c.setPower(ctx, "reset", "reset") }

func (c *Client) setPower(ctx context.Context, op, state string) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	_, err := c.bmc.SetPowerState(ctx, state)
	if err != nil && state == "soft" && c.redfishAccepted() {
		// bmclib v2.3.4's Redfish provider reports a GracefulShutdown it
		// sent (or skipped, the machine being off) as not done, with no
		// error: the BMC accepted it.
		return nil
	}
	if err != nil {
		return c.classify(ctx, op, err)
	}
	return nil
}

// redfishAccepted reports whether the last call reached the Redfish
// provider and it returned no error.
func (c *Client) redfishAccepted() bool {
	md := c.bmc.GetMetadata()
	_, failed := md.FailedProviderDetail[redfish.ProviderName]
	return slices.Contains(md.ProvidersAttempted, redfish.ProviderName) && !failed
}

// SetBootDevice sets the next boot device: once, or for every boot when
// persistent; efi asks for a UEFI boot.
func (c *Client) SetBootDevice(ctx context.Context, device BootDevice, persistent, efi bool) error {
	switch device {
	case BootPXE, BootDisk, BootBIOS:
	default:
		return &Error{Op: "set boot device", msg: fmt.Sprintf("boot device %q is not one of pxe, disk, bios", device)}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if _, err := c.bmc.SetBootDevice(ctx, string(device), persistent, efi); err != nil {
		return c.classify(ctx, "set boot device", err)
	}
	return nil
}

// PowerState reads the machine's power state.
func (c *Client) PowerState(ctx context.Context) (PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	s, err := c.bmc.GetPowerState(ctx)
	if err != nil {
		return PowerUnknown, c.classify(ctx, "read power state", err)
	}
	return parsePowerState(s), nil
}

// parsePowerState maps ipmitool's "Chassis Power is on" and Redfish's
// On, Off, PoweringOn, PoweringOff.
func parsePowerState(s string) PowerState {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(s, "off"):
		return PowerOff
	case strings.HasSuffix(s, "on"):
		return PowerOn
	}
	return PowerUnknown
}

// Error is a failed BMC operation.
type Error struct {
	// Op is what failed: "open", "power on", "set boot device", ...
	Op string
	// Transient is true when retrying later can succeed (timeouts,
	// refused connections, a busy BMC), false when something must be
	// fixed first (credentials, an unsupported operation).
	Transient bool
	msg       string
	err       error
}

// Error is a message that says what to fix; it never holds the password.
func (e *Error) Error() string { return e.msg }

// Unwrap is the underlying error, with the password removed.
func (e *Error) Unwrap() error { return e.err }

// IsTransient reports whether err is worth retrying later.
func IsTransient(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Transient
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// classify turns a bmclib error into an *Error.
func (c *Client) classify(ctx context.Context, op string, err error) error {
	t := c.target
	text := err.Error()
	if t.Password != "" {
		text = strings.ReplaceAll(text, t.Password, "<password>")
	}
	under := err
	if text != err.Error() {
		under = errors.New(text)
	}
	proto := c.protocols
	if len(proto) == 0 {
		proto = []Protocol{t.Protocol}
	}
	var names []string
	for _, p := range proto {
		names = append(names, t.addr(p))
	}
	where := "BMC " + strings.Join(names, " / ")
	lower := strings.ToLower(text)
	status := 0
	var httpErr *common.Error
	if errors.As(err, &httpErr) {
		status = httpErr.HTTPReturnedStatusCode
	}
	e := &Error{Op: op, err: under}
	// Match words, never bare numbers: the text holds the BMC's address.
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		strings.Contains(lower, "unauthorized") || strings.Contains(lower, "insufficientprivilege") ||
		strings.Contains(lower, "rakp") || strings.Contains(lower, "invalid user name"):
		e.msg = fmt.Sprintf("%s refused the credentials for user %s (check the username and password)", where, t.Username)
	case strings.Contains(lower, "unable to establish ipmi v2 / rmcp+ session") && c.ipmiAnswers(ctx):
		// ipmitool says the same for a wrong password and for no answer
		// at all: a BMC that answers an unauthenticated ping refused us.
		e.msg = fmt.Sprintf("%s refused the credentials for user %s (check the username and password, or the IPMI cipher suite %s)",
			where, t.Username, c.opts.IPMICipherSuite)
	case strings.Contains(lower, "unable to establish ipmi v2 / rmcp+ session"),
		errors.Is(err, context.DeadlineExceeded), strings.Contains(lower, "deadline exceeded"),
		strings.Contains(lower, "timeout"), strings.Contains(lower, "timed out"):
		e.Transient = true
		e.msg = fmt.Sprintf("%s did not answer within %s (check the address and port, and that the BMC is up and reachable)",
			where, c.opts.Timeout)
	case strings.Contains(lower, "connection refused"):
		e.Transient = true
		e.msg = fmt.Sprintf("%s refused the connection (check the port, and that the BMC's %s service is enabled)", where, strings.Join(protocolNames(proto), "/"))
	case strings.Contains(lower, "no such host"), strings.Contains(lower, "no route to host"),
		strings.Contains(lower, "network is unreachable"):
		e.Transient = true
		e.msg = fmt.Sprintf("%s is unreachable (check the address and the network path to it): %s", where, text)
	case status == http.StatusTooManyRequests || status >= 500 && status != http.StatusNotImplemented ||
		strings.Contains(lower, "busy") || strings.Contains(lower, "temporarily") || strings.Contains(lower, "0xc0"):
		e.Transient = true
		e.msg = fmt.Sprintf("%s is busy or failed inside; %s can be retried: %s", where, op, text)
	case status >= 400, strings.Contains(lower, "not supported"), strings.Contains(lower, "unsupported"),
		strings.Contains(lower, "not a powersetter"), strings.Contains(lower, "not implemented"),
		strings.Contains(lower, "invalid boot device"), strings.Contains(lower, "not in present state"):
		e.msg = fmt.Sprintf("%s cannot %s (the BMC does not support it, or not in this state): %s", where, op, text)
	default:
		// Unknown: let the caller retry until its own deadline.
		e.Transient = true
		e.msg = fmt.Sprintf("%s on %s failed: %s", op, where, text)
	}
	return e
}

// ipmiAnswers reports whether the target's IPMI port answers an
// unauthenticated ping, when IPMI is among the protocols tried.
func (c *Client) ipmiAnswers(ctx context.Context) bool {
	if !slices.Contains(c.protocols, ProtocolIPMI) {
		return false
	}
	ap, err := resolve(ctx, c.target.Host, c.target.port(ProtocolIPMI))
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return ping(pctx, ap, time.Second) == nil
}

func resolve(ctx context.Context, host string, port int) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, uint16(port)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	return netip.AddrPortFrom(addrs[0], uint16(port)), nil
}

func protocolNames(ps []Protocol) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = map[Protocol]string{ProtocolIPMI: "IPMI", ProtocolRedfish: "Redfish"}[p]
	}
	return out
}
