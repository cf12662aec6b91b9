package pgtest

import "syscall"

// sysProcAttr returns the process attributes for initdb and postgres: they
// run as as (when not nil) and are killed with SIGKILL when the thread that
// started them dies. Go only ends OS threads that are locked to a goroutine
// which exits, so in practice this is when the calling process dies.
func sysProcAttr(as *runAs) (*syscall.SysProcAttr, error) {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if as != nil {
		attr.Credential = &syscall.Credential{Uid: as.uid, Gid: as.gid}
	}
	return attr, nil
}
