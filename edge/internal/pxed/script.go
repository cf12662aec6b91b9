package pxed

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/carbide-dev/carbide/edge/internal/agentconfig"
	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
)

// ipxePath is the HTTP path of the per-machine iPXE scripts, followed by
// the MAC address.
const ipxePath = "/ipxe/"

// artifactsPath is the HTTP path under which ArtifactsDir is served.
const artifactsPath = "/artifacts/"

// parseMAC accepts a MAC address of six hex bytes separated all by colons
// or all by hyphens, in either case, and returns it in lower case with
// colons (52:54:00:12:34:56).
func parseMAC(s string) (string, bool) {
	if len(s) != 17 {
		return "", false
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return "", false
	}
	var b [17]byte
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != sep {
				return "", false
			}
			b[i] = ':'
			continue
		}
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", false
		}
		b[i] = c
	}
	return string(b[:]), true
}

// safeWord reports whether s may be placed into an iPXE script as one word
// (or into a kernel command line as one argument): it is not empty and
// holds only letters, digits and -._~:/%+@,=?[] — no white space, no
// line break, no ${...} expansion, no "#", ";", "|", "&", quote or
// backslash, so it can neither end the word nor start a command.
func safeWord(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~:/%+@,=?[]", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validMachineID accepts the machine IDs the API hands out (UUIDs) and
// anything of the same alphabet: 1 to 64 letters, digits and hyphens,
// starting with a letter or digit.
func validMachineID(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validNonce accepts a boot nonce as the API hands them out: 22 to 64
// base64url characters.
func validNonce(s string) bool {
	if len(s) < 22 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validHostname accepts a DNS host name (RFC 1123): dot-separated labels of
// 1 to 63 letters, digits and hyphens, not starting or ending with a
// hyphen, 253 characters at most.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validHostPort accepts an HTTP Host header: a host name, an IPv4 address
// or a bracketed IPv6 address, with an optional port.
func validHostPort(s string) bool {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '+' {
			return false
		}
		host = h
		if strings.Contains(host, ":") {
			return net.ParseIP(host) != nil // an IPv6 literal, bracketed in s
		}
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return net.ParseIP(s[1:len(s)-1]) != nil
	}
	return validHostname(host)
}

// scriptWriter builds an iPXE script line by line. Every value placed into
// a line must be a safe word; the first one that is not stops the script,
// and err says which, so that no half-built script is ever served.
type scriptWriter struct {
	b   bytes.Buffer
	err error
}

func newScript() *scriptWriter {
	w := &scriptWriter{}
	w.b.WriteString("#!ipxe\n")
	return w
}

// line appends format, a constant of this package, with each %s replaced
// by the next value.
func (w *scriptWriter) line(format string, values ...string) {
	if w.err != nil {
		return
	}
	args := make([]any, len(values))
	for i, v := range values {
		if !safeWord(v) {
			w.err = fmt.Errorf("refuse to place %q into an iPXE script", v)
			return
		}
		args[i] = v
	}
	fmt.Fprintf(&w.b, format, args...)
	w.b.WriteByte('\n')
}

func (w *scriptWriter) bytes() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	return w.b.Bytes(), nil
}

// scripts renders the iPXE scripts.
type scripts struct {
	// kernel and initrd are the discovery image: paths under the
	// artifacts directory, or URLs.
	kernel, initrd string
	// kernelArgs are the extra kernel arguments of the discovery image.
	kernelArgs []string
	// retrySeconds is how long the script of an unknown MAC sleeps.
	retrySeconds int
}

// artifactURL is ref as a URL: itself when it is one, else the path under
// base's artifacts.
func artifactURL(base, ref string) string {
	if isURL(ref) {
		return ref
	}
	return base + artifactsPath + ref
}

// render returns the script of a machine the API knows. base is the URL
// machines reach the daemon at, without a trailing slash, and mac the
// normalised MAC.
func (s *scripts) render(base, mac string, resp *bootv1.GetBootConfigResponse) ([]byte, error) {
	id, host := resp.GetMachineId(), resp.GetHostname()
	if !validMachineID(id) {
		return nil, fmt.Errorf("the API returned an invalid machine id %q", id)
	}
	if host != "" && !validHostname(host) {
		return nil, fmt.Errorf("the API returned an invalid host name %q for machine %s", host, id)
	}
	w := newScript()
	if host != "" {
		w.line("echo Carbide: machine %s, host name %s", id, host)
	} else {
		w.line("echo Carbide: machine %s", id)
	}
	switch resp.GetAction() {
	case bootv1.BootAction_BOOT_ACTION_DISCOVERY:
		name := initrdName(s.initrd)
		format := "kernel %s initrd=%s" + strings.Repeat(" %s", len(s.kernelArgs)) +
			" " + agentconfig.ParamConfig + "=%s " + agentconfig.ParamMAC + "=%s"
		values := append([]string{artifactURL(base, s.kernel), name}, s.kernelArgs...)
		cfgURL := base + agentconfig.Path + mac + ".json"
		if nonce := resp.GetBootNonce(); nonce != "" {
			if !validNonce(nonce) {
				return nil, fmt.Errorf("the API returned a malformed boot nonce for machine %s", id)
			}
			cfgURL += "?" + agentconfig.ParamBoot + "=" + nonce
		}
		values = append(values, cfgURL, mac)
		w.line("echo Carbide: booting the discovery image")
		w.line(format, values...)
		w.line("initrd --name %s %s", name, artifactURL(base, s.initrd))
		w.line("boot")
	case bootv1.BootAction_BOOT_ACTION_LOCAL_DISK:
		w.line("echo Carbide: booting from the local disk")
		w.line("exit")
	case bootv1.BootAction_BOOT_ACTION_NETBOOT:
		if err := s.netboot(w, base, mac, resp); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("the API returned boot action %s for machine %s, which this daemon does not know", resp.GetAction(), id)
	}
	return w.bytes()
}

// renderUnknown returns the script of a MAC no machine has (yet): it waits
// and asks again, for a machine whose DHCP enrolment is still under way.
func (s *scripts) renderUnknown(base, mac string) ([]byte, error) {
	secs := strconv.Itoa(s.retrySeconds)
	w := newScript()
	w.line("echo Carbide: no machine has MAC %s yet, asking again in %s seconds", mac, secs)
	w.line("sleep %s", secs)
	w.line("chain --replace --autofree %s", base+ipxePath+mac)
	return w.bytes()
}

// netbootDatasource is the kernel argument with which cloud-init in a
// netboot image reads its NoCloud seed from the daemon: format and
// constant, with the base URL and the MAC as its two values. It is the
// one word of a script that holds a ";", which safeWord refuses in every
// value. cloud-init 22.4 (Debian 12) needs "nocloud-net" for a seed over
// HTTP: with "ds=nocloud;s=http://..." its network stage finds the seed
// but takes it for a local one and applies none of it. Later versions
// read "nocloud-net" as "nocloud".
const netbootDatasource = "ds=nocloud-net;s=%s" + cloudInitPath + "%s/"

// netboot writes the lines that boot the instance's netboot image: its
// kernel with its command line, each word checked, and the cloud-init
// datasource argument; its initrd, when it has one.
func (s *scripts) netboot(w *scriptWriter, base, mac string, resp *bootv1.GetBootConfigResponse) error {
	nb := resp.GetNetboot()
	kernel, initrd := nb.GetKernelUrl(), nb.GetInitrdUrl()
	if !isURL(kernel) {
		return fmt.Errorf("the API returned netboot kernel %q for machine %s, which is not an http(s) URL", kernel, resp.GetMachineId())
	}
	if initrd != "" && !isURL(initrd) {
		return fmt.Errorf("the API returned netboot initrd %q for machine %s, which is not an http(s) URL", initrd, resp.GetMachineId())
	}
	// Split on spaces only: any other white space is refused by safeWord
	// rather than taken as a separator.
	var args []string
	for word := range strings.SplitSeq(nb.GetCmdline(), " ") {
		if word != "" {
			args = append(args, word)
		}
	}
	format := "kernel %s"
	values := []string{kernel}
	name := ""
	if initrd != "" {
		name = initrdName(initrd)
		if !validInitrdName(name) {
			return fmt.Errorf("the API returned netboot initrd %q for machine %s, whose file name cannot be an initrd name", initrd, resp.GetMachineId())
		}
		format += " initrd=%s"
		values = append(values, name)
	}
	format += strings.Repeat(" %s", len(args)) + " " + netbootDatasource
	values = append(values, args...)
	values = append(values, base, mac)
	w.line("echo Carbide: booting the netboot image of the instance")
	w.line(format, values...)
	if initrd != "" {
		w.line("initrd --name %s %s", name, initrd)
	}
	w.line("boot")
	return nil
}
