package dhcp

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestHolds(t *testing.T) {
	t.Parallel()
	h := newHolds()
	seg, other := uuid.New(), uuid.New()
	now := time.Now()
	const a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

	if !h.claim(seg, a, "10.0.0.10", now) {
		t.Fatal("claim of a free address failed")
	}
	if h.claim(seg, b, "10.0.0.10", now.Add(time.Second)) {
		t.Error("two MACs hold 10.0.0.10")
	}
	if !h.claim(other, b, "10.0.0.10", now) {
		t.Error("an address held on one segment cannot be held on another")
	}
	if got, ok := h.held(seg, a, now.Add(time.Second)); !ok || got != "10.0.0.10" {
		t.Errorf("held = %q %v, want 10.0.0.10", got, ok)
	}
	if !h.heldByOther(seg, b, "10.0.0.10", now) || h.heldByOther(seg, a, "10.0.0.10", now) {
		t.Error("heldByOther does not tell the holder from the others")
	}

	// A MAC claiming again moves its hold.
	if !h.claim(seg, a, "10.0.0.11", now) || h.heldByOther(seg, b, "10.0.0.10", now) {
		t.Error("the MAC's earlier hold stayed after it claimed another address")
	}

	// Expired holds bind nobody.
	later := now.Add(holdTime)
	if _, ok := h.held(seg, a, later); ok {
		t.Error("a hold outlived holdTime")
	}
	if !h.claim(seg, b, "10.0.0.11", later) {
		t.Error("an expired hold kept another MAC from the address")
	}
	h.drop(seg, b)
	h.drop(other, b)
	if n := h.size(); n != 0 {
		t.Errorf("%d holds left after dropping all, want 0", n)
	}

	// The map is bounded: when full, expired holds go; unexpired ones
	// refuse new claims.
	for i := range maxHolds {
		if !h.claim(seg, fmt.Sprintf("mac-%d", i), fmt.Sprintf("a-%d", i), now) {
			t.Fatalf("claim %d failed before the map was full", i)
		}
	}
	if h.claim(seg, "one-more", "a-x", now) {
		t.Error("a claim beyond maxHolds succeeded")
	}
	if !h.claim(seg, "one-more", "a-x", later) || h.size() != 1 {
		t.Errorf("a claim once the others expired: %d holds, want only it", h.size())
	}
}
