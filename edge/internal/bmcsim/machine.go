package bmcsim

import (
	"context"
	"sync"
)

// Redfish reset types the service accepts (ComputerSystem.Reset's
// ResetType), and what bmclib v2.3.4's Redfish provider sends: "on" -> On,
// "off" -> ForceOff, "soft" -> GracefulShutdown, "reset" -> PowerCycle,
// "cycle" -> ForceRestart.
const (
	ResetOn               = "On"
	ResetForceOff         = "ForceOff"
	ResetGracefulShutdown = "GracefulShutdown"
	ResetForceRestart     = "ForceRestart"
	ResetGracefulRestart  = "GracefulRestart"
	ResetPowerCycle       = "PowerCycle"
)

var resetTypes = []string{ResetOn, ResetForceOff, ResetGracefulShutdown, ResetForceRestart, ResetGracefulRestart, ResetPowerCycle}

// Boot is a Redfish boot source override.
type Boot struct {
	// Target is None, Pxe, Hdd or BiosSetup.
	Target string
	// Enabled is Disabled, Once or Continuous.
	Enabled string
	// Mode is Legacy or UEFI.
	Mode string
}

var (
	bootTargets = []string{"None", "Pxe", "Hdd", "BiosSetup"}
	bootEnabled = []string{"Disabled", "Once", "Continuous"}
	bootModes   = []string{"Legacy", "UEFI"}
)

// Machine is the hardware behind one Redfish system.
type Machine interface {
	// PoweredOn reports the power state.
	PoweredOn(ctx context.Context) (bool, error)
	// Reset performs a ComputerSystem.Reset of one of the Reset* types.
	Reset(ctx context.Context, resetType string) error
	// SetBoot sets the boot source override of the next boots.
	SetBoot(ctx context.Context, b Boot) error
}

// MemoryMachine is a Machine that is only state in memory: what a
// benchmark with a thousand BMCs wants. The zero value is powered off.
type MemoryMachine struct {
	mu   sync.Mutex
	on   bool
	boot Boot
}

var _ Machine = (*MemoryMachine)(nil)

// PoweredOn reports the power state.
func (m *MemoryMachine) PoweredOn(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on, nil
}

// Reset turns the machine on (On, the restarts, PowerCycle) or off
// (ForceOff, GracefulShutdown).
func (m *MemoryMachine) Reset(_ context.Context, resetType string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = resetType != ResetForceOff && resetType != ResetGracefulShutdown
	return nil
}

// SetBoot records the boot override.
func (m *MemoryMachine) SetBoot(_ context.Context, b Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

// Boot is the boot override last set.
func (m *MemoryMachine) Boot() Boot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot
}
