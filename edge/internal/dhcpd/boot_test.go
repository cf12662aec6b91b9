package dhcpd

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func arch(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }

var ipxeUC = withOpt(dhcpv4.OptionUserClassInformation, []byte("iPXE"))

// TestBoot covers the boot file each kind of client gets.
func TestBoot(t *testing.T) {
	t.Parallel()
	longURL := "http://boot.example:8080/" + strings.Repeat("x", 130) + "/{mac}"
	type want struct {
		file       string // "" for no boot file
		next       string // siaddr and option 66
		vendor     string // option 60
		noPXEDHCP  bool   // option 175 with 176 = 1
		fileFieldE bool   // the file header field is empty though file is not
	}
	tests := map[string]struct {
		cfg  func(*Config)
		mt   dhcpv4.MessageType
		mods []dhcpv4.Modifier
		want want
	}{
		"no option 93": {
			mods: []dhcpv4.Modifier{ipxeUC},
		},
		"x86 BIOS": {
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC)},
			want: want{file: "undionly.kpxe", next: "10.0.0.1"},
		},
		"x86-64 UEFI (7)": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64)},
			want: want{file: "snponly.efi", next: "10.0.0.1"},
		},
		"x86-64 UEFI (9)": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_BC)},
			want: want{file: "snponly.efi", next: "10.0.0.1"},
		},
		"x86-64 UEFI with ipxe.efi": {
			cfg:  func(c *Config) { c.EFIX64File = "ipxe.efi" },
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64)},
			want: want{file: "ipxe.efi", next: "10.0.0.1"},
		},
		"arm64 UEFI, configured": {
			cfg:  func(c *Config) { c.EFIARM64File = "arm64/snponly.efi" },
			mods: []dhcpv4.Modifier{arch(iana.EFI_ARM64)},
			want: want{file: "arm64/snponly.efi", next: "10.0.0.1"},
		},
		"arm64 UEFI, unconfigured": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_ARM64)},
		},
		"UEFI HTTP boot": {
			cfg: func(c *Config) { c.HTTPBootURL = "http://10.0.0.1:8080/boot/ipxe.efi" },
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64_HTTP),
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))},
			want: want{file: "http://10.0.0.1:8080/boot/ipxe.efi", next: "10.0.0.1", vendor: "HTTPClient"},
		},
		"UEFI HTTP boot without the HTTPClient vendor class": {
			cfg: func(c *Config) { c.HTTPBootURL = "http://10.0.0.1:8080/boot/ipxe.efi" },
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64_HTTP),
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00016:UNDI:003001"))},
		},
		"UEFI HTTP boot, unconfigured": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64_HTTP),
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))},
		},
		"iPXE gets its script": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64), ipxeUC},
			want: want{file: "http://10.0.0.1:8080/ipxe/52:54:00:12:34:56", next: "10.0.0.1", noPXEDHCP: true},
		},
		"iPXE on BIOS, user class in RFC 3004 form": {
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC), withOpt(dhcpv4.OptionUserClassInformation, []byte("\x04iPXE"))},
			want: want{file: "http://10.0.0.1:8080/ipxe/52:54:00:12:34:56", next: "10.0.0.1", noPXEDHCP: true},
		},
		"iPXE with a configured script URL and server id": {
			cfg: func(c *Config) {
				c.IPXEScriptURL = "https://carbide.example/boot/{mac}/script.ipxe"
				c.ServerID = netip.MustParseAddr("192.0.2.10")
			},
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64), ipxeUC},
			want: want{file: "https://carbide.example/boot/52:54:00:12:34:56/script.ipxe", next: "192.0.2.10", noPXEDHCP: true},
		},
		"iPXE, default script URL on the configured server id": {
			cfg:  func(c *Config) { c.ServerID = netip.MustParseAddr("192.0.2.10") },
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64), ipxeUC},
			want: want{file: "http://192.0.2.10:8080/ipxe/52:54:00:12:34:56", next: "192.0.2.10", noPXEDHCP: true},
		},
		"a user class other than iPXE": {
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC), withOpt(dhcpv4.OptionUserClassInformation, []byte("gPXE"))},
			want: want{file: "undionly.kpxe", next: "10.0.0.1"},
		},
		"TFTP server configured": {
			cfg:  func(c *Config) { c.TFTPServer = netip.MustParseAddr("10.0.0.5") },
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC)},
			want: want{file: "undionly.kpxe", next: "10.0.0.5"},
		},
		"BIOS boot file turned off": {
			cfg:  func(c *Config) { c.BIOSFile = "" },
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC)},
		},
		"unknown architecture": {
			mods: []dhcpv4.Modifier{arch(iana.EFI_RISCV64)},
		},
		"first of several architectures": {
			mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64, iana.INTEL_X86PC))},
			want: want{file: "snponly.efi", next: "10.0.0.1"},
		},
		"truncated option 93": {
			mods: []dhcpv4.Modifier{withOpt(dhcpv4.OptionClientSystemArchitectureType, []byte{0})},
		},
		"a URL too long for the file field travels in option 67 alone": {
			cfg:  func(c *Config) { c.IPXEScriptURL = longURL },
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64), ipxeUC},
			want: want{file: strings.ReplaceAll(longURL, "{mac}", "52:54:00:12:34:56"), next: "10.0.0.1",
				noPXEDHCP: true, fileFieldE: true},
		},
		"ACK of a request": {
			mt:   dhcpv4.MessageTypeRequest,
			mods: []dhcpv4.Modifier{arch(iana.EFI_X86_64), dhcpv4.WithClientIP(ip(leaseAddr))},
			want: want{file: "snponly.efi", next: "10.0.0.1"},
		},
		"ACK of an inform": {
			mt:   dhcpv4.MessageTypeInform,
			mods: []dhcpv4.Modifier{arch(iana.INTEL_X86PC), dhcpv4.WithClientIP(ip(leaseAddr))},
			want: want{file: "undionly.kpxe", next: "10.0.0.1"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("test config: %v", err)
			}
			mt := tt.mt
			if mt == dhcpv4.MessageTypeNone {
				mt = dhcpv4.MessageTypeDiscover
			}
			h, _ := testHandler(t, cfg, &fakeAPI{}, nil)
			reply, _ := h.Handle(t.Context(), testIface, packet(t, mt, tt.mods...))
			got := onWire(t, reply)
			if got == nil {
				t.Fatal("no reply")
			}
			if tt.want.file == "" {
				for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionTFTPServerName, dhcpv4.OptionBootfileName, dhcpv4.OptionEtherboot} {
					if got.Options.Has(code) {
						t.Errorf("reply without boot file has option %s", code)
					}
				}
				if got.BootFileName != "" || !got.ServerIPAddr.Equal(net.IPv4zero) {
					t.Errorf("reply without boot file has file %q, siaddr %s", got.BootFileName, got.ServerIPAddr)
				}
				return
			}
			if diff := cmp.Diff(tt.want.file, got.BootFileNameOption()); diff != "" {
				t.Errorf("option 67 (-want +got):\n%s", diff)
			}
			wantField := tt.want.file
			if tt.want.fileFieldE {
				wantField = ""
			}
			if got.BootFileName != wantField {
				t.Errorf("file field %q, want %q", got.BootFileName, wantField)
			}
			if got.TFTPServerName() != tt.want.next || !got.ServerIPAddr.Equal(ip(tt.want.next)) {
				t.Errorf("option 66 %q, siaddr %s; want %s", got.TFTPServerName(), got.ServerIPAddr, tt.want.next)
			}
			if got.ClassIdentifier() != tt.want.vendor {
				t.Errorf("option 60 %q, want %q", got.ClassIdentifier(), tt.want.vendor)
			}
			ipxe := got.Options.Get(dhcpv4.OptionEtherboot)
			switch {
			case tt.want.noPXEDHCP && string(ipxe) != "\xb0\x01\x01":
				t.Errorf("option 175 is %x, want b00101 (no-pxedhcp = 1)", ipxe)
			case !tt.want.noPXEDHCP && ipxe != nil:
				t.Errorf("option 175 is %x, want none", ipxe)
			}
		})
	}
}
