package apiserver

import (
	"strings"
	"testing"
)

// TestValidateMode checks that exactly one way of serving must be chosen,
// and that contradictory flags are refused with a message naming them.
func TestValidateMode(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cfg       Config
		noDataDir bool
		want      string // "" for valid
	}{
		"dev":                  {cfg: Config{Dev: true}, want: ""},
		"certificate":          {cfg: Config{TLSCert: "s.crt", TLSKey: "s.key"}, want: ""},
		"insecure plaintext":   {cfg: Config{InsecurePlaintext: true}, want: ""},
		"dev with a client CA": {cfg: Config{Dev: true, ClientCA: "ca.crt"}, want: ""},
		"nothing":              {cfg: Config{}, want: "no TLS certificate: give --tls-cert and --tls-key, or --dev"},
		"dev and certificate":  {cfg: Config{Dev: true, TLSCert: "s.crt", TLSKey: "s.key"}, want: "dev: cannot be combined with tls-cert"},
		"dev and plaintext":    {cfg: Config{Dev: true, InsecurePlaintext: true}, want: "dev and insecure-plaintext: choose one"},
		"plaintext and a CA":   {cfg: Config{InsecurePlaintext: true, ClientCA: "ca.crt"}, want: "insecure-plaintext: cannot be combined"},
		"dev without a data dir": {cfg: Config{Dev: true, DatabaseURL: "postgres://db/carbide"}, noDataDir: true,
			want: "data-dir: required for the development PKI of --dev"},
		"negative size":    {cfg: Config{Dev: true, MaxRequestBytes: -1}, want: "max-request-bytes"},
		"negative timeout": {cfg: Config{Dev: true, IdleTimeout: -1}, want: "durations must not be negative"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Listen = "127.0.0.1:0"
			if !tt.noDataDir {
				cfg.DataDir = t.TempDir()
			}
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v; want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v; want an error containing %q", err, tt.want)
			}
		})
	}
}
