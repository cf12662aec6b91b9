package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/edge/internal/nsenter"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// The lab network Run creates in its namespace. It exists only there, so
// it cannot clash with the host's networks.
const (
	labBridge  = "br0"
	labGateway = "10.79.0.1"
	labPrefix  = "10.79.0.0/24"
	labFirst   = "10.79.0.100"
	labLast    = "10.79.0.199"
	labIPv6    = "fd00:79::1/64"
	labDomain  = "lab.carbide.internal"
	apiPort    = "1079"
	httpPort   = "8080"
)

// Modes of Run.
const (
	// ModeNetns: as root, without an interface: a namespace of its own.
	ModeNetns = "netns"
	// ModeInterface: DHCP, TFTP and DNS on CARBIDE_INTERFACE.
	ModeInterface = "interface"
	// ModeAPIOnly: without root or an interface: the API and carbide-bmc.
	ModeAPIOnly = "api-only"
)

// Config is what Run starts.
type Config struct {
	// DataDir holds the embedded store and the development PKI.
	DataDir string
	// BinDir holds carbide-api and the edge daemons.
	BinDir string
	// ArtifactsDir is what carbide-pxe serves: the discovery image in
	// scout/, OS images beside it.
	ArtifactsDir string
	// Interface, when set, is the network DHCP, TFTP and DNS serve.
	Interface string
	// Netns names the namespace Run creates (ModeNetns).
	Netns string
	// Listen is the host address the API is reached at.
	Listen string
	// Root says whether Run may create namespaces (euid 0).
	Root bool
}

// Mode is how Run will run with c.
func (c *Config) Mode() string {
	switch {
	case c.Interface != "":
		return ModeInterface
	case c.Root:
		return ModeNetns
	default:
		return ModeAPIOnly
	}
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty: name the directory of the store, e.g. ./carbide-data"))
	}
	if c.BinDir == "" {
		errs = append(errs, errors.New("--bin-dir is empty: name the directory of carbide-api and the daemons (make run builds them into ./bin)"))
	} else {
		for _, b := range c.binaries() {
			if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
				errs = append(errs, fmt.Errorf("%s is not in %s: build it (make run does) or point --bin-dir at it", b, c.BinDir))
			}
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:1079", c.Listen))
	}
	if c.Mode() == ModeNetns && (c.Netns == "" || strings.ContainsAny(c.Netns, "/ ")) {
		errs = append(errs, fmt.Errorf("--netns %q: want a name without slashes or spaces, e.g. carbide", c.Netns))
	}
	if c.Mode() != ModeAPIOnly {
		if _, err := os.Stat(filepath.Join(c.ArtifactsDir, "scout", "vmlinuz")); err != nil {
			errs = append(errs, fmt.Errorf("no discovery image in %s (scout/vmlinuz): build it with `make scout`, or point --artifacts-dir at one", c.ArtifactsDir))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) binaries() []string {
	if c.Mode() == ModeAPIOnly {
		return []string{"carbide-api", "carbide-bmc"}
	}
	return []string{"carbide-api", "carbide-dhcp", "carbide-pxe", "carbide-dns", "carbide-bmc"}
}

// Run starts the stack, prints its logs to out and stops it, in reverse
// order, when ctx is done or when a component exits; then it removes the
// namespace it created, with everything still running in it.
func Run(ctx context.Context, cfg Config, out io.Writer) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}
	artifacts, err := filepath.Abs(cfg.ArtifactsDir)
	if err != nil {
		return err
	}
	pkiDir := filepath.Join(dataDir, "pki")
	logs := &logStream{out: out, width: len("carbide-dhcp")}
	bin := func(name string) string { return filepath.Join(cfg.BinDir, name) }
	mode := cfg.Mode()

	// The host's API address first: when it is taken nothing is created.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s for the API: %w (is another `make run` running? stop it, or give --listen another address)", cfg.Listen, err)
	}
	var (
		children []*child
		fwd      *forwarder
		dbFwd    *forwarder
		nsMade   bool
	)
	defer func() {
		removeState(dataDir)
		for i := len(children) - 1; i >= 0; i-- {
			c := children[i]
			logs.printf("stopping %s", c.name)
			if serr := c.stop(15 * time.Second); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		if dbFwd != nil {
			dbFwd.close()
		}
		if fwd != nil {
			fwd.close()
		} else {
			ln.Close()
		}
		if nsMade {
			logs.printf("deleting network namespace %s", cfg.Netns)
			if derr := deleteNetns(cfg.Netns); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		if err == nil {
			logs.printf("stopped")
		}
	}()
	wrap := func(argv ...string) []string { return argv }
	var addr, apiAddr string // where the daemons listen; where they reach the API
	listenAt := ""           // where the API listens, when not apiAddr
	switch mode {
	case ModeNetns:
		if err := makeNetns(cfg.Netns); err != nil {
			return err
		}
		nsMade = true
		logs.printf("created network namespace %s with bridge %s (%s/24); the host's networks are not touched", cfg.Netns, labBridge, labGateway)
		ip, err := findProgram("ip", "iproute2")
		if err != nil {
			return err
		}
		wrap = func(argv ...string) []string { return append([]string{ip, "netns", "exec", cfg.Netns}, argv...) }
		addr = labGateway
		apiAddr = net.JoinHostPort(addr, apiPort)
		fwd = forward(ln, apiAddr, netnsDialer(cfg.Netns))
		if dbFwd, err = forwardDatabase(cfg.Netns, os.Getenv("CARBIDE_DATABASE_URL")); err != nil {
			return err
		} else if dbFwd != nil {
			logs.printf("the API reaches PostgreSQL on the host's %s through a forwarder in the namespace", dbFwd.target)
		}
	case ModeInterface:
		addr, err = interfaceAddr(cfg.Interface)
		if err != nil {
			return err
		}
		apiAddr = net.JoinHostPort(addr, apiPort)
		if listenCovers(cfg.Listen, apiAddr) {
			// The host address is the API's own (e.g. --listen
			// 0.0.0.0:1079): a forwarder there would take the port the
			// API needs, so the API listens on it itself.
			ln.Close()
			listenAt = cfg.Listen
		} else {
			fwd = forward(ln, apiAddr, hostDialer)
		}
	default:
		// The API itself listens on the host address.
		ln.Close()
		apiAddr = cfg.Listen
	}
	if listenAt == "" {
		listenAt = apiAddr
	}
	apiURL := "https://" + apiAddr
	endpoint := "https://" + clientAddr(cfg.Listen)

	startChild := func(name string, argv []string) error {
		c, err := logs.start(name, argv)
		if err != nil {
			return err
		}
		children = append(children, c)
		return nil
	}
	if err := startChild("carbide-api", wrap(bin("carbide-api"), "--dev", "--listen", listenAt, "--data-dir", dataDir)); err != nil {
		return err
	}
	client, err := waitAPI(ctx, endpoint, pkiDir, children[0])
	if ctx.Err() != nil {
		return nil // stopped before it served: no error
	}
	if err != nil {
		return err
	}
	logs.printf("carbide-api is serving at %s", endpoint)

	state := State{PID: os.Getpid(), Mode: mode, Endpoint: endpoint, PKIDir: pkiDir}
	if mode == ModeNetns {
		seg, err := labSegment(ctx, client)
		if err != nil {
			return err
		}
		state.Netns, state.Bridge, state.Gateway, state.SegmentID = cfg.Netns, labBridge, labGateway, seg.GetId()
	}
	api := []string{"--pki-dir", pkiDir, "--api-url", apiURL}
	var daemons [][]string
	if mode != ModeAPIOnly {
		iface := labBridge
		if mode == ModeInterface {
			iface = cfg.Interface
		}
		httpURL := "http://" + net.JoinHostPort(addr, httpPort)
		daemons = append(daemons,
			append([]string{"carbide-dhcp", bin("carbide-dhcp"), "--interface", iface, "--tftp-server", addr,
				"--bios-file", "undionly.kpxe", "--efi-x64-file", "snponly.efi", "--ipxe-script-url", httpURL + "/ipxe/{mac}"}, api...),
			append([]string{"carbide-pxe", bin("carbide-pxe"), "--tftp-listen", net.JoinHostPort(addr, "69"),
				"--http-listen", net.JoinHostPort(addr, httpPort), "--public-url", httpURL, "--artifacts-dir", artifacts}, api...),
			append([]string{"carbide-dns", bin("carbide-dns"), "--listen", net.JoinHostPort(addr, "53")}, api...),
		)
	}
	daemons = append(daemons, append([]string{"carbide-bmc", bin("carbide-bmc")}, api...))
	for _, d := range daemons {
		if err := startChild(d[0], wrap(d[1:]...)); err != nil {
			return err
		}
	}
	if mode == ModeNetns {
		if radvd, err := findProgram("radvd", "radvd"); err == nil {
			// Router advertisements spare iPXE a 13 s wait for IPv6.
			conf := filepath.Join(dataDir, "radvd.conf")
			if err := os.WriteFile(conf, []byte(radvdConf), 0o644); err != nil {
				return err
			}
			if err := startChild("radvd", wrap(radvd, "--nodaemon", "--config", conf,
				"--pidfile", filepath.Join(dataDir, "radvd.pid"), "--logmethod", "stderr")); err != nil {
				return err
			}
		} else {
			logs.printf("radvd is not installed (apt-get install radvd): iPXE will wait about 13 s for IPv6 on each boot")
		}
	}
	if err := writeState(dataDir, state); err != nil {
		return err
	}
	logs.printf("Carbide is running: API %s, admin certificate in %s", endpoint, pkiDir)
	switch mode {
	case ModeNetns:
		logs.printf("DHCP, TFTP, HTTP and DNS serve %s/24 on %s in network namespace %s; `make lab` boots a virtual rack on it", labGateway, labBridge, cfg.Netns)
	case ModeInterface:
		logs.printf("DHCP, TFTP, HTTP and DNS serve %s (%s); create a segment for its network", cfg.Interface, addr)
	default:
		logs.printf("carbide-dhcp, carbide-pxe and carbide-dns are not running: they need a network to serve. " +
			"Run `make run` as root (Carbide then makes a lab network in a namespace of its own), or name the interface " +
			"with CARBIDE_INTERFACE=<name> and run as root or with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE " +
			"(DHCP binds port 67 on the interface, TFTP 69, DNS 53)")
	}
	logs.printf("Ctrl-C stops everything")

	exited := make(chan *child, len(children))
	for _, c := range children {
		go func() {
			<-c.done
			exited <- c
		}()
	}
	select {
	case <-ctx.Done():
		logs.printf("stopping (%v)", context.Cause(ctx))
		return nil
	case c := <-exited:
		return fmt.Errorf("%s exited (%v): stopping everything", c.name, c.err)
	}
}

// radvdConf advertises the lab's IPv6 prefix on its bridge.
const radvdConf = `interface br0 {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 10;
	prefix fd00:79::/64 { AdvOnLink on; AdvAutonomous on; };
};
`

// makeNetns creates namespace name with its loopback and the lab bridge
// up. A namespace of that name left by a run that was killed (nothing
// runs in it) is deleted first; one in use is an error.
func makeNetns(name string) error {
	if netnsExists(name) {
		pids, err := netnsPids(name)
		if err != nil {
			return err
		}
		if len(pids) > 0 {
			return fmt.Errorf("network namespace %s exists and processes %v run in it: is another `make run` running? stop it, or name another namespace with --netns", name, pids)
		}
		if err := deleteNetns(name); err != nil {
			return fmt.Errorf("delete the stale network namespace %s: %w", name, err)
		}
	}
	if _, err := runIP("netns", "add", name); err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	for _, args := range [][]string{
		{"link", "set", "dev", "lo", "up"},
		{"link", "add", "name", labBridge, "type", "bridge"},
		{"addr", "add", labGateway + "/24", "dev", labBridge},
		{"-6", "addr", "add", labIPv6, "dev", labBridge, "nodad"},
		{"link", "set", "dev", labBridge, "up"},
	} {
		if _, err := runIP(append([]string{"-n", name}, args...)...); err != nil {
			return errors.Join(err, deleteNetns(name))
		}
	}
	if err := nsenter.Do(name, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		return errors.Join(fmt.Errorf("enable IPv6 forwarding in %s: %w", name, err), deleteNetns(name))
	}
	return nil
}

// forwardDatabase forwards the loopback address of a PostgreSQL URL
// (CARBIDE_DATABASE_URL) from namespace ns to the host's loopback, where
// the database listens, so that the API in ns can use the URL unchanged.
// Other URLs need nothing and get nil.
func forwardDatabase(ns, dbURL string) (*forwarder, error) {
	if dbURL == "" {
		return nil, nil
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, fmt.Errorf("CARBIDE_DATABASE_URL: %w", err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, nil
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	target := net.JoinHostPort(host, port)
	var ln net.Listener
	if err := nsenter.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", target)
		return err
	}); err != nil {
		return nil, fmt.Errorf("forward PostgreSQL into %s: %w", ns, err)
	}
	return forward(ln, target, hostDialer), nil
}

// clientAddr is the address a client on this host dials to reach
// listen: its loopback address when listen is a wildcard (0.0.0.0:1079),
// which the development server certificate always covers.
func clientAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch ip := net.ParseIP(host); {
	case host == "", ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		return net.JoinHostPort("127.0.0.1", port)
	case ip != nil && ip.IsUnspecified():
		return net.JoinHostPort("::1", port)
	}
	return listen
}

// listenCovers reports whether a listener on listen would take addr
// (host:port): the same port on the same host or on a wildcard address.
func listenCovers(listen, addr string) bool {
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	ah, ap, err := net.SplitHostPort(addr)
	if err != nil || lp != ap {
		return false
	}
	lip, aip := net.ParseIP(lh), net.ParseIP(ah)
	switch {
	case lh == "", lip != nil && lip.IsUnspecified():
		return true
	case lip != nil && aip != nil:
		return lip.Equal(aip)
	}
	return lh == ah
}

// interfaceAddr returns the first IPv4 address of the named interface.
func interfaceAddr(name string) (string, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return "", fmt.Errorf("CARBIDE_INTERFACE=%s: %w (`ip link` lists the interfaces)", name, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return "", fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", fmt.Errorf("CARBIDE_INTERFACE=%s has no IPv4 address: give it the address the daemons serve on (ip addr add ...)", name)
}

// waitAPI waits until the API answers an admin's call, and returns an
// admin client; it fails when the API exits first.
func waitAPI(ctx context.Context, endpoint, pkiDir string, api *child) (*carbide.Client, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var lastErr error
	for time.Now().Before(deadline) {
		if api.exited() {
			return nil, fmt.Errorf("carbide-api exited (%v) before it served", api.err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		client, err := AdminClient(endpoint, pkiDir)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = client.Segments.ListSegments(cctx, connect.NewRequest(&networkv1.ListSegmentsRequest{PageSize: 1}))
			cancel()
			if err == nil {
				return client, nil
			}
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	return nil, fmt.Errorf("carbide-api did not answer within 2 minutes: %w", lastErr)
}

// AdminClient returns a client of the API at endpoint with the
// development admin certificate of pkiDir.
func AdminClient(endpoint, pkiDir string) (*carbide.Client, error) {
	for _, f := range []string{"admin.crt", "admin.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(pkiDir, f)); err != nil {
			return nil, fmt.Errorf("the development PKI has no %s yet: %w", f, err)
		}
	}
	return carbide.New(endpoint, carbide.WithClientCertificate(
		filepath.Join(pkiDir, "admin.crt"), filepath.Join(pkiDir, "admin.key"), filepath.Join(pkiDir, "ca.crt")))
}

// labSegment creates the lab's segment, or finds it from an earlier run.
func labSegment(ctx context.Context, client *carbide.Client) (*networkv1.Segment, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := client.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{Segment: &networkv1.Segment{
		Name: "lab", Prefix: labPrefix, Gateway: labGateway, DnsServers: []string{labGateway}, Domain: labDomain,
		Ranges: []*networkv1.AddressRange{{Start: labFirst, End: labLast}},
	}}))
	if err != nil {
		return nil, fmt.Errorf("create the lab segment %s: %w (a segment named lab with other settings, or one overlapping %s, is in the way: delete it, or start over with an empty data directory)", labPrefix, err, labPrefix)
	}
	return resp.Msg.GetSegment(), nil
}
