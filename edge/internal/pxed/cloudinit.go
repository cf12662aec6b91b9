package pxed

import (
	"bytes"
	"fmt"
	"strings"

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
