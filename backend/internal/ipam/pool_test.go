package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func TestPoolWalk(t *testing.T) {
	t.Parallel()
	pool := &Pool{
		Prefix:  netip.MustParsePrefix("10.0.0.0/29"),
		Gateway: netip.MustParseAddr("10.0.0.1"),
		Ranges: []Range{
			{Start: netip.MustParseAddr("10.0.0.0"), End: netip.MustParseAddr("10.0.0.3")},
			{Start: netip.MustParseAddr("10.0.0.5"), End: netip.MustParseAddr("10.0.0.7")},
		},
		Reserved: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.6"): true},
	}
	want := map[string]bool{"10.0.0.2": true, "10.0.0.3": true, "10.0.0.5": true}
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "02:00:00:00:00:ff"} {
		seen := map[string]bool{}
		for a := range pool.Walk(mac) {
			if seen[a.String()] {
				t.Errorf("Walk(%s) yielded %s twice", mac, a)
			}
			seen[a.String()] = true
			if !want[a.String()] {
				t.Errorf("Walk(%s) yielded %s, which is excluded or outside the ranges", mac, a)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("Walk(%s) yielded %v, want each of %v once", mac, seen, want)
		}
	}
	first := func(mac string) netip.Addr {
		for a := range pool.Walk(mac) {
			return a
		}
		return netip.Addr{}
	}
	if first("52:54:00:00:00:01") != first("52:54:00:00:00:01") {
		t.Error("Walk does not start at the same address for the same MAC")
	}
}

func TestPoolLeasable(t *testing.T) {
	t.Parallel()
	pool := &Pool{
		Prefix:   netip.MustParsePrefix("192.168.1.0/24"),
		Gateway:  netip.MustParseAddr("192.168.1.1"),
		Ranges:   []Range{{Start: netip.MustParseAddr("192.168.1.1"), End: netip.MustParseAddr("192.168.1.255")}},
		Reserved: map[netip.Addr]bool{netip.MustParseAddr("192.168.1.50"): true},
	}
	tests := map[string]struct {
		addr string
		want bool
	}{
		"in range":          {"192.168.1.10", true},
		"gateway":           {"192.168.1.1", false},
		"broadcast":         {"192.168.1.255", false},
		"reserved":          {"192.168.1.50", false},
		"outside the range": {"192.168.2.10", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := pool.Leasable(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Errorf("Leasable(%s) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"10.0.0.0/24":    "10.0.0.255",
		"10.0.0.0/30":    "10.0.0.3",
		"172.16.0.0/12":  "172.31.255.255",
		"192.168.4.0/22": "192.168.7.255",
	}
	for prefix, want := range tests {
		if got := Broadcast(netip.MustParsePrefix(prefix)).String(); got != want {
			t.Errorf("Broadcast(%s) = %s, want %s", prefix, got, want)
		}
	}
}

// TestPoolWalkRanges checks that the ranges of a walk, less the excluded
// addresses, list the addresses of the walk in its order.
func TestPoolWalkRanges(t *testing.T) {
	t.Parallel()
	pool := &Pool{
		Prefix:  netip.MustParsePrefix("10.0.0.0/24"),
		Gateway: netip.MustParseAddr("10.0.0.1"),
		Ranges: []Range{
			{Start: netip.MustParseAddr("10.0.0.1"), End: netip.MustParseAddr("10.0.0.9")},
			{Start: netip.MustParseAddr("10.0.0.50"), End: netip.MustParseAddr("10.0.0.50")},
			{Start: netip.MustParseAddr("10.0.0.20"), End: netip.MustParseAddr("10.0.0.30")},
		},
		Reserved: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.25"): true},
	}
	for i := range 200 {
		mac := fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		var want, got []netip.Addr
		for a := range pool.Walk(mac) {
			want = append(want, a)
		}
		for _, r := range pool.WalkRanges(mac) {
			for a := r.Start; a.Compare(r.End) <= 0; a = a.Next() {
				if !pool.Excluded(a) {
					got = append(got, a)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("WalkRanges(%s) = %v\nlists %v,\nwant the walk %v", mac, pool.WalkRanges(mac), got, want)
		}
	}
}
