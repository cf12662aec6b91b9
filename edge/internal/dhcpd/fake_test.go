package dhcpd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dhcpv1 "github.com/carbide-dev/carbide/gen/carbide/dhcp/v1"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fakeAPI is a LeaseAPI that records its calls. By default Lease leases
// leaseAddr (10.0.0.50) for an hour with full network options.
type fakeAPI struct {
	// leaseFunc, if set, answers Lease instead of the default.
	leaseFunc func(context.Context, *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error)
	// err, if set, is what every call returns.
	err error
	// block makes every call wait for its context to end.
	block bool
	// noRecord keeps calls from being recorded, for fuzzing and
	// benchmarks.
	noRecord bool

	mu       sync.Mutex
	leases   []*dhcpv1.LeaseRequest
	releases []*dhcpv1.ReleaseRequest
	declines []*dhcpv1.DeclineRequest
	informs  []*dhcpv1.InformRequest
}

var _ LeaseAPI = (*fakeAPI)(nil)

const leaseAddr = "10.0.0.50"

func segmentOptions() *dhcpv1.NetworkOptions {
	return &dhcpv1.NetworkOptions{
		SegmentId:    "0b2f5c1e-7d1e-4f3a-9a43-1f0c2b7d6e01",
		PrefixLength: 24,
		Gateway:      "10.0.0.1",
		DnsServers:   []string{"10.0.0.2", "10.0.0.3"},
		Domain:       "lab.example",
		Mtu:          9000,
		NtpServers:   []string{"10.0.0.4"},
	}
}

func (f *fakeAPI) wait(ctx context.Context) error {
	if f.block {
		<-ctx.Done()
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	return f.err
}

func (f *fakeAPI) Lease(ctx context.Context, req *dhcpv1.LeaseRequest) (*dhcpv1.LeaseResponse, error) {
	if !f.noRecord {
		f.mu.Lock()
		f.leases = append(f.leases, proto.Clone(req).(*dhcpv1.LeaseRequest))
		f.mu.Unlock()
	}
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	if f.leaseFunc != nil {
		return f.leaseFunc(ctx, req)
	}
	return &dhcpv1.LeaseResponse{
		Address:       leaseAddr,
		LeaseDuration: durationpb.New(time.Hour),
		Hostname:      "node-1",
		MachineId:     "6d3c9b8e-2a8f-4c5e-9a4b-3c2d1e0f9a8b",
		Options:       segmentOptions(),
	}, nil
}

func (f *fakeAPI) Release(ctx context.Context, req *dhcpv1.ReleaseRequest) error {
	if !f.noRecord {
		f.mu.Lock()
		f.releases = append(f.releases, proto.Clone(req).(*dhcpv1.ReleaseRequest))
		f.mu.Unlock()
	}
	return f.wait(ctx)
}

func (f *fakeAPI) Decline(ctx context.Context, req *dhcpv1.DeclineRequest) error {
	if !f.noRecord {
		f.mu.Lock()
		f.declines = append(f.declines, proto.Clone(req).(*dhcpv1.DeclineRequest))
		f.mu.Unlock()
	}
	return f.wait(ctx)
}

func (f *fakeAPI) Inform(ctx context.Context, req *dhcpv1.InformRequest) (*dhcpv1.InformResponse, error) {
	if !f.noRecord {
		f.mu.Lock()
		f.informs = append(f.informs, proto.Clone(req).(*dhcpv1.InformRequest))
		f.mu.Unlock()
	}
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	return &dhcpv1.InformResponse{Options: segmentOptions()}, nil
}

func (f *fakeAPI) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.leases) + len(f.releases) + len(f.declines) + len(f.informs)
}

var (
	testMAC   = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testIface = Interface{Name: "eth1", Addr: netip.MustParseAddr("10.0.0.1")}
	bcast68   = &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Interfaces = []string{"eth1"}
	cfg.APIURL = "http://127.0.0.1:1"
	cfg.APITimeout = time.Second
	return cfg
}

// testHandler is a Handler over api with its own metrics registry, logging
// at debug level to log (nil: no logging at all).
func testHandler(t testing.TB, cfg Config, api LeaseAPI, log io.Writer) (*Handler, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	if log != nil {
		logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return NewHandler(&cfg, api, m, logger), m
}

// packet builds a request of type mt from testMAC.
func packet(t testing.TB, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	p, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(testMAC),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, 4}),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// onWire returns p as a receiver reads it: serialized and parsed again.
func onWire(t testing.TB, p *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	if p == nil {
		return nil
	}
	q, err := dhcpv4.FromBytes(p.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return q
}

func ip(s string) net.IP { return net.ParseIP(s).To4() }

func withOpt(code dhcpv4.OptionCode, v []byte) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptGeneric(code, v))
}

func counter(t testing.TB, v *prometheus.CounterVec, label string) float64 {
	t.Helper()
	return testutil.ToFloat64(v.WithLabelValues(label))
}
