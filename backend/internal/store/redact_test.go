package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3t-Pw"
	testsecret.Register(t, pw)
	tests := map[string]struct {
		in   string
		keep []string // what must still show
	}{
		"user info":            {in: "postgres://carbide:" + pw + "@db:5432/carbide", keep: []string{"carbide:****@db:5432/carbide"}},
		"escaped user info":    {in: "postgres://carbide:" + pw + "%2F%40@db/carbide", keep: []string{"carbide:****@db"}},
		"password parameter":   {in: "postgres://carbide@db/carbide?sslmode=verify-full&password=" + pw, keep: []string{"sslmode=verify-full", "password=****"}},
		"sslpassword":          {in: "postgresql://carbide@db/carbide?sslpassword=" + pw + "&sslcert=/etc/c.crt", keep: []string{"sslpassword=****", "sslcert=/etc/c.crt"}},
		"sslkey":               {in: "postgres://carbide@db/carbide?sslkey=" + pw, keep: []string{"sslkey=****"}},
		"upper-case parameter": {in: "postgres://carbide@db/carbide?PassWord=" + pw, keep: []string{"PassWord=****"}},
		"escaped parameter":    {in: "postgres://carbide@db/carbide?pass%77ord=" + pw, keep: []string{"=****"}},
		"both":                 {in: "postgres://carbide:" + pw + "@db/carbide?password=" + pw, keep: []string{"carbide:****@db/carbide?password=****"}},
		"fragment":             {in: "postgres://carbide@db/carbide#" + pw, keep: []string{"postgres://carbide@db/carbide"}},
		"multiple hosts":       {in: "postgres://carbide:" + pw + "@db1:5432,db2:5432/carbide", keep: []string{"db1:5432,db2:5432"}},
		"unparsable URL":       {in: "postgres://carbide:" + pw + "@db:port/carbide", keep: []string{"hidden"}},
		"key=value":            {in: "host=db user=carbide password=" + pw + " dbname=carbide", keep: []string{"host=db user=carbide password=**** dbname=carbide"}},
		"quoted key=value":     {in: "host=db password = '" + pw + " \\' x' sslpassword=" + pw + " dbname=carbide", keep: []string{"host=db password=**** sslpassword=**** dbname=carbide"}},
		"unterminated quote":   {in: "host=db password='" + pw, keep: []string{"hidden"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := Redact(tc.in)
			if strings.Contains(got, pw) || strings.Contains(got, "s3cr3t") {
				t.Errorf("Redact(%q) = %q, which shows the password", tc.in, got)
			}
			for _, k := range tc.keep {
				if !strings.Contains(got, k) {
					t.Errorf("Redact(%q) = %q, want it to show %q", tc.in, got, k)
				}
			}
		})
	}
}

// TestOpenHidesPassword checks that neither the error nor the log of a
// failed connection shows the password, wherever the URL holds it.
func TestOpenHidesPassword(t *testing.T) {
	t.Parallel()
	const pw = "0pen-s3cr3t"
	testsecret.Register(t, pw)
	for name, dbURL := range map[string]string{
		// Port 1 of the loopback address: nothing listens there.
		"user info":   "postgres://carbide:" + pw + "@127.0.0.1:1/carbide?connect_timeout=5",
		"parameter":   "postgres://carbide@127.0.0.1:1/carbide?connect_timeout=5&password=" + pw,
		"sslpassword": "postgres://carbide@127.0.0.1:1/carbide?connect_timeout=5&sslmode=disable&sslpassword=" + pw,
		"bad option":  "postgres://carbide@127.0.0.1:1/carbide?connect_timeout=x&password=" + pw,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			st, err := Open(context.Background(), Config{DatabaseURL: dbURL}, slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil {
				st.Close()
				t.Fatal("Open succeeded with nothing listening")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(logs.String(), pw) {
				t.Errorf("the password shows in the error %q or the log %q", err, logs.String())
			}
			if !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error %q does not say which server failed", err)
			}
		})
	}
}

func TestScrubKeepsChain(t *testing.T) {
	t.Parallel()
	base := errors.New("cannot parse `postgres://u@h/d?password=zz9`: bad")
	err := scrub(base, "postgres://u@h/d?password=zz9")
	if strings.Contains(err.Error(), "zz9") || !errors.Is(err, base) {
		t.Errorf("scrub gave %q (wrapping the original: %v)", err, errors.Is(err, base))
	}
}
