package scout

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// In-band enrolment of a BMC user, the way MAAS does it: through the
// machine's IPMI system interface, which needs no credentials, the agent
// creates (or resets) a user of its own with a fresh random password and
// administrator privilege on the BMC's LAN channel, and reports it to the
// API, which the BMC daemons then use over IPMI-over-LAN.

// BMCUsername is the BMC user the agent creates or resets.
const BMCUsername = "carbide"

// Lengths of the passwords the agent sets: the 20-byte form of Set User
// Password (IPMI 2.0), and the 16-byte form, which every BMC stores whole,
// for a BMC that cannot confirm it stored the 20-byte one.
const (
	bmcPasswordLen   = 20
	bmcPasswordLen16 = 16
)

// IPMI commands of the enrolment (IPMI 2.0, sections 22 and 23): network
// function Application (0x06) and Transport (0x0C).
const (
	ipmiNetFnApp          = 0x06
	ipmiCmdGetChannelInfo = 0x42
	ipmiCmdSetUserAccess  = 0x43
	ipmiCmdGetUserAccess  = 0x44
	ipmiCmdSetUserName    = 0x45
	ipmiCmdGetUserName    = 0x46
	ipmiCmdSetUserPwd     = 0x47

	ipmiLANParamMAC = 5 // MAC Address

	// ipmiMedium8023 is the channel medium type of an 802.3 LAN.
	ipmiMedium8023 = 0x04
	// ipmiPrivAdmin is the ADMINISTRATOR privilege level.
	ipmiPrivAdmin = 0x04

	// Operations of Set User Password.
	ipmiPwdEnable = 0x01
	ipmiPwdSet    = 0x02
	ipmiPwdTest   = 0x03

	// ipmiCCPasswordMismatch is Set User Password's answer to a test
	// with the wrong password.
	ipmiCCPasswordMismatch = 0x80

	// ipmiFirstFreeUser is the first user slot the agent takes when none
	// is named BMCUsername: 1 is the anonymous user, 2 usually the
	// vendor's administrator.
	ipmiFirstFreeUser = 3
)

// ipmiCommander sends one request to the BMC and returns the response
// data, completion code first.
type ipmiCommander interface {
	Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error)
}

// BMCEnrolment is what in-band enrolment did: the BMC's LAN channel, its
// address and MAC there, and the user the agent set. Password is a secret:
// never log it.
type BMCEnrolment struct {
	Channel  byte
	Address  string
	MAC      string
	UserID   byte
	Username string
	Password string
	// Short says the BMC could not confirm a 20-byte password, so the
	// agent set one of 16 characters instead.
	Short bool
}

// ipmiError is a completion code other than success.
type ipmiError struct {
	what string
	cc   byte
}

func (e *ipmiError) Error() string {
	return fmt.Sprintf("%s: BMC answered with completion code %#02x (%s)", e.what, e.cc, ipmiCompletion(e.cc))
}

// ipmiCall sends a command and checks its completion code and that the
// response has at least n data bytes after it; it returns those bytes.
func ipmiCall(ctx context.Context, c ipmiCommander, what string, netfn, cmd byte, data []byte, n int) ([]byte, error) {
	resp, err := c.Command(ctx, netfn, cmd, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(resp) < 1 {
		return nil, fmt.Errorf("%s: empty IPMI response", what)
	}
	if resp[0] != 0 {
		return nil, &ipmiError{what: what, cc: resp[0]}
	}
	if len(resp)-1 < n {
		return nil, fmt.Errorf("%s: IPMI response of %d bytes, want at least %d", what, len(resp)-1, n)
	}
	return resp[1:], nil
}

// enrolBMC creates or resets the agent's BMC user through c: it finds the
// LAN channel and the BMC's address and MAC on it, takes the user slot
// named BMCUsername (or the first empty one from 3 up), names it, sets a
// fresh random password from random, enables it and gives it
// ADMINISTRATOR privilege with IPMI messaging on the LAN channel.
func enrolBMC(ctx context.Context, c ipmiCommander, random io.Reader) (*BMCEnrolment, error) {
	ch, err := lanChannel(ctx, c)
	if err != nil {
		return nil, err
	}
	e := &BMCEnrolment{Channel: ch, Username: BMCUsername}
	resp, err := c.Command(ctx, ipmiNetFnTransport, ipmiCmdGetLANConfig, getLANConfigRequest(ch, ipmiLANParamIP))
	if err != nil {
		return nil, fmt.Errorf("read the BMC's address: %w", err)
	}
	if e.Address, err = parseLANIPResponse(resp); err != nil {
		return nil, fmt.Errorf("read the BMC's address: %w", err)
	}
	if e.Address == "" {
		return nil, fmt.Errorf("the BMC has no IPv4 address on LAN channel %d: set one (or DHCP) on the BMC first", ch)
	}
	mac, err := ipmiCall(ctx, c, "read the BMC's MAC", ipmiNetFnTransport, ipmiCmdGetLANConfig, getLANConfigRequest(ch, ipmiLANParamMAC), 7)
	if err != nil {
		return nil, err
	}
	if hw := net.HardwareAddr(mac[1:7]); !bytes.Equal(hw, make([]byte, 6)) {
		e.MAC = hw.String()
	}
	if e.UserID, err = userSlot(ctx, c, ch); err != nil {
		return nil, err
	}
	if _, err := ipmiCall(ctx, c, "set the user name", ipmiNetFnApp, ipmiCmdSetUserName, setUserNameRequest(e.UserID, BMCUsername), 0); err != nil {
		return nil, err
	}
	if e.Password, e.Short, err = setPassword(ctx, c, e.UserID, random); err != nil {
		return nil, err
	}
	if _, err := ipmiCall(ctx, c, "enable the user", ipmiNetFnApp, ipmiCmdSetUserPwd, []byte{e.UserID, ipmiPwdEnable}, 0); err != nil {
		return nil, err
	}
	if _, err := ipmiCall(ctx, c, "set the user's access", ipmiNetFnApp, ipmiCmdSetUserAccess, setUserAccessRequest(ch, e.UserID), 0); err != nil {
		return nil, err
	}
	acc, err := ipmiCall(ctx, c, "read the user's access", ipmiNetFnApp, ipmiCmdGetUserAccess, []byte{ch, e.UserID}, 4)
	if err != nil {
		return nil, err
	}
	if priv, msgs := acc[3]&0x0f, acc[3]&0x10 != 0; priv != ipmiPrivAdmin || !msgs {
		return nil, fmt.Errorf("the BMC kept user %d at privilege %#x, IPMI messaging %t, after it was given ADMINISTRATOR with IPMI messaging", e.UserID, priv, msgs)
	}
	return e, nil
}

// lanChannel returns the number of the BMC's first 802.3 LAN channel
// (Get Channel Info of channels 1 to 11).
func lanChannel(ctx context.Context, c ipmiCommander) (byte, error) {
	var errs []error
	for ch := byte(1); ch <= 0x0b; ch++ {
		info, err := ipmiCall(ctx, c, fmt.Sprintf("read channel %d", ch), ipmiNetFnApp, ipmiCmdGetChannelInfo, []byte{ch}, 2)
		var cc *ipmiError
		if errors.As(err, &cc) {
			continue // no such channel
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if info[1]&0x7f == ipmiMedium8023 {
			return info[0] & 0x0f, nil
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("find the BMC's LAN channel: %w", errors.Join(errs...))
	}
	return 0, errors.New("find the BMC's LAN channel: no channel has 802.3 LAN as its medium")
}

// userSlot returns the user named BMCUsername, or else the first with no
// name from ipmiFirstFreeUser up to the BMC's maximum (Get User Access).
func userSlot(ctx context.Context, c ipmiCommander, ch byte) (byte, error) {
	acc, err := ipmiCall(ctx, c, "read the number of users", ipmiNetFnApp, ipmiCmdGetUserAccess, []byte{ch, 1}, 1)
	if err != nil {
		return 0, err
	}
	maxUsers := acc[0] & 0x3f
	var free byte
	for id := byte(2); id <= maxUsers; id++ {
		name, err := ipmiCall(ctx, c, fmt.Sprintf("read the name of user %d", id), ipmiNetFnApp, ipmiCmdGetUserName, []byte{id}, 16)
		if err != nil {
			return 0, err
		}
		switch n := userName(name[:16]); {
		case n == BMCUsername:
			return id, nil
		case n == "" && free == 0 && id >= ipmiFirstFreeUser:
			free = id
		}
	}
	if free == 0 {
		return 0, fmt.Errorf("no user slot is free among the BMC's %d, and none is named %q", maxUsers, BMCUsername)
	}
	return free, nil
}

// userName is a user name field: ASCII, padded with NULs.
func userName(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// setUserNameRequest is Set User Name's data: the user id, then the name
// in 16 bytes padded with NULs.
func setUserNameRequest(id byte, name string) []byte {
	b := make([]byte, 17)
	b[0] = id & 0x3f
	copy(b[1:], name)
	return b
}

// setPasswordRequest is Set User Password's data: the user id (bit 7 set
// for the 20-byte form), the operation, and for a set or a test the
// password padded with NULs to 16 or 20 bytes.
func setPasswordRequest(id, op byte, password string, twenty bool) []byte {
	size := 16
	b0 := id & 0x3f
	if twenty {
		size, b0 = 20, b0|0x80
	}
	b := make([]byte, 2+size)
	b[0], b[1] = b0, op
	copy(b[2:], password)
	return b
}

// setUserAccessRequest is Set User Access's data: change the bits that
// follow (bit 7), IPMI messaging enabled (bit 4) on channel ch; the user;
// ADMINISTRATOR as its privilege limit.
func setUserAccessRequest(ch, id byte) []byte {
	return []byte{0x80 | 0x10 | ch&0x0f, id & 0x3f, ipmiPrivAdmin}
}

// setPassword sets a fresh password of 20 characters in the 20-byte form
// and checks with Set User Password's test operation that the BMC keeps
// it: the right password passes and a wrong one fails. A BMC that
// refuses the 20-byte form, or that cannot tell a wrong password from the
// right one, gets a password of 16 characters in the 16-byte form
// instead, which every BMC stores whole. (OpenIPMI's ipmi_sim keeps only
// the first 16 bytes of a 20-byte password and passes every test.)
func setPassword(ctx context.Context, c ipmiCommander, id byte, random io.Reader) (string, bool, error) {
	pw, err := randomPassword(random, bmcPasswordLen)
	if err != nil {
		return "", false, err
	}
	_, err = ipmiCall(ctx, c, "set the password", ipmiNetFnApp, ipmiCmdSetUserPwd, setPasswordRequest(id, ipmiPwdSet, pw, true), 0)
	var cc *ipmiError
	switch {
	case errors.As(err, &cc):
		// No 20-byte passwords here.
	case err != nil:
		return "", false, err
	default:
		if confirmed, err := testPassword(ctx, c, id, pw); err != nil {
			return "", false, err
		} else if confirmed {
			return pw, false, nil
		}
	}
	pw, err = randomPassword(random, bmcPasswordLen16)
	if err != nil {
		return "", false, err
	}
	if _, err := ipmiCall(ctx, c, "set the password", ipmiNetFnApp, ipmiCmdSetUserPwd, setPasswordRequest(id, ipmiPwdSet, pw, false), 0); err != nil {
		return "", false, err
	}
	return pw, true, nil
}

// testPassword reports whether the BMC confirms that user id has the
// 20-byte password pw: it passes the test with pw and fails it with
// another password.
func testPassword(ctx context.Context, c ipmiCommander, id byte, pw string) (bool, error) {
	if _, err := ipmiCall(ctx, c, "test the password", ipmiNetFnApp, ipmiCmdSetUserPwd, setPasswordRequest(id, ipmiPwdTest, pw, true), 0); err != nil {
		var cc *ipmiError
		if errors.As(err, &cc) {
			return false, nil
		}
		return false, err
	}
	wrong := []byte(pw)
	wrong[0] ^= 0x01 // not pw
	resp, err := c.Command(ctx, ipmiNetFnApp, ipmiCmdSetUserPwd, setPasswordRequest(id, ipmiPwdTest, string(wrong), true))
	if err != nil {
		return false, fmt.Errorf("test the password: %w", err)
	}
	return len(resp) > 0 && resp[0] == ipmiCCPasswordMismatch, nil
}

// passwordAlphabet is what the passwords are made of: letters and digits,
// which every BMC and every tool passes through unquoted.
const passwordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomPassword returns n characters of passwordAlphabet drawn uniformly
// from random (crypto/rand.Reader in the agent).
func randomPassword(random io.Reader, n int) (string, error) {
	// 248 is the largest multiple of 62 below 256: bytes from 248 up are
	// dropped, so that every character is equally likely.
	const limit = 256 - 256%len(passwordAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(out) < n {
		if _, err := io.ReadFull(random, buf); err != nil {
			return "", fmt.Errorf("make a password: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, passwordAlphabet[int(b)%len(passwordAlphabet)])
			}
		}
	}
	return string(out), nil
}

// defaultRandom is where passwords come from.
var defaultRandom io.Reader = rand.Reader
