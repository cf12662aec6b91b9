package dhcp

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// holdTime is how long an address offered without a write stays held for
// its MAC: as long as carbide-dhcp remembers its offers (offerTTL of
// edge/internal/dhcpd), within which clients send the DHCPREQUEST that
// accepts one.
const holdTime = 10 * time.Second

// maxHolds bounds the addresses held at once by one API process; an offer
// beyond it is made with a write, as a request without offer would be.
const maxHolds = 1 << 16

// holds are the addresses this API process offered without writing them
// (LeaseRequest.offer), by segment: each held for its MAC for holdTime, so
// that the process offers no other MAC the same address meanwhile and
// offers the MAC the same address again. They bind no other replica: the
// leases table's unique indexes decide which MAC a contested address goes
// to, at the DHCPREQUEST. Expired holds are dropped when met, and all of
// them when the map is full; nothing runs in the background.
type holds struct {
	mu    sync.Mutex
	segs  map[uuid.UUID]*segmentHolds
	count int
}

type segmentHolds struct {
	byMAC  map[string]hold
	byAddr map[string]string // address -> MAC
}

type hold struct {
	addr  string
	until time.Time
}

func newHolds() *holds {
	return &holds{segs: make(map[uuid.UUID]*segmentHolds)}
}

// held returns the address held for mac on seg, if any.
func (h *holds) held(seg uuid.UUID, mac string, now time.Time) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sh := h.segs[seg]
	if sh == nil {
		return "", false
	}
	v, ok := sh.byMAC[mac]
	if !ok {
		return "", false
	}
	if !now.Before(v.until) {
		h.dropLocked(seg, sh, mac, v)
		return "", false
	}
	return v.addr, true
}

// heldByOther reports whether addr on seg is held for another MAC than mac.
func (h *holds) heldByOther(seg uuid.UUID, mac, addr string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	sh := h.segs[seg]
	if sh == nil {
		return false
	}
	other, ok := sh.byAddr[addr]
	if !ok || other == mac {
		return false
	}
	if v := sh.byMAC[other]; !now.Before(v.until) {
		h.dropLocked(seg, sh, other, v)
		return false
	}
	return true
}

// avoid returns heldByOther for mac on seg at now, as ipam takes it.
func (h *holds) avoid(seg uuid.UUID, mac string, now time.Time) func(string) bool {
	return func(addr string) bool { return h.heldByOther(seg, mac, addr, now) }
}

// claim holds addr on seg for mac until now+holdTime, in place of what mac
// held there before; it returns false, and holds nothing, when another
// MAC holds addr or the map is full.
func (h *holds) claim(seg uuid.UUID, mac, addr string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	sh := h.segs[seg]
	if sh == nil {
		sh = &segmentHolds{byMAC: make(map[string]hold), byAddr: make(map[string]string)}
		h.segs[seg] = sh
	}
	if other, ok := sh.byAddr[addr]; ok && other != mac {
		v := sh.byMAC[other]
		if now.Before(v.until) {
			return false
		}
		h.dropLocked(seg, sh, other, v)
	}
	if v, ok := sh.byMAC[mac]; ok {
		h.dropLocked(seg, sh, mac, v)
	}
	if h.count >= maxHolds {
		h.sweepLocked(now)
		if h.count >= maxHolds {
			return false
		}
	}
	h.segs[seg] = sh // again, if dropping its last hold removed it
	sh.byMAC[mac] = hold{addr: addr, until: now.Add(holdTime)}
	sh.byAddr[addr] = mac
	h.count++
	return true
}

// drop forgets what is held for mac on seg.
func (h *holds) drop(seg uuid.UUID, mac string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sh := h.segs[seg]; sh != nil {
		if v, ok := sh.byMAC[mac]; ok {
			h.dropLocked(seg, sh, mac, v)
		}
	}
}

// dropLocked forgets mac's hold v on seg; h.mu is held.
func (h *holds) dropLocked(seg uuid.UUID, sh *segmentHolds, mac string, v hold) {
	delete(sh.byMAC, mac)
	if sh.byAddr[v.addr] == mac {
		delete(sh.byAddr, v.addr)
	}
	h.count--
	if len(sh.byMAC) == 0 {
		delete(h.segs, seg)
	}
}

// sweepLocked drops every expired hold; h.mu is held.
func (h *holds) sweepLocked(now time.Time) {
	for seg, sh := range h.segs {
		for mac, v := range sh.byMAC {
			if !now.Before(v.until) {
				h.dropLocked(seg, sh, mac, v)
			}
		}
	}
}

// size is how many holds are kept, expired ones included.
func (h *holds) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}
