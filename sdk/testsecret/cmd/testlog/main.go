// Command testlog reads the output of `go test -json` on its standard
// input, keeps all of it in a file, prints it as `go test` would without
// -v (package results, and the output of failed tests only), and fails
// when a secret the tests registered (see package testsecret) shows
// anywhere in it.
//
//	go test -json ./... 2>&1 | testlog -log .build/go-test.json -secrets .build/test-secrets
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

func main() {
	logPath := flag.String("log", "", "file to keep the whole output in (required)")
	secretsPath := flag.String("secrets", "", "the list of secrets the tests registered (required)")
	flag.Parse()
	if *logPath == "" || *secretsPath == "" {
		fmt.Fprintln(os.Stderr, "testlog: -log and -secrets are required")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout, *logPath, *secretsPath); err != nil {
		fmt.Fprintf(os.Stderr, "testlog: %v\n", err)
		os.Exit(1)
	}
}

// event is one line of `go test -json`.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func run(in io.Reader, out io.Writer, logPath, secretsPath string) error {
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	text, err := relay(io.TeeReader(in, logFile), out)
	if err != nil {
		return err
	}
	if err := logFile.Close(); err != nil {
		return err
	}
	secrets, err := testsecret.Load(secretsPath)
	if err != nil {
		return err
	}
	return check(text, secrets)
}

// relay prints the stream as `go test` without -v would and returns the
// text of all of it, by package.
func relay(in io.Reader, out io.Writer) (map[string]*strings.Builder, error) {
	text := map[string]*strings.Builder{}
	held := map[string]*strings.Builder{} // output of running tests
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		var e event
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
			// Not an event: say, a message of go itself.
			fmt.Fprintln(out, line)
			add(text, "", line+"\n")
			continue
		}
		add(text, e.Package, e.Output)
		key := e.Package + " " + e.Test
		switch {
		case e.Test == "" && e.Output == "PASS\n":
			// Printed under -v only.
		case e.Test == "" && e.Output != "":
			fmt.Fprint(out, e.Output)
		case e.Action == "output":
			add(held, key, e.Output)
		case e.Action == "fail":
			if b := held[key]; b != nil {
				fmt.Fprint(out, b.String())
			}
			delete(held, key)
		case e.Action == "pass" || e.Action == "skip":
			delete(held, key)
		}
	}
	return text, sc.Err()
}

func add(m map[string]*strings.Builder, key, s string) {
	if s == "" {
		return
	}
	if m[key] == nil {
		m[key] = &strings.Builder{}
	}
	m[key].WriteString(s)
}

// check fails when a secret shows in the text; it names the secret by its
// first characters only.
func check(text map[string]*strings.Builder, secrets []string) error {
	var found []string
	for pkg, b := range text {
		s := b.String()
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				found = append(found, fmt.Sprintf("%s: a secret of %d characters starting %q", orNone(pkg), len(secret), secret[:4]))
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	sort.Strings(found)
	return errors.New("the test output shows secrets the tests registered (passwords, tokens, keys must never be logged):\n  " + strings.Join(found, "\n  "))
}

func orNone(pkg string) string {
	if pkg == "" {
		return "(outside any package)"
	}
	return pkg
}
