//go:build !linux

package pgtest

import (
	"errors"
	"syscall"
)

// sysProcAttr returns the process attributes for initdb and postgres.
// Running them as another user (needed when we are root) is only supported
// on Linux.
func sysProcAttr(as *runAs) (*syscall.SysProcAttr, error) {
	if as != nil {
		return nil, errors.New("running the postgresql server as another user is only supported on linux; run the tests as a non-root user")
	}
	return &syscall.SysProcAttr{}, nil
}
