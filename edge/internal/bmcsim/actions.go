package bmcsim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Action is one thing a simulated BMC did to its machine, as its actions
// log records it.
type Action struct {
	// Time is when the BMC acted.
	Time time.Time
	// Name says what it did. The IPMI simulator writes "power on",
	// "power off", "reset", "shutdown" (soft off) and "boot pxe" or
	// "boot default"; the Redfish service writes "reset <ResetType>" and
	// "boot <Target> <Enabled> <Mode>".
	Name string
}

// String is the action as one log line.
func (a Action) String() string {
	return a.Time.UTC().Format(time.RFC3339Nano) + " " + a.Name
}

// readActions parses an actions log: one "<RFC 3339 time> <name>" a line.
func readActions(path string) ([]Action, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read actions log: %w", err)
	}
	var out []Action
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		ts, name, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("parse actions log line %q: no action", sc.Text())
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, fmt.Errorf("parse actions log line %q: %w", sc.Text(), err)
		}
		out = append(out, Action{Time: at, Name: name})
	}
	return out, sc.Err()
}

// Names lists the names of actions, in order: what a test usually compares.
func Names(actions []Action) []string {
	out := make([]string, len(actions))
	for i, a := range actions {
		out[i] = a.Name
	}
	return out
}

// actionLog is an in-memory actions log, safe for concurrent use.
type actionLog struct {
	mu      sync.Mutex
	actions []Action
}

func (l *actionLog) add(name string) {
	l.mu.Lock()
	l.actions = append(l.actions, Action{Time: time.Now(), Name: name})
	l.mu.Unlock()
}

func (l *actionLog) list() []Action {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Action(nil), l.actions...)
}
