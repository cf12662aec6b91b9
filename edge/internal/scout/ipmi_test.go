package scout

import (
	"bytes"
	"strings"
	"testing"
)

func TestGetLANConfigRequest(t *testing.T) {
	t.Parallel()
	// ipmitool lan print 1 sends, for the IP address: 01 03 00 00.
	if got, want := getLANConfigRequest(1, ipmiLANParamIP), []byte{0x01, 0x03, 0x00, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("request data % x, want % x", got, want)
	}
	// Bit 7 (revision only) is never set; the channel is 4 bits.
	if got := getLANConfigRequest(0x8e, ipmiLANParamIP); got[0] != 0x0e {
		t.Errorf("channel byte %#x, want 0x0e", got[0])
	}
}

func TestParseLANIPResponse(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		data []byte
		want string
		err  string
	}{
		"address":            {data: []byte{0x00, 0x11, 198, 18, 0, 23}, want: "198.18.0.23"},
		"not configured":     {data: []byte{0x00, 0x11, 0, 0, 0, 0}, want: ""},
		"parameter unknown":  {data: []byte{0x80}, err: "completion code 0x80 (parameter not supported)"},
		"invalid channel":    {data: []byte{0xcc}, err: "invalid data field"},
		"unknown completion": {data: []byte{0xff}, err: "unspecified error"},
		"too short":          {data: []byte{0x00, 0x11, 10, 0}, err: "too short"},
		"empty":              {data: nil, err: "empty"},
	}
	for name, tc := range tests {
		got, err := parseLANIPResponse(tc.data)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case got != tc.want:
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
}
