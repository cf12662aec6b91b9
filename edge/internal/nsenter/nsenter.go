// Package nsenter runs code inside a named network namespace, the kind `ip
// netns add` makes: carbide-run's lab uses it for the API's forwarder, and
// the end-to-end tests for the sockets they open in their namespaces.
package nsenter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns add` mounts the namespaces it names.
const Dir = "/run/netns"

// Do runs fn on an OS thread that has entered namespace name: a socket fn
// opens belongs to that namespace for its whole life, whichever thread
// uses it later. The thread returns to its own namespace afterwards; if it
// cannot, it stays locked and ends with its goroutine.
func Do(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join(Dir, name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", name, err))
			return // the thread stays locked, and exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
