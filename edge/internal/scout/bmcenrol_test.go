package scout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeBMC answers the IPMI commands of the enrolment from a model of a
// BMC's users, channels and LAN settings, and records every request.
type fakeBMC struct {
	channels map[byte]byte // channel -> medium type
	ip, mac  []byte
	maxUsers byte
	names    map[byte]string
	pw       map[byte][]byte
	enabled  map[byte]bool
	access   map[byte]byte // user -> privilege and messaging bits (channel ignored)
	// how the BMC treats a 20-byte password: "keep" keeps it and checks
	// tests, "truncate" keeps 16 bytes and passes every test (ipmi_sim),
	// "refuse" answers 0xcc.
	twenty string
	fail   map[byte]byte // command -> completion code to answer
	sent   [][]byte      // netfn, cmd, data...
}

func newFakeBMC() *fakeBMC {
	return &fakeBMC{
		channels: map[byte]byte{0: 0x01, 1: ipmiMedium8023, 0x0f: 0x0c},
		ip:       []byte{198, 18, 0, 23}, mac: []byte{0x52, 0x54, 0x00, 0xbe, 0xef, 0x01},
		maxUsers: 10,
		names:    map[byte]string{2: "admin"},
		pw:       map[byte][]byte{}, enabled: map[byte]bool{2: true}, access: map[byte]byte{2: 0x14},
		twenty: "keep", fail: map[byte]byte{},
	}
}

func (f *fakeBMC) Command(_ context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	f.sent = append(f.sent, append([]byte{netfn, cmd}, data...))
	if cc, ok := f.fail[cmd]; ok {
		return []byte{cc}, nil
	}
	switch {
	case netfn == ipmiNetFnApp && cmd == ipmiCmdGetChannelInfo:
		m, ok := f.channels[data[0]]
		if !ok {
			return []byte{0xcc}, nil
		}
		return []byte{0, data[0], m, 0x01, 0x80, 0xf2, 0x1b, 0, 0, 0}, nil
	case netfn == ipmiNetFnTransport && cmd == ipmiCmdGetLANConfig:
		if f.channels[data[0]] != ipmiMedium8023 {
			return []byte{0xcc}, nil
		}
		switch data[1] {
		case ipmiLANParamIP:
			return append([]byte{0, 0x11}, f.ip...), nil
		case ipmiLANParamMAC:
			return append([]byte{0, 0x11}, f.mac...), nil
		}
		return []byte{0x80}, nil
	case netfn == ipmiNetFnApp && cmd == ipmiCmdGetUserAccess:
		id := data[1] & 0x3f
		return []byte{0, f.maxUsers, byte(len(f.enabled)), 1, f.access[id]}, nil
	case netfn == ipmiNetFnApp && cmd == ipmiCmdGetUserName:
		id := data[0] & 0x3f
		if id < 2 || id > f.maxUsers {
			return []byte{0xcc}, nil
		}
		b := make([]byte, 17)
		copy(b[1:], f.names[id])
		return b, nil
	case netfn == ipmiNetFnApp && cmd == ipmiCmdSetUserName:
		if len(data) != 17 {
			return []byte{0xc7}, nil
		}
		f.names[data[0]&0x3f] = userName(data[1:])
		return []byte{0}, nil
	case netfn == ipmiNetFnApp && cmd == ipmiCmdSetUserPwd:
		id, twenty := data[0]&0x3f, data[0]&0x80 != 0
		switch data[1] {
		case ipmiPwdEnable:
			f.enabled[id] = true
			return []byte{0}, nil
		case ipmiPwdSet, ipmiPwdTest:
			if twenty && f.twenty == "refuse" {
				return []byte{0xcc}, nil
			}
			pw := append([]byte(nil), data[2:]...)
			if twenty && f.twenty == "truncate" {
				pw = append(pw[:16:16], 0, 0, 0, 0)
			}
			if data[1] == ipmiPwdSet {
				f.pw[id] = pw
				return []byte{0}, nil
			}
			if f.twenty == "truncate" || bytes.Equal(f.pw[id], pw) {
				return []byte{0}, nil
			}
			return []byte{ipmiCCPasswordMismatch}, nil
		}
	case netfn == ipmiNetFnApp && cmd == ipmiCmdSetUserAccess:
		if data[0]&0x80 != 0 {
			f.access[data[1]&0x3f] = data[0]&0x70 | data[2]&0x0f
		}
		return []byte{0}, nil
	}
	return []byte{0xc1}, nil
}

// requests are the commands f received, as "netfn cmd: data".
func (f *fakeBMC) requests() []string {
	var out []string
	for _, s := range f.sent {
		out = append(out, fmt.Sprintf("%02x %02x: % x", s[0], s[1], s[2:]))
	}
	return out
}

// counting is a random source that counts up from 0: predictable
// passwords, and bytes from 248 up, which are skipped.
type counting struct{ n byte }

func (c *counting) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestEnrolBMCCommands(t *testing.T) {
	t.Parallel()
	f := newFakeBMC()
	f.channels = map[byte]byte{0: 0x01, 1: 0x05, 2: ipmiMedium8023} // channel 1 is serial
	f.names[3] = "operator"
	got, err := enrolBMC(context.Background(), f, &counting{})
	if err != nil {
		t.Fatal(err)
	}
	want := &BMCEnrolment{Channel: 2, Address: "198.18.0.23", MAC: "52:54:00:be:ef:01", UserID: 4, Username: "carbide",
		Password: "ABCDEFGHIJKLMNOPQRST"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("enrolment (-want +got):\n%s", diff)
	}
	pw := "41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50 51 52 53 54"
	wrongPw := "40 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50 51 52 53 54"
	wantReqs := []string{
		"06 42: 01", // Get Channel Info: 1 is serial, 2 is LAN
		"06 42: 02",
		"0c 02: 02 03 00 00", // Get LAN Configuration: address, MAC
		"0c 02: 02 05 00 00",
		"06 44: 02 01", // Get User Access: the maximum
		"06 46: 02", "06 46: 03", "06 46: 04", "06 46: 05", "06 46: 06", "06 46: 07", "06 46: 08", "06 46: 09", "06 46: 0a",
		"06 45: 04 63 61 72 62 69 64 65 00 00 00 00 00 00 00 00 00", // Set User Name "carbide"
		"06 47: 84 02 " + pw,      // Set User Password, 20-byte form
		"06 47: 84 03 " + pw,      // test it
		"06 47: 84 03 " + wrongPw, // a wrong one must fail
		"06 47: 04 01",            // enable
		"06 43: 92 04 04",         // Set User Access: IPMI messaging on channel 2, ADMINISTRATOR
		"06 44: 02 04",            // Get User Access: check
	}
	if diff := cmp.Diff(wantReqs, f.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if f.names[4] != "carbide" || !f.enabled[4] || f.access[4] != 0x14 || string(f.pw[4]) != got.Password {
		t.Errorf("BMC user 4: name %q, enabled %t, access %#x", f.names[4], f.enabled[4], f.access[4])
	}
}

func TestEnrolBMCReusesItsUser(t *testing.T) {
	t.Parallel()
	f := newFakeBMC()
	f.names[5] = "carbide"
	got, err := enrolBMC(context.Background(), f, &counting{})
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != 5 {
		t.Errorf("user %d, want 5, the one named carbide", got.UserID)
	}
	// It stops looking at the first user named carbide.
	for _, r := range f.requests() {
		if strings.HasPrefix(r, "06 46: 06") {
			t.Errorf("read the names of users after the one named carbide: %s", r)
		}
	}
}

// TestEnrolBMCPasswordForms: a BMC that confirms a 20-byte password gets
// one; one that refuses the 20-byte form, or passes every test (as
// ipmi_sim, which keeps only 16 bytes), gets 16 characters in the 16-byte
// form.
func TestEnrolBMCPasswordForms(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"keep", "truncate", "refuse"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFakeBMC()
			f.twenty = mode
			got, err := enrolBMC(context.Background(), f, &counting{n: 200})
			if err != nil {
				t.Fatal(err)
			}
			wantLen, wantShort := 20, false
			if mode != "keep" {
				wantLen, wantShort = 16, true
			}
			if len(got.Password) != wantLen || got.Short != wantShort {
				t.Errorf("password of %d characters, short %t; want %d, %t", len(got.Password), got.Short, wantLen, wantShort)
			}
			stored := string(bytes.TrimRight(f.pw[got.UserID], "\x00"))
			if stored != got.Password {
				t.Errorf("the BMC stored another password than the one reported")
			}
			last := ""
			for _, r := range f.requests() {
				if strings.HasPrefix(r, "06 47:") && strings.Contains(r, " 02 ") {
					last = r
				}
			}
			if wantShort && !strings.HasPrefix(last, "06 47: 03 02 ") {
				t.Errorf("the last password set is %q, want the 16-byte form", last)
			}
		})
	}
}

func TestEnrolBMCFailures(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		change func(f *fakeBMC)
		err    string
	}{
		"no LAN channel":       {func(f *fakeBMC) { f.channels = map[byte]byte{0: 1} }, "no channel has 802.3 LAN"},
		"no address":           {func(f *fakeBMC) { f.ip = []byte{0, 0, 0, 0} }, "no IPv4 address on LAN channel 1"},
		"no free user":         {func(f *fakeBMC) { f.maxUsers = 2 }, "no user slot is free among the BMC's 2"},
		"set name refused":     {func(f *fakeBMC) { f.fail[ipmiCmdSetUserName] = 0xd4 }, "set the user name: BMC answered with completion code 0xd4 (insufficient privilege)"},
		"access refused":       {func(f *fakeBMC) { f.fail[ipmiCmdSetUserAccess] = 0xcc }, "set the user's access"},
		"access not kept":      {func(f *fakeBMC) { f.fail[ipmiCmdSetUserAccess] = 0 }, "kept user 3 at privilege 0"},
		"channel info refused": {func(f *fakeBMC) { f.fail[ipmiCmdGetChannelInfo] = 0xc1 }, "no channel has 802.3 LAN"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFakeBMC()
			tc.change(f)
			_, err := enrolBMC(context.Background(), f, &counting{})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
	// A transport error says what was being done.
	_, err := enrolBMC(context.Background(), brokenBMC{}, &counting{})
	if err == nil || !strings.Contains(err.Error(), "device gone") {
		t.Errorf("error %v, want the transport's", err)
	}
}

type brokenBMC struct{}

func (brokenBMC) Command(context.Context, byte, byte, []byte) ([]byte, error) {
	return nil, errors.New("device gone")
}

func TestRandomPassword(t *testing.T) {
	t.Parallel()
	// Bytes from 248 up are skipped: 248..255 then 0.. give "AB...".
	pw, err := randomPassword(&counting{n: 248}, 20)
	if err != nil {
		t.Fatal(err)
	}
	if pw != "ABCDEFGHIJKL"+"MNOPQRST" {
		t.Errorf("password %q", pw)
	}
	seen := map[string]bool{}
	for range 100 {
		pw, err := randomPassword(defaultRandom, 20)
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 20 || strings.Trim(pw, passwordAlphabet) != "" || seen[pw] {
			t.Fatalf("password %q: want 20 fresh letters and digits", pw)
		}
		seen[pw] = true
	}
}
