package scout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// carrierWait is how long the agent waits for a link to come up after
// setting the NICs up.
const carrierWait = 10 * time.Second

// setLinksUp sets every NIC up, so that their carrier shows and one can
// be picked by it. It returns the names of the NICs.
func setLinksUp(log *slog.Logger, c *Collector) ([]string, error) {
	names, err := c.physicalNICs()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	rt, err := openRtnl()
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	for _, name := range names {
		ifc, err := net.InterfaceByName(name)
		if err == nil {
			err = rt.linkUp(ifc.Index)
		}
		if err != nil {
			log.Warn(fmt.Sprintf("scout: set %s up: %v", name, err))
		}
	}
	return names, nil
}

// waitCarrier waits until one of names (want true) or all of them has a
// carrier, or until timeout, and returns those with one, in order.
func waitCarrier(ctx context.Context, c *Collector, names []string, all bool, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		var up []string
		for _, n := range names {
			if c.readString("sys/class/net/"+n+"/carrier") == "1" {
				up = append(up, n)
			}
		}
		if (all && len(up) == len(names)) || (!all && len(up) > 0) || time.Now().After(deadline) {
			return up
		}
		select {
		case <-ctx.Done():
			return up
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// chooseNIC picks the NIC to configure: the one with MAC mac when there
// is one, else the first (in name order) with a carrier.
func chooseNIC(ctx context.Context, log *slog.Logger, c *Collector, mac string) (string, error) {
	names, err := setLinksUp(log, c)
	if err != nil {
		return "", err
	}
	if len(names) == 0 {
		return "", errors.New("no network interface: is the NIC's driver among the image's modules?")
	}
	if mac != "" {
		for _, n := range names {
			if strings.EqualFold(c.readString("sys/class/net/"+n+"/address"), mac) {
				if len(waitCarrier(ctx, c, []string{n}, true, carrierWait)) == 0 {
					log.Warn(fmt.Sprintf("scout: %s (%s) has no link yet; trying DHCP on it anyway", n, mac))
				}
				return n, nil
			}
		}
		log.Warn(fmt.Sprintf("scout: no interface has MAC %s (interfaces: %s); taking the first with a link",
			mac, strings.Join(names, ", ")))
	}
	up := waitCarrier(ctx, c, names, false, carrierWait)
	if len(up) == 0 {
		return "", fmt.Errorf("no interface has a link (interfaces: %s)", strings.Join(names, ", "))
	}
	return up[0], nil
}

// dhcpLink is a NIC configured by DHCP.
type dhcpLink struct {
	log    *slog.Logger
	root   string
	name   string
	index  int
	mac    string
	client *nclient4.Client
	lease  *nclient4.Lease
	addr   net.IPNet // the address configured on the link
}

// bringUpNetwork picks a NIC (see chooseNIC), gets an address for it by
// DHCPv4 and configures it: address, default route and resolv.conf. It
// then keeps the lease renewed until ctx is done.
func bringUpNetwork(ctx context.Context, log *slog.Logger, c *Collector, mac string) error {
	name, err := chooseNIC(ctx, log, c, mac)
	if err != nil {
		return err
	}
	l, err := dhcpUp(ctx, log, c.Root, name)
	if err != nil {
		return err
	}
	go l.maintain(ctx)
	return nil
}

// dhcpUp runs DHCPv4 on the interface name and configures the lease.
func dhcpUp(ctx context.Context, log *slog.Logger, root, name string) (*dhcpLink, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	client, err := nclient4.New(name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("start a DHCP client on %s: %w", name, err)
	}
	l := &dhcpLink{log: log, root: root, name: name, index: ifc.Index, mac: ifc.HardwareAddr.String(), client: client}
	if err := l.acquire(ctx); err != nil {
		client.Close()
		return nil, err
	}
	return l, nil
}

// acquire gets a new lease (DISCOVER, OFFER, REQUEST, ACK) and configures
// it.
func (l *dhcpLink) acquire(ctx context.Context) error {
	lease, err := l.client.Request(ctx)
	if err != nil {
		return fmt.Errorf("DHCP on %s: %w", l.name, err)
	}
	return l.apply(lease, "got")
}

// apply configures a lease on the link; verb says how it came ("got",
// "renewed").
func (l *dhcpLink) apply(lease *nclient4.Lease, verb string) error {
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask}
	if addr.IP == nil || addr.IP.IsUnspecified() {
		return fmt.Errorf("DHCP on %s: the server gave no address", l.name)
	}
	rt, err := openRtnl()
	if err != nil {
		return err
	}
	defer rt.Close()
	if l.addr.IP != nil && !l.addr.IP.Equal(addr.IP) {
		if err := rt.delAddr(l.index, l.addr); err != nil {
			l.log.Warn(fmt.Sprintf("scout: remove %s from %s: %v", l.addr.String(), l.name, err))
		}
	}
	if err := rt.addAddr(l.index, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", addr.String(), l.name, err)
	}
	l.addr = addr
	if routers := ack.Router(); len(routers) > 0 {
		if err := rt.replaceDefaultRoute(l.index, routers[0]); err != nil {
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
	}
	if err := writeResolvConf(l.root, ack.DNS(), ack.DomainName()); err != nil {
		l.log.Warn("scout: " + err.Error())
	}
	l.lease = lease
	l.log.Info(fmt.Sprintf("scout: %s %s %s %s from %s", l.name, l.mac, verb, addr.String(), ack.ServerIdentifier()))
	return nil
}

// writeResolvConf points the resolver at the lease's DNS servers.
func writeResolvConf(root string, servers []net.IP, domain string) error {
	if len(servers) == 0 {
		return nil
	}
	var b strings.Builder
	if domain != "" {
		fmt.Fprintf(&b, "search %s\n", domain)
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	p := filepath.Join(root, "etc/resolv.conf")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	return nil
}

// maintain renews the lease from T1 on (half the lease time unless the
// server says otherwise) until ctx is done; once it has expired, it
// starts over with a new DISCOVER.
func (l *dhcpLink) maintain(ctx context.Context) {
	defer l.client.Close()
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		leaseTime := l.lease.ACK.IPAddressLeaseTime(time.Hour)
		if leaseTime >= 0xffffffff*time.Second {
			return // infinite
		}
		t1 := l.lease.ACK.IPAddressRenewalTime(leaseTime / 2)
		expiry := l.lease.CreationTime.Add(leaseTime)
		if !wait(time.Until(l.lease.CreationTime.Add(t1))) {
			return
		}
		for {
			var err error
			if time.Now().Before(expiry) {
				var lease *nclient4.Lease
				if lease, err = l.client.Renew(ctx, l.lease); err == nil {
					err = l.apply(lease, "renewed")
				}
			} else {
				err = l.acquire(ctx)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) {
				expiry = time.Now() // start over
			}
			l.log.Warn(fmt.Sprintf("scout: renew the lease of %s: %v", l.name, err))
			if !wait(min(max(time.Until(expiry)/2, 5*time.Second), time.Minute)) {
				return
			}
		}
	}
}
