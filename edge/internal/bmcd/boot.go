package bmcd

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
)

// BootOverride is the next-boot override a BMC holds: what
// SetBootDevice set, unless a boot used it up or it was changed since.
type BootOverride struct {
	// Enabled says an override is in effect: IPMI's boot flags valid
	// bit is set, or Redfish's BootSourceOverrideEnabled is Once or
	// Continuous.
	Enabled bool
	// Device is the device it boots from; "" for none, or for a device
	// this daemon does not set (a CD, USB, ...).
	Device BootDevice
	// Persistent: every boot; otherwise the next one only.
	Persistent bool
	// EFI: a UEFI boot; otherwise legacy BIOS.
	EFI bool
}

// Matches says whether o is in effect with the settings that
// SetBootDevice(device, persistent, efi) leaves.
func (o BootOverride) Matches(device BootDevice, persistent, efi bool) bool {
	return o.Enabled && o.Device != "" && o.Device == device && o.Persistent == persistent && o.EFI == efi
}

// BootOverride reads the BMC's next-boot override, with the first of the
// protocols that opened that answers. bmclib v2.3.4 has no provider that
// reads it, so the Client does: over IPMI it runs ipmitool's `chassis
// bootparam get 5` (Get System Boot Options, boot flags), over Redfish it
// reads the Boot object of the systems.
func (c *Client) BootOverride(ctx context.Context) (BootOverride, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var errs []error
	for _, p := range c.protocols {
		var (
			o   BootOverride
			err error
		)
		switch p {
		case ProtocolIPMI:
			o, err = c.ipmiBootOverride(ctx)
		case ProtocolRedfish:
			o, err = c.redfishBootOverride(ctx)
		default:
			continue
		}
		if err == nil {
			return o, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return BootOverride{}, &Error{Op: "read boot override", msg: "no protocol to read the boot override of BMC " + c.target.Host + " with"}
	}
	return BootOverride{}, c.classify(ctx, "read boot override", errors.Join(errs...))
}

// ipmiBootOverride runs ipmitool `chassis bootparam get 5` with the
// interface, port and cipher suite flags bmclib's ipmitool provider
// uses; the password goes in the environment (-E, IPMI_PASSWORD), never
// on the command line.
func (c *Client) ipmiBootOverride(ctx context.Context) (BootOverride, error) {
	prog := c.opts.IpmitoolPath
	if prog == "" {
		var err error
		if prog, err = exec.LookPath("ipmitool"); err != nil {
			return BootOverride{}, errors.New("ipmitool not found on PATH (install ipmitool)")
		}
	}
	args := []string{"-I", "lanplus", "-H", c.target.Host, "-p", strconv.Itoa(c.target.port(ProtocolIPMI)),
		"-U", c.target.Username, "-E", "-N", "5", "-C", c.opts.IPMICipherSuite, "chassis", "bootparam", "get", "5"}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = []string{"IPMI_PASSWORD=" + c.target.Password}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return BootOverride{}, fmt.Errorf("ipmitool chassis bootparam get 5: %w: %s", err, strings.TrimSpace(string(out)))
	}
	o, valid, err := parseIPMIBootFlags(string(out))
	if err != nil {
		return BootOverride{}, err
	}
	o.Enabled = valid || c.opts.IPMIIgnoreBootValid && o.Device != ""
	return o, nil
}

// parseIPMIBootFlags reads the output of ipmitool's `chassis bootparam
// get 5`: its "Boot parameter data:" line holds the boot flags (IPMI 2.0,
// Get System Boot Options parameter 5) in hex. Of data byte 1, bit 7 is
// the boot flags valid bit (returned apart), bit 6 persistent, bit 5 EFI;
// bits 5-2 of byte 2 select the device.
func parseIPMIBootFlags(out string) (o BootOverride, valid bool, err error) {
	const label = "Boot parameter data:"
	for _, line := range strings.Split(out, "\n") {
		_, data, ok := strings.Cut(line, label)
		if !ok {
			continue
		}
		b, err := hex.DecodeString(strings.TrimSpace(data))
		if err != nil || len(b) < 2 {
			return BootOverride{}, false, fmt.Errorf("ipmitool printed boot flags %q, not 5 bytes in hex", strings.TrimSpace(data))
		}
		o.Persistent = b[0]&0x40 != 0
		o.EFI = b[0]&0x20 != 0
		switch (b[1] >> 2) & 0x0f {
		case 0x1:
			o.Device = BootPXE
		case 0x2:
			o.Device = BootDisk
		case 0x6:
			o.Device = BootBIOS
		}
		return o, b[0]&0x80 != 0, nil
	}
	return BootOverride{}, false, fmt.Errorf("ipmitool printed no %q line: %s", label, strings.TrimSpace(out))
}

// redfishBootOverride reads the Boot object of the BMC's systems (with
// basic authentication): the override is in effect only if every system
// has the same one, as bmclib sets it on all of them.
func (c *Client) redfishBootOverride(ctx context.Context) (BootOverride, error) {
	base := "https://" + c.target.addr(ProtocolRedfish)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.opts.RedfishRootCAs != nil {
		tlsConfig.RootCAs = c.opts.RedfishRootCAs
	} else {
		tlsConfig.InsecureSkipVerify = true // as bmclib: BMCs mostly ship self-signed certificates
	}
	tr := &http.Transport{TLSClientConfig: tlsConfig}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, v any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		req.SetBasicAuth(c.target.Username, c.target.Password)
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		if resp.StatusCode != http.StatusOK {
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				return fmt.Errorf("GET %s: %d unauthorized", path, resp.StatusCode)
			}
			return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
		}
		if err := json.Unmarshal(body, v); err != nil {
			return fmt.Errorf("GET %s: not a Redfish resource: %w", path, err)
		}
		return nil
	}
	var systems struct {
		Members []struct {
			ID string `json:"@odata.id"`
		}
	}
	if err := get("/redfish/v1/Systems", &systems); err != nil {
		return BootOverride{}, err
	}
	if len(systems.Members) == 0 {
		return BootOverride{}, errors.New("the Redfish service lists no systems")
	}
	var out BootOverride
	for i, m := range systems.Members {
		if !strings.HasPrefix(m.ID, "/redfish/v1/Systems/") {
			return BootOverride{}, fmt.Errorf("the Redfish service lists system %q outside /redfish/v1/Systems/", m.ID)
		}
		var sys struct {
			Boot redfishBoot
		}
		if err := get(m.ID, &sys); err != nil {
			return BootOverride{}, err
		}
		o := sys.Boot.override()
		if i > 0 && o != out {
			return BootOverride{}, nil // the systems differ: none in effect for all
		}
		out = o
	}
	return out, nil
}

// redfishBoot is the override part of a Redfish ComputerSystem's Boot.
type redfishBoot struct {
	BootSourceOverrideEnabled string
	BootSourceOverrideTarget  string
	BootSourceOverrideMode    string
}

// override maps b as bmclib's redfish provider sets it: Once or
// Continuous; Pxe, Hdd or BiosSetup; UEFI or Legacy.
func (b redfishBoot) override() BootOverride {
	o := BootOverride{EFI: b.BootSourceOverrideMode == "UEFI"}
	switch b.BootSourceOverrideEnabled {
	case "Once":
		o.Enabled = true
	case "Continuous":
		o.Enabled, o.Persistent = true, true
	}
	switch b.BootSourceOverrideTarget {
	case "Pxe":
		o.Device = BootPXE
	case "Hdd":
		o.Device = BootDisk
	case "BiosSetup":
		o.Device = BootBIOS
	}
	return o
}
