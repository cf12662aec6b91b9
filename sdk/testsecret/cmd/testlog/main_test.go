package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream is `go test -json` output of one package whose test logged s.
func stream(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	for _, e := range []event{
		{Action: "run", Package: "p", Test: "TestX"},
		{Action: "output", Package: "p", Test: "TestX", Output: "=== RUN   TestX\n"},
		{Action: "output", Package: "p", Test: "TestX", Output: "    x_test.go:1: " + s + "\n"},
		{Action: "pass", Package: "p", Test: "TestX"},
		{Action: "output", Package: "p", Output: "ok  \tp\t0.01s\n"},
		{Action: "pass", Package: "p"},
	} {
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestTestlog(t *testing.T) {
	t.Parallel()
	key := "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
	tests := map[string]struct {
		logged  string
		leaks   bool
		secrets []string
	}{
		"nothing secret":          {logged: "store open database=postgres://postgres:****@127.0.0.1/db", secrets: []string{"pl4nted-password"}},
		"a planted password":      {logged: "store open database=postgres://postgres:pl4nted-password@127.0.0.1/db", secrets: []string{"pl4nted-password"}, leaks: true},
		"a line of a key":         {logged: "key:\n-----BEGIN PRIVATE KEY-----\n" + key + "\n", secrets: []string{key}, leaks: true},
		"a secret quoted in JSON": {logged: `{"token":"eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}`, secrets: []string{"eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}, leaks: true},
		"no secrets registered":   {logged: "pl4nted-password"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			secrets := filepath.Join(dir, "secrets")
			var list strings.Builder
			for _, s := range tc.secrets {
				list.WriteString(hex.EncodeToString([]byte(s)) + "\n")
			}
			if err := os.WriteFile(secrets, []byte(list.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			in := stream(t, tc.logged)
			err := run(strings.NewReader(in), &out, filepath.Join(dir, "log"), secrets)
			if got := err != nil; got != tc.leaks {
				t.Errorf("run returned %v, want a failure: %v", err, tc.leaks)
			}
			for _, s := range tc.secrets {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("the failure %q repeats the secret", err)
				}
			}
			if got := out.String(); got != "ok  \tp\t0.01s\n" {
				t.Errorf("printed %q, want only the package result", got)
			}
			kept, rerr := os.ReadFile(filepath.Join(dir, "log"))
			if rerr != nil || string(kept) != in {
				t.Errorf("the log file holds %q (%v), want the whole input", kept, rerr)
			}
		})
	}
}
