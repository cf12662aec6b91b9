package xfr

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"github.com/carbide-dev/carbide/sdk/testsecret"
)

func TestParseKeyFile(t *testing.T) {
	t.Parallel()
	testsecret.Register(t, keySecret, otherKey)
	for name, tc := range map[string]struct {
		in      string
		secrets map[string]string
		algs    map[string]string
		errs    []string // each must be in the error; none: no error
	}{
		"keys and comments": {
			in:      "# secondaries\n\nbind-secondary hmac-sha256 " + keySecret + "  # ns2\nKnot.Example. HMAC-SHA512. " + otherKey + "\n",
			secrets: map[string]string{"bind-secondary.": keySecret, "knot.example.": otherKey},
			algs:    map[string]string{"bind-secondary.": dns.HmacSHA256, "knot.example.": dns.HmacSHA512},
		},
		"empty": {in: "# nothing yet\n", secrets: map[string]string{}, algs: map[string]string{}},
		"every bad line": {
			in: "a. hmac-sha256\n" +
				"b. hmac-md5 " + keySecret + "\n" +
				"c. hmac-sha256 not*base64\n" +
				"d. hmac-sha256 " + keySecret + "\n" +
				"D. hmac-sha512 " + otherKey + "\n",
			errs: []string{"line 1: want", "line 2: key b.: algorithm \"hmac-md5\"", "line 3: key c.: the secret is not base64", "line 5: key d. is defined twice"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			secrets, algs, err := ParseKeyFile(strings.NewReader(tc.in))
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				for _, s := range []string{keySecret, otherKey} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error shows a secret: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.secrets, secrets); d != "" {
				t.Errorf("secrets (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.algs, algs); d != "" {
				t.Errorf("algorithms (-want +got):\n%s", d)
			}
		})
	}
}
