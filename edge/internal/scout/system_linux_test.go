package scout

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConsoles(t *testing.T) {
	t.Parallel()
	// /proc/consoles of "console=ttyS0,115200 console=tty0", plus a
	// console that cannot be written to and a netconsole.
	in := `tty0                 -WU (EC p  )    4:1
ttyS0                -W- (E  p a)    4:64
ttyprintk            --- (   p  )  5:3
netcon0              -W- (E     )
`
	want := []string{"tty0", "ttyS0", "netcon0"}
	if diff := cmp.Diff(want, parseConsoles(in)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := parseConsoles("../etc/x -W- (E)\n\n"); len(got) != 0 {
		t.Errorf("got %q, want nothing for a name that is not a device", got)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("gone") }

func TestFanout(t *testing.T) {
	t.Parallel()
	var a, b bytes.Buffer
	n, err := fanout{&a, failingWriter{}, &b}.Write([]byte("line\n"))
	if n != 5 || err != nil || a.String() != "line\n" || b.String() != "line\n" {
		t.Errorf("wrote %d, %v; a %q, b %q", n, err, a.String(), b.String())
	}
}
