package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"CARBIDE_DNS_LISTEN":      "127.0.0.1:5300,[::1]:5300",
		"CARBIDE_DNS_TTL":         "60s",
		"CARBIDE_DNS_RRL_RATE":    "100",
		"CARBIDE_DNS_NS":          "ns1.example.net.",
		"CARBIDE_DNS_PRIMARY_NS":  "ns1.example.net.",
		"CARBIDE_DNS_API_URL":     "http://127.0.0.1:1079",
		"CARBIDE_DNS_SOA_MINIMUM": "30s",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, _, err := parseFlags([]string{"--listen", "127.0.0.1:53", "--ns", "ns2.example.net.", "--ns", "ns3.example.net.", "--allow-transfer", "192.0.2.0/24"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.1:53"}, cfg.Listen); diff != "" {
		t.Errorf("listen: the command line should replace the environment (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ns2.example.net.", "ns3.example.net."}, cfg.NS); diff != "" {
		t.Errorf("ns (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"192.0.2.0/24"}, cfg.AllowTransfer); diff != "" {
		t.Errorf("allow-transfer replaces its default (-want +got):\n%s", diff)
	}
	if cfg.TTL != time.Minute || cfg.RRLRate != 100 || cfg.SOAMinimum != 30*time.Second {
		t.Errorf("from the environment: ttl %s rrl-rate %d soa-minimum %s", cfg.TTL, cfg.RRLRate, cfg.SOAMinimum)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg, _, err := parseFlags([]string{"--api-url", "http://127.0.0.1:1", "--listen", "nope", "--udp-size", "100", "--contact", "@", "--ns-address", "x", "--journal-size", "0"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad configuration")
	}
	for _, flag := range []string{"listen:", "udp-size:", "contact:", "ns-address:", "journal-size:"} {
		if !contains(err.Error(), flag) {
			t.Errorf("error lacks %s: %v", flag, err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
