package dhcpd

import (
	"net/netip"
	"sync"
	"time"
)

// offerTTL is how long after an OFFER the daemon ACKs the matching
// DHCPREQUEST (SELECTING) itself. Clients send it at once: iPXE, EDK2 and
// ISC dhclient within a second or two of the OFFER.
const offerTTL = 10 * time.Second

// maxOffers bounds the offers remembered at once; beyond it a REQUEST
// simply asks the API.
const maxOffers = 1 << 16

// offers remembers, for a few seconds, what this daemon offered. Most
// offers are tentative: the API chose the address without writing it
// (LeaseRequest.offer), and the REQUEST that accepts one asks the API to
// lease it. An offer of a lease the client holds already (an unexpired one
// handed out again) is not: the REQUEST that accepts it needs no second
// call, and the daemon ACKs it with the lease's remaining time. This is
// the only state the daemon keeps, and it adds nothing to what the API
// decided: another replica asked by the same client asks the API.
type offers struct {
	mu sync.Mutex
	m  map[string]offer // by MAC
}

type offer struct {
	lease   lease
	expires time.Time // of the lease
	until   time.Time // of the offer
}

func newOffers() *offers {
	return &offers{m: make(map[string]offer)}
}

// put remembers that mac was offered l at now.
func (o *offers) put(mac string, l lease, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.m) >= maxOffers {
		for k, v := range o.m {
			if !now.Before(v.until) {
				delete(o.m, k)
			}
		}
		if len(o.m) >= maxOffers {
			return
		}
	}
	o.m[mac] = offer{lease: l, expires: now.Add(l.duration), until: now.Add(offerTTL)}
}

// take returns and forgets the lease offered to mac if it is for addr and
// was offered less than offerTTL ago, with its duration cut to what is
// left of it.
func (o *offers) take(mac string, addr netip.Addr, now time.Time) (lease, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.m[mac]
	if !ok {
		return lease{}, false
	}
	delete(o.m, mac)
	left := v.expires.Sub(now)
	if v.lease.addr != addr || !now.Before(v.until) || left < time.Minute {
		return lease{}, false
	}
	l := v.lease
	l.duration = left
	return l, true
}

// forget drops what was offered to mac.
func (o *offers) forget(mac string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, mac)
}
