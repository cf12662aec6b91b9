package bmcd

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/edge/internal/bmcsim"
)

// ipmitoolBootParam is what ipmitool 1.8 prints for `chassis bootparam
// get 5`, with the given boot flags.
func ipmitoolBootParam(data string) string {
	return "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\nBoot parameter data: " + data + "\n" +
		" Boot Flags :\n   - Boot Flag Valid\n   - Options apply to only next boot\n"
}

func TestParseIPMIBootFlags(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		out   string
		want  BootOverride
		valid bool
		err   string
	}{
		// ipmi_sim keeps the device only.
		"ipmi_sim pxe":       {out: ipmitoolBootParam("0004000000"), want: BootOverride{Device: BootPXE}},
		"ipmi_sim default":   {out: ipmitoolBootParam("0008000000"), want: BootOverride{Device: BootDisk}},
		"valid pxe once":     {out: ipmitoolBootParam("8004000000"), want: BootOverride{Device: BootPXE}, valid: true},
		"valid uefi pxe":     {out: ipmitoolBootParam("a004000000"), want: BootOverride{Device: BootPXE, EFI: true}, valid: true},
		"persistent disk":    {out: ipmitoolBootParam("c008000000"), want: BootOverride{Device: BootDisk, Persistent: true}, valid: true},
		"all flags, bios":    {out: ipmitoolBootParam("E018000000"), want: BootOverride{Device: BootBIOS, Persistent: true, EFI: true}, valid: true},
		"cdrom is no device": {out: ipmitoolBootParam("8014000000"), want: BootOverride{}, valid: true},
		"no override":        {out: ipmitoolBootParam("0000000000"), want: BootOverride{}},
		"no data line":       {out: "Error: Unable to establish IPMI v2 / RMCP+ session\n", err: "no \"Boot parameter data:\" line"},
		"not hex":            {out: ipmitoolBootParam("zz"), err: "not 5 bytes in hex"},
		"too short":          {out: ipmitoolBootParam("80"), err: "not 5 bytes in hex"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, valid, err := parseIPMIBootFlags(c.out)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want || valid != c.valid {
				t.Errorf("parseIPMIBootFlags = %+v, valid %v, %v; want %+v, valid %v", got, valid, err, c.want, c.valid)
			}
		})
	}
}

func TestRedfishBootOverrideMapping(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		boot redfishBoot
		want BootOverride
	}{
		{redfishBoot{"Disabled", "None", "Legacy"}, BootOverride{}},
		{redfishBoot{"Disabled", "Pxe", "UEFI"}, BootOverride{Device: BootPXE, EFI: true}},
		{redfishBoot{"Once", "Pxe", "Legacy"}, BootOverride{Enabled: true, Device: BootPXE}},
		{redfishBoot{"Continuous", "Hdd", "UEFI"}, BootOverride{Enabled: true, Device: BootDisk, Persistent: true, EFI: true}},
		{redfishBoot{"Once", "BiosSetup", ""}, BootOverride{Enabled: true, Device: BootBIOS}},
		{redfishBoot{"Once", "Usb", "UEFI"}, BootOverride{Enabled: true, EFI: true}},
	} {
		if got := c.boot.override(); got != c.want {
			t.Errorf("%+v maps to %+v, want %+v", c.boot, got, c.want)
		}
	}
}

func TestBootOverrideMatches(t *testing.T) {
	t.Parallel()
	o := BootOverride{Enabled: true, Device: BootPXE, EFI: true}
	if !o.Matches(BootPXE, false, true) {
		t.Error("an override does not match the settings it has")
	}
	for _, c := range []struct {
		o               BootOverride
		dev             BootDevice
		persistent, efi bool
	}{
		{o, BootDisk, false, true},
		{o, BootPXE, true, true},
		{o, BootPXE, false, false},
		{BootOverride{Device: BootPXE, EFI: true}, BootPXE, false, true},
		{BootOverride{Enabled: true}, "", false, false},
	} {
		if c.o.Matches(c.dev, c.persistent, c.efi) {
			t.Errorf("%+v matches %s persistent=%v efi=%v", c.o, c.dev, c.persistent, c.efi)
		}
	}
}

// TestIPMIBootOverride reads the boot flags of ipmi_sim with ipmitool:
// the device it set, never the valid bit (ipmi_sim does not keep it),
// which IPMIIgnoreBootValid stands in for.
func TestIPMIBootOverride(t *testing.T) {
	t.Parallel()
	s := startIPMI(t, netip.AddrPort{})
	target := Target{Host: "127.0.0.1", Port: int(s.Addr().Port()), Protocol: ProtocolIPMI, Username: "admin", Password: password}
	ctx := context.Background()
	strict := open(t, target, Options{})
	lax := open(t, target, Options{IPMIIgnoreBootValid: true})
	if got, err := strict.BootOverride(ctx); err != nil || got != (BootOverride{Device: BootDisk}) {
		t.Errorf("BootOverride of a new ipmi_sim = %+v, %v; want its default disk, not in effect", got, err)
	}
	if err := strict.SetBootDevice(ctx, BootPXE, false, false); err != nil {
		t.Fatal(err)
	}
	if got, err := strict.BootOverride(ctx); err != nil || got != (BootOverride{Device: BootPXE}) {
		t.Errorf("BootOverride after setting PXE = %+v, %v; want PXE, not in effect", got, err)
	}
	got, err := lax.BootOverride(ctx)
	if err != nil || !got.Matches(BootPXE, false, false) {
		t.Errorf("BootOverride ignoring the valid bit = %+v, %v; want PXE in effect", got, err)
	}
	wrong := target
	wrong.Password = "not-the-password"
	c := open(t, target, Options{})
	c.target = wrong // Open checks nothing over IPMI; the read must refuse
	_, err = c.BootOverride(ctx)
	if err == nil || IsTransient(err) || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), wrong.Password) {
		t.Errorf("BootOverride with a wrong password: %v, want a permanent error saying so, without the password", err)
	}
}

// TestRedfishBootOverride reads the Boot object of the test Redfish
// service, as bmclib sets it.
func TestRedfishBootOverride(t *testing.T) {
	t.Parallel()
	r, _ := startRedfish(t, nil)
	host, port := hostPort(t, r.Addr().String())
	c := open(t, Target{Host: host, Port: port, Protocol: ProtocolRedfish, Username: "admin", Password: password},
		Options{RedfishRootCAs: bmcsim.CertPool()})
	ctx := context.Background()
	if got, err := c.BootOverride(ctx); err != nil || got.Enabled {
		t.Errorf("BootOverride of a new system = %+v, %v; want none in effect", got, err)
	}
	for _, want := range []BootOverride{
		{Enabled: true, Device: BootPXE, EFI: true},
		{Enabled: true, Device: BootDisk, Persistent: true},
		{Enabled: true, Device: BootBIOS},
	} {
		if err := c.SetBootDevice(ctx, want.Device, want.Persistent, want.EFI); err != nil {
			t.Fatal(err)
		}
		if got, err := c.BootOverride(ctx); err != nil || got != want {
			t.Errorf("BootOverride = %+v, %v; want %+v", got, err, want)
		}
	}
	// A boot uses up a one-time override.
	if err := c.SetBootDevice(ctx, BootPXE, false, false); err != nil {
		t.Fatal(err)
	}
	if err := c.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := c.BootOverride(ctx); err != nil || got.Enabled {
		t.Errorf("BootOverride after the boot = %+v, %v; want none in effect", got, err)
	}
}
