package tfvalidate

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// fails runs v on s and reports whether it failed.
func fails(v validator.String, s types.String) bool {
	resp := &validator.StringResponse{}
	v.ValidateString(context.Background(), validator.StringRequest{Path: path.Root("a"), ConfigValue: s}, resp)
	return resp.Diagnostics.HasError()
}

func TestStringValidators(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		v       validator.String
		ok, bad []string
	}{
		"ipv4":           {IPv4(), []string{"10.0.0.1"}, []string{"", "10.0.0.256", "::1", "10.0.0.01", "host"}},
		"ipv6":           {IPv6(), []string{"2001:db8::1"}, []string{"10.0.0.1", "fe80::1%eth0"}},
		"ip":             {IP(), []string{"10.0.0.1", "::1"}, []string{"x"}},
		"ipv4 prefix":    {IPv4Prefix(), []string{"10.0.0.0/24", "0.0.0.0/0"}, []string{"10.0.0.1/24", "10.0.0.0", "2001:db8::/64"}},
		"ipv6 prefix":    {IPv6Prefix(), []string{"2001:db8::/64"}, []string{"10.0.0.0/24"}},
		"ip prefix":      {IPPrefix(), []string{"2001:db8::/64", "10.0.0.0/8"}, []string{"10.0.0.0/4"}},
		"uuid":           {UUID(), []string{"3f6c1c8e-8b1f-4a43-9a59-2a8f5e0d6b21"}, []string{"3f6c1c8e", "3f6c1c8e8b1f4a439a592a8f5e0d6b21"}},
		"hostname":       {Hostname(), []string{"rack1.example.net", "a", "a-b.c."}, []string{"-a", "a..b", "a_b", "1.2.3.4", ""}},
		"address":        {Address(), []string{"bmc1.example.net", "10.0.0.1", "::1"}, []string{"bmc_1", ""}},
		"uri":            {URI(), []string{"https://x.example/a"}, []string{"/a", "x"}},
		"pattern":        {Pattern("^[a-z]+$", ""), []string{"abc"}, []string{"ABC", ""}},
		"max bytes":      {MaxBytes(3), []string{"abc"}, []string{"ééé"}},
		"min bytes":      {MinBytes(2), []string{"é"}, []string{"a"}},
		"duration":       {Duration(time.Minute, time.Hour), []string{"1m", "30m", "1h"}, []string{"59s", "61m", "an hour"}},
		"any duration":   {Duration(0, 0), []string{"0s", "1000h"}, []string{"1d"}},
		"rfc3339":        {RFC3339(), []string{"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.5+01:00"}, []string{"2026-01-02"}},
		"ignoring empty": {IgnoringEmpty(IPv4()), []string{"", "10.0.0.1"}, []string{"x"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, s := range tc.ok {
				if fails(tc.v, types.StringValue(s)) {
					t.Errorf("%q failed, want it accepted", s)
				}
			}
			for _, s := range tc.bad {
				if !fails(tc.v, types.StringValue(s)) {
					t.Errorf("%q was accepted, want it to fail", s)
				}
			}
			if fails(tc.v, types.StringNull()) || fails(tc.v, types.StringUnknown()) {
				t.Error("null or unknown failed; validators skip them")
			}
		})
	}
}

func TestPatternMessage(t *testing.T) {
	t.Parallel()
	resp := &validator.StringResponse{}
	Pattern("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", "must be a MAC address").ValidateString(context.Background(),
		validator.StringRequest{Path: path.Root("mac"), ConfigValue: types.StringValue("x")}, resp)
	if !resp.Diagnostics.HasError() || resp.Diagnostics[0].Detail() != `mac must be a MAC address, got "x".` {
		t.Errorf("diagnostics = %v", resp.Diagnostics)
	}
}

func TestIgnoringZero(t *testing.T) {
	t.Parallel()
	v := IgnoringZero(int64validator.Between(576, 9216))
	for n, wantFail := range map[int64]bool{0: false, 1500: false, 100: true, math.MaxInt64: true} {
		resp := &validator.Int64Response{}
		v.ValidateInt64(context.Background(), validator.Int64Request{Path: path.Root("mtu"), ConfigValue: types.Int64Value(n)}, resp)
		if resp.Diagnostics.HasError() != wantFail {
			t.Errorf("%d: failed = %v, want %v", n, resp.Diagnostics.HasError(), wantFail)
		}
	}
}
