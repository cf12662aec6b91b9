package scout

import (
	"fmt"
	"net"
)

// IPMI message of Get LAN Configuration Parameters (IPMI 2.0, section
// 23.2): network function Transport, command 0x02.
const (
	ipmiNetFnTransport   = 0x0c
	ipmiCmdGetLANConfig  = 0x02
	ipmiLANParamIP       = 3 // IP Address
	ipmiDefaultLANChanel = 1
)

// getLANConfigRequest returns the request data of Get LAN Configuration
// Parameters for a channel and parameter: the channel (bit 7 clear: get
// the value, not just the revision), the parameter, set selector 0 and
// block selector 0.
func getLANConfigRequest(channel, param byte) []byte {
	return []byte{channel & 0x0f, param, 0, 0}
}

// parseLANIPResponse reads the response data of Get LAN Configuration
// Parameters for parameter 3: completion code, parameter revision, then
// the four bytes of the address. It returns "" for 0.0.0.0 (not
// configured).
func parseLANIPResponse(data []byte) (string, error) {
	if len(data) < 1 {
		return "", fmt.Errorf("empty IPMI response")
	}
	if cc := data[0]; cc != 0 {
		return "", fmt.Errorf("BMC answered with completion code %#02x (%s)", cc, ipmiCompletion(cc))
	}
	if len(data) < 6 {
		return "", fmt.Errorf("IPMI response of %d bytes is too short for an IPv4 address", len(data))
	}
	ip := net.IPv4(data[2], data[3], data[4], data[5])
	if ip.IsUnspecified() {
		return "", nil
	}
	return ip.String(), nil
}

// ipmiCompletion names the completion codes a BMC may answer this
// command with.
func ipmiCompletion(cc byte) string {
	switch cc {
	case 0x80:
		return "parameter not supported"
	case 0xc1:
		return "invalid command"
	case 0xc3:
		return "timeout"
	case 0xc9, 0xcc:
		return "invalid data field in request"
	case 0xcb:
		return "requested data not present"
	case 0xd4:
		return "insufficient privilege"
	case 0xd5:
		return "not supported in present state"
	}
	return "unspecified error"
}
