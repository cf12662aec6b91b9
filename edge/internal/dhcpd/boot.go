package dhcpd

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client architectures (option 93, RFC 4578 and the IANA registry) that
// get a boot file.
const (
	archBIOS          = iana.INTEL_X86PC     // 0
	archEFIX64        = iana.EFI_X86_64      // 7
	archEFIBC         = iana.EFI_BC          // 9, x86-64 UEFI in practice
	archEFIARM64      = iana.EFI_ARM64       // 11
	archEFIX64HTTP    = iana.EFI_X86_64_HTTP // 16
	httpClientVendor  = "HTTPClient"
	ipxeUserClass     = "iPXE"
	optionIPXE        = dhcpv4.OptionEtherboot // 175, iPXE's encapsulated options
	ipxeNoPXEDHCP     = 176                    // its no-pxedhcp sub-option
	maxFileFieldBytes = 127                    // the file field, less its NUL
)

// bootConfig decides the boot file of a client.
type bootConfig struct {
	ipxeScriptURL string // "" for http://<own address>:8080/ipxe/{mac}
	biosFile      string
	efiX64File    string
	efiARM64File  string
	httpBootURL   string
	tftpServer    netip.Addr // invalid: the daemon's own address
}

// bootReply is what a boot client gets.
type bootReply struct {
	file       string
	httpClient bool // echo vendor class "HTTPClient"
	ipxe       bool // send 175.176 (no-pxedhcp)
}

// choose returns the boot file for req, whose MAC is mac, served by a
// daemon whose own address on the link is own; ok is false when the client
// gets none.
func (b *bootConfig) choose(req *dhcpv4.DHCPv4, mac string, own netip.Addr) (bootReply, bool) {
	arch, ok := clientArch(req)
	if !ok {
		return bootReply{}, false
	}
	if isIPXE(req) {
		u := b.ipxeScriptURL
		if u == "" {
			u = "http://" + own.String() + ":8080/ipxe/" + MACPlaceholder
		}
		return bootReply{file: strings.ReplaceAll(u, MACPlaceholder, mac), ipxe: true}, true
	}
	var r bootReply
	switch arch {
	case archBIOS:
		r.file = b.biosFile
	case archEFIX64, archEFIBC:
		r.file = b.efiX64File
	case archEFIARM64:
		r.file = b.efiARM64File
	case archEFIX64HTTP:
		if strings.HasPrefix(req.ClassIdentifier(), httpClientVendor) {
			r.file, r.httpClient = b.httpBootURL, true
		}
	}
	return r, r.file != ""
}

// apply writes r into reply: the file field, siaddr and options 66 and 67,
// and 60 or 175 as the client needs.
func (b *bootConfig) apply(reply *dhcpv4.DHCPv4, r bootReply, own netip.Addr) {
	next := b.tftpServer
	if !next.IsValid() {
		next = own
	}
	reply.ServerIPAddr = net.IP(next.AsSlice())
	if len(r.file) <= maxFileFieldBytes {
		reply.BootFileName = r.file
	}
	reply.UpdateOption(dhcpv4.OptTFTPServerName(next.String()))
	reply.UpdateOption(dhcpv4.OptBootFileName(r.file))
	if r.httpClient {
		reply.UpdateOption(dhcpv4.OptClassIdentifier(httpClientVendor))
	}
	if r.ipxe {
		reply.UpdateOption(dhcpv4.OptGeneric(optionIPXE, []byte{ipxeNoPXEDHCP, 1, 1}))
	}
}

// clientArch returns the first architecture of option 93.
func clientArch(req *dhcpv4.DHCPv4) (iana.Arch, bool) {
	v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType)
	if len(v) < 2 {
		return 0, false
	}
	return iana.Arch(binary.BigEndian.Uint16(v)), true
}

// isIPXE reports whether req's user class (option 77) is iPXE's, sent
// either plainly, as iPXE does, or in RFC 3004 form.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	v := req.Options.Get(dhcpv4.OptionUserClassInformation)
	if len(v) == 0 {
		return false
	}
	if string(v) == ipxeUserClass {
		return true
	}
	return slices.Contains(req.UserClass(), ipxeUserClass)
}
