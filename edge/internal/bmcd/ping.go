package bmcd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ping sends one unauthenticated IPMI "Get Channel Authentication
// Capabilities" request to addr and waits up to timeout for any answer:
// it tells a BMC that refuses a session from one that is not there.
func ping(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	defer conn.Close()
	req := []byte{
		0x06, 0x00, 0xff, 0x07, // RMCP: version 1.0, no ack, class IPMI
		0x00, 0, 0, 0, 0, 0, 0, 0, 0, // session: auth none, sequence 0, id 0
		0x09,             // message length
		0x20, 0x18, 0xc8, // BMC address, netFn application, checksum
		0x81, 0x00, 0x38, // remote console address, sequence, command
		0x8e, 0x04, 0xb5, // this channel with IPMI 2.0 data, admin, checksum
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	buf := make([]byte, 64)
	if _, err := conn.Read(buf); err != nil {
		return fmt.Errorf("ping ipmi %s: %w", addr, err)
	}
	return nil
}
