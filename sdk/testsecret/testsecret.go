// Package testsecret keeps a list of the secrets a test run uses —
// database passwords, JWTs, agent tokens, private keys — so that the run's
// whole output can be checked for them: `make go-test` runs the tests with
// CARBIDE_TEST_SECRETS naming the list, and cmd/testlog fails the build
// when any secret on it shows in the output (a server's log written to the
// test output, a t.Log of a token).
package testsecret

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// EnvFile names the environment variable holding the path of the list.
// Register does nothing when it is unset, as under a plain `go test`.
const EnvFile = "CARBIDE_TEST_SECRETS"

// MinLen is the length below which a string is too short to look for: it
// would turn up by chance.
const MinLen = 8

var mu sync.Mutex

// Register adds secrets to the run's list. A PEM block counts as each of
// the base64 lines of its body, so that a piece of a key shows too.
func Register(t testing.TB, secrets ...string) {
	t.Helper()
	path := os.Getenv(EnvFile)
	if path == "" {
		return
	}
	var b strings.Builder
	for _, s := range secrets {
		for _, piece := range pieces(s) {
			b.WriteString(hex.EncodeToString([]byte(piece)) + "\n")
		}
	}
	if b.Len() == 0 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("testsecret: open the list of secrets (%s): %v", EnvFile, err)
	}
	// One write with O_APPEND: the test binaries of several packages
	// append at once.
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatalf("testsecret: add to the list of secrets: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("testsecret: add to the list of secrets: %v", err)
	}
}

// pieces are the strings to look for of one secret.
func pieces(s string) []string {
	if !strings.Contains(s, "-----BEGIN ") {
		if len(s) < MinLen {
			return nil
		}
		return []string{s}
	}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if len(line) >= MinLen && !strings.HasPrefix(line, "-----") && !strings.Contains(line, ":") {
			out = append(out, line)
		}
	}
	return out
}

// Load reads the list a run wrote; a missing file is an empty list.
func Load(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		b, err := hex.DecodeString(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s: a line that is not hex: %w", path, err)
		}
		if s := string(b); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// Password returns a fresh random password, registered: for URLs of
// throwaway database servers that trust every local connection and ignore
// it, so that where the URL goes — into the logs of the servers under
// test — can be checked for it.
func Password(t testing.TB) string {
	t.Helper()
	pw := "test-pw-" + rand.Text()
	Register(t, pw)
	return pw
}

// RegisterFiles registers the content of each file that pattern
// (filepath.Glob) matches, such as the private keys of a development PKI.
func RegisterFiles(t testing.TB, pattern string) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatalf("testsecret: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("testsecret: %v", err)
		}
		Register(t, string(b))
	}
}
