package pxed

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"unicode/utf8"

	bootv1 "github.com/carbide-dev/carbide/gen/carbide/boot/v1"
)

// The NoCloud seed (cloud-init's nocloud data source, fetched from
// <public-url>/cloud-init/<mac>/). Its values are validated to a strict
// alphabet (validMachineID, validHostname) and written double-quoted, so
// that YAML reads each as the string it is: no value can end its line,
// start a key, or become a number, boolean or null.

// seedNames returns the machine's ID and host name, both validated: the
// host name is the machine's, or its ID when it has none.
func seedNames(resp *bootv1.GetBootConfigResponse) (id, host string, err error) {
	id, host = resp.GetMachineId(), resp.GetHostname()
	if !validMachineID(id) {
		return "", "", fmt.Errorf("the API returned an invalid machine id %q", id)
	}
	if host == "" {
		host = id
	}
	if !validHostname(host) {
		return "", "", fmt.Errorf("the API returned an invalid host name %q for machine %s", host, id)
	}
	return id, host, nil
}

// metaData renders the seed's meta-data.
func metaData(resp *bootv1.GetBootConfigResponse) ([]byte, error) {
	id, host, err := seedNames(resp)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "instance-id: %q\n", id)
	fmt.Fprintf(&b, "local-hostname: %q\n", host)
	return b.Bytes(), nil
}

// userData renders the seed's user-data: a cloud-config that sets the
// host name (and the FQDN when the name has a domain).
func userData(resp *bootv1.GetBootConfigResponse) ([]byte, error) {
	_, host, err := seedNames(resp)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	short, _, dotted := strings.Cut(host, ".")
	fmt.Fprintf(&b, "hostname: %q\n", short)
	if dotted {
		fmt.Fprintf(&b, "fqdn: %q\n", host)
	}
	return b.Bytes(), nil
}

// cloudInitPath is the HTTP path of the NoCloud seeds, followed by the MAC
// address and a slash: cloud-init appends the file names.
const cloudInitPath = "/cloud-init/"

// phoneHomePath is the HTTP path cloud-init's phone_home module posts to,
// followed by the MAC address.
const phoneHomePath = "/phone-home/"

// seedFiles are the files of a NoCloud seed.
var seedFiles = map[string]bool{"meta-data": true, "user-data": true, "network-config": true, "vendor-data": true}

// sshKeyPattern is the pattern the API accepts for an SSH public key
// (carbide.instance.v1.CreateInstanceRequest.ssh_authorized_keys): a key
// type, its base64 body, and an optional comment.
var sshKeyPattern = regexp.MustCompile(`^(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\r\n]*)?$`)

// validSSHKey accepts a key that matches sshKeyPattern and holds no line
// break, NUL or invalid UTF-8, so that yamlQuote writes it as one string
// and authorized_keys gets it as one line.
func validSSHKey(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsAny(s, "\r\n\x00") && sshKeyPattern.MatchString(s)
}

// yamlQuote writes s as a YAML double-quoted scalar that YAML 1.1 and 1.2
// parsers (PyYAML, which cloud-init uses) read back as s: '"' and '\' are
// escaped, every other character outside printable ASCII is written as a
// \u or \U escape, so no character of s can end the string or the line.
// It refuses invalid UTF-8.
func yamlQuote(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("refuse to place a string that is not UTF-8 into YAML: %q", s)
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// validUUID accepts a UUID in its canonical text form, in either case:
// 8-4-4-4-12 hex digits.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// instanceHostname is the host name of an instance's seed: its own, else
// its machine's, else the instance id; validated.
func instanceHostname(resp *bootv1.GetBootConfigResponse) (string, error) {
	ci := resp.GetCloudInit()
	host := ci.GetHostname()
	if host == "" {
		host = resp.GetHostname()
	}
	if host == "" {
		host = ci.GetInstanceId()
	}
	if !validHostname(host) {
		return "", fmt.Errorf("the API returned an invalid host name %q for instance %s", host, ci.GetInstanceId())
	}
	return host, nil
}

// instanceMetaData renders the meta-data of an instance's seed: its id,
// its host name, and the tenant's SSH keys as public-keys, which
// cloud-init installs for the image's default user.
func instanceMetaData(resp *bootv1.GetBootConfigResponse) ([]byte, error) {
	ci := resp.GetCloudInit()
	id := ci.GetInstanceId()
	if !validUUID(id) {
		return nil, fmt.Errorf("the API returned an invalid instance id %q", id)
	}
	host, err := instanceHostname(resp)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "instance-id: %q\n", id)
	fmt.Fprintf(&b, "local-hostname: %q\n", host)
	if keys := ci.GetSshAuthorizedKeys(); len(keys) > 0 {
		b.WriteString("public-keys:\n")
		for i, k := range keys {
			if !validSSHKey(k) {
				return nil, fmt.Errorf("the API returned SSH key %d of instance %s that is not one line of the authorized_keys format", i, id)
			}
			q, err := yamlQuote(k)
			if err != nil {
				return nil, fmt.Errorf("quote SSH key %d of instance %s: %w", i, id, err)
			}
			fmt.Fprintf(&b, "  - %s\n", q)
		}
	}
	return b.Bytes(), nil
}

// instanceNetworkConfig renders the network-config of an instance's seed:
// cloud-init network configuration version 2 with one ethernet, matched by
// its MAC and not renamed (cloud-init 22.4 finds its name by the MAC), with
// the instance's address, the gateway, the name servers and search domain,
// and the MTU. reqMAC, the MAC of the request, stands in when the API
// names none. An instance without an address (the API found no lease to
// take the network from) has no network-config: errNoNetworkConfig.
//
// The default route is gateway4, not a route: cloud-init 22.4 (Debian 12)
// renders a route for ifupdown, Debian's default, as "post-up route add
// ... || true", which needs net-tools, not installed by default, and
// fails silently without it; gateway4 becomes ifupdown's own "gateway"
// (and "to: default" it does not parse at all). networkd takes both;
// netplan warns that gateway4 is deprecated and applies it.
func instanceNetworkConfig(resp *bootv1.GetBootConfigResponse, reqMAC string) ([]byte, error) {
	ci := resp.GetCloudInit()
	id := ci.GetInstanceId()
	if ci.GetAddress() == "" {
		return nil, errNoNetworkConfig
	}
	mac := reqMAC
	if ci.GetMac() != "" {
		var ok bool
		if mac, ok = parseMAC(ci.GetMac()); !ok {
			return nil, fmt.Errorf("the API returned an invalid MAC %q for instance %s", ci.GetMac(), id)
		}
	}
	addr, err := netip.ParseAddr(ci.GetAddress())
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("the API returned an invalid IPv4 address %q for instance %s", ci.GetAddress(), id)
	}
	bits := ci.GetPrefixLength()
	if bits < 1 || bits > 32 {
		return nil, fmt.Errorf("the API returned an invalid prefix length %d for instance %s", bits, id)
	}
	prefix := netip.PrefixFrom(addr, int(bits))
	var b bytes.Buffer
	b.WriteString("version: 2\nethernets:\n  id0:\n    match:\n")
	fmt.Fprintf(&b, "      macaddress: %q\n", mac)
	fmt.Fprintf(&b, "    addresses:\n      - %q\n", prefix.String())
	if gw := ci.GetGateway(); gw != "" {
		a, err := netip.ParseAddr(gw)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("the API returned an invalid IPv4 gateway %q for instance %s", gw, id)
		}
		fmt.Fprintf(&b, "    gateway4: %q\n", a.String())
	}
	dns, domain := ci.GetDnsServers(), ci.GetDomain()
	if len(dns) > 0 || domain != "" {
		b.WriteString("    nameservers:\n")
		if len(dns) > 0 {
			b.WriteString("      addresses:\n")
			for _, s := range dns {
				a, err := netip.ParseAddr(s)
				if err != nil || !a.Is4() {
					return nil, fmt.Errorf("the API returned an invalid IPv4 name server %q for instance %s", s, id)
				}
				fmt.Fprintf(&b, "        - %q\n", a.String())
			}
		}
		if domain != "" {
			if !validHostname(domain) {
				return nil, fmt.Errorf("the API returned an invalid domain %q for instance %s", domain, id)
			}
			fmt.Fprintf(&b, "      search:\n        - %q\n", domain)
		}
	}
	if mtu := ci.GetMtu(); mtu != 0 {
		if mtu < 68 || mtu > 65535 {
			return nil, fmt.Errorf("the API returned an invalid MTU %d for instance %s", mtu, id)
		}
		fmt.Fprintf(&b, "    mtu: %d\n", mtu)
	}
	return b.Bytes(), nil
}

// errNoNetworkConfig says that a seed has no network-config: cloud-init
// then configures its fallback network (DHCP).
var errNoNetworkConfig = errors.New("no network configuration")

// phoneHomeTries is how often cloud-init's phone_home module posts before
// it gives up (3 s apart).
const phoneHomeTries = 10

// instanceVendorData renders the vendor-data of an instance's seed: while
// the instance is being provisioned (phone_home), a cloud-config that makes
// cloud-init's phone_home module post the instance id and host name to
// <base>/phone-home/<mac> once the operating system has booted; otherwise
// nothing.
func instanceVendorData(resp *bootv1.GetBootConfigResponse, base, mac string) ([]byte, error) {
	if !resp.GetCloudInit().GetPhoneHome() {
		return nil, nil
	}
	u, err := yamlQuote(base + phoneHomePath + mac)
	if err != nil {
		return nil, fmt.Errorf("quote the phone-home URL: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\nphone_home:\n")
	fmt.Fprintf(&b, "  url: %s\n", u)
	b.WriteString("  post:\n    - instance_id\n    - hostname\n")
	fmt.Fprintf(&b, "  tries: %d\n", phoneHomeTries)
	return b.Bytes(), nil
}
