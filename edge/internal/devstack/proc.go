package devstack

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// logStream is the one output every component writes to: whole lines,
// each prefixed with the component's name.
type logStream struct {
	mu    sync.Mutex
	out   io.Writer
	width int
}

// prefixed returns a writer that writes each line it is given to the
// stream, prefixed with name.
func (s *logStream) prefixed(name string) io.Writer {
	return &lineWriter{stream: s, name: name}
}

// printf writes one line of the supervisor's own.
func (s *logStream) printf(format string, args ...any) {
	s.line("carbide-run", []byte(fmt.Sprintf(format, args...)))
}

func (s *logStream) line(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, "%-*s | %s\n", s.width, name, bytes.TrimRight(b, "\r"))
}

// lineWriter splits what a process writes into lines.
type lineWriter struct {
	stream *logStream
	name   string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.stream.line(w.name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// flush writes what is left of an unterminated last line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.stream.line(w.name, w.buf)
		w.buf = nil
	}
}

// child is a component the supervisor started.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *lineWriter
	done chan struct{}
	err  error
}

// start starts argv as component name, its output on the stream. The
// child is in a process group of its own, so a Ctrl-C at the terminal
// reaches only the supervisor, which stops the children in order; and it
// is killed if the supervisor dies first.
func (s *logStream) start(name string, argv []string) (*child, error) {
	c := &child{name: name, done: make(chan struct{})}
	c.out = s.prefixed(name).(*lineWriter)
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		c.out.flush()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the child has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the child to stop with SIGTERM and kills it if it has not
// stopped within grace.
func (c *child) stop(grace time.Duration) error {
	if c.exited() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within %s and was killed", c.name, grace)
	}
}
