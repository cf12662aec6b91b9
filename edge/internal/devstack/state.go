package devstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// stateFile, in the data directory, tells `carbide-run lab` where the
// running stack is. Run writes it once everything started and removes it
// when it stops.
const stateFile = "run.json"

// State is what a running stack tells the lab command.
type State struct {
	// PID is the supervisor's process id.
	PID int `json:"pid"`
	// Mode is "netns", "interface" or "api-only".
	Mode string `json:"mode"`
	// Netns is the network namespace of the lab (mode netns).
	Netns string `json:"netns,omitempty"`
	// Bridge is the lab bridge in Netns.
	Bridge string `json:"bridge,omitempty"`
	// Gateway is the supervisor's address on the bridge, where the
	// daemons listen.
	Gateway string `json:"gateway,omitempty"`
	// SegmentID is the lab segment's id.
	SegmentID string `json:"segment_id,omitempty"`
	// Endpoint is the API's URL on the host.
	Endpoint string `json:"endpoint"`
	// PKIDir holds the development CA and role certificates.
	PKIDir string `json:"pki_dir"`
}

func writeState(dataDir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dataDir, stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", stateFile, err)
	}
	return nil
}

func removeState(dataDir string) {
	_ = os.Remove(filepath.Join(dataDir, stateFile))
}

// ReadState reads the state of the stack running on dataDir, and fails
// with what to do when none runs.
func ReadState(dataDir string) (State, error) {
	path := filepath.Join(dataDir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("no running Carbide uses %s (%s is missing): start it first with `make run` (as root)", dataDir, stateFile)
	}
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("read %s: %w", path, err)
	}
	if s.PID <= 0 || syscall.Kill(s.PID, 0) == syscall.ESRCH {
		return State{}, fmt.Errorf("the Carbide that wrote %s (pid %d) is no longer running: start it with `make run` (as root)", path, s.PID)
	}
	return s, nil
}
