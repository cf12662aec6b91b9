package devstack

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// row is one machine's line of the live view.
type row struct {
	state, address string
}

// watchLab shows each machine's state and the time it took until ctx is
// done or the stack stops (which is no error: Ctrl-C on `make run` stops
// the lab too). On a terminal the view is redrawn in place;
// otherwise each change is a line.
func watchLab(ctx context.Context, client *carbide.Client, cfg LabConfig, st State, vms []*labVM, out io.Writer) error {
	rows := make([]row, len(vms))
	drawn, allReady := false, false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for i, v := range vms {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := client.Machines.GetMachine(cctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: v.id}))
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				continue // the API is stopping, or busy: the checks below tell
			}
			m := resp.Msg.GetMachine()
			now := row{state: stateName(m.GetState())}
			if ifs := m.GetInterfaces(); len(ifs) > 0 {
				now.address = ifs[0].GetAddress()
			}
			if m.GetState() == machinev1.MachineState_MACHINE_STATE_READY && v.readyIn == 0 {
				v.readyIn = m.GetStateTime().AsTime().Sub(v.started)
				if v.readyIn <= 0 {
					v.readyIn = time.Nanosecond // Ready from an earlier lab
				}
			}
			if !cfg.TTY && now != rows[i] {
				fmt.Fprintln(out, line(v, now))
			}
			rows[i] = now
		}
		if cfg.TTY {
			if drawn {
				fmt.Fprintf(out, "\x1b[%dA", len(vms)+1)
			}
			fmt.Fprintf(out, "\x1b[2K%-7s %-18s %-14s %-14s %s\n", "MACHINE", "MAC", "STATE", "ADDRESS", "TIME")
			for i, v := range vms {
				fmt.Fprintf(out, "\x1b[2K%s\n", line(v, rows[i]))
			}
			drawn = true
		}
		if !allReady {
			ready := 0
			for _, v := range vms {
				if v.readyIn > 0 {
					ready++
				}
			}
			if ready == len(vms) {
				allReady = true
				if cfg.TTY {
					drawn = false // the view continues below the message
				}
				fmt.Fprintf(out, "all %d machines are Ready: allocate one with `bin/carbide instance create` (README, \"Try it\"); Ctrl-C stops the rack\n", len(vms))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := ReadState(cfg.DataDir); err != nil || !netnsExists(st.Netns) {
			fmt.Fprintln(out, "carbide-run stopped, so the virtual rack stops too")
			return nil
		}
	}
}

// line is a machine's line: name, MAC, state, address, and how long it
// has been booting, or how long it took to be Ready.
func line(v *labVM, r row) string {
	took := "booting " + time.Since(v.started).Round(time.Second).String()
	switch {
	case v.readyIn == time.Nanosecond:
		took = "Ready before this lab started"
	case v.readyIn > 0:
		took = "Ready in " + v.readyIn.Round(100*time.Millisecond).String()
	}
	addr := r.address
	if addr == "" {
		addr = "-"
	}
	return fmt.Sprintf("%-7s %-18s %-14s %-14s %s", v.name, v.mac, r.state, addr, took)
}

// stateName is a machine state as the CLI prints it: ready, discovered.
func stateName(s machinev1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}
