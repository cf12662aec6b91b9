// Package tfvalidate holds the Terraform attribute validators that stand for
// protovalidate rules the terraform-plugin-framework-validators module has no
// counterpart for: well-known string formats (ipv4, uuid, hostname...),
// patterns with the API's own message, byte lengths, durations and times,
// and rules that ignore the zero value. The generated schemas use them, so
// that bad input fails at plan time with the same rule the API enforces.
package tfvalidate

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// stringCheck is a string validator made of a check function.
type stringCheck struct {
	desc  string
	check func(string) error
}

func (v stringCheck) Description(context.Context) string         { return v.desc }
func (v stringCheck) MarkdownDescription(context.Context) string { return v.desc }

func (v stringCheck) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := v.check(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid value",
			fmt.Sprintf("%s %s, got %q.", req.Path, err, req.ConfigValue.ValueString()))
	}
}

// Pattern requires the value to match the regular expression expr; message
// says what that means, or is empty for "must match <expr>".
func Pattern(expr, message string) validator.String {
	re := regexp.MustCompile(expr)
	if message == "" {
		message = "must match the regular expression " + expr
	}
	return stringCheck{desc: "value " + message, check: func(s string) error {
		if !re.MatchString(s) {
			return fmt.Errorf("%s", message)
		}
		return nil
	}}
}

// MinBytes requires the value to have at least n bytes.
func MinBytes(n int) validator.String {
	return stringCheck{desc: fmt.Sprintf("value is at least %d bytes", n), check: func(s string) error {
		if len(s) < n {
			return fmt.Errorf("must be at least %d bytes long", n)
		}
		return nil
	}}
}

// MaxBytes requires the value to have at most n bytes.
func MaxBytes(n int) validator.String {
	return stringCheck{desc: fmt.Sprintf("value is at most %d bytes", n), check: func(s string) error {
		if len(s) > n {
			return fmt.Errorf("must be at most %d bytes long", n)
		}
		return nil
	}}
}

// IPv4 requires an IPv4 address such as 10.0.0.1.
func IPv4() validator.String {
	return stringCheck{desc: "value is an IPv4 address", check: func(s string) error {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			return fmt.Errorf("must be an IPv4 address such as 10.0.0.1")
		}
		return nil
	}}
}

// IPv6 requires an IPv6 address.
func IPv6() validator.String {
	return stringCheck{desc: "value is an IPv6 address", check: func(s string) error {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("must be an IPv6 address such as 2001:db8::1")
		}
		return nil
	}}
}

// IP requires an IPv4 or IPv6 address.
func IP() validator.String {
	return stringCheck{desc: "value is an IP address", check: func(s string) error {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return fmt.Errorf("must be an IP address such as 10.0.0.1 or 2001:db8::1")
		}
		return nil
	}}
}

// prefix requires a network prefix with zero host bits; v4 limits it to
// IPv4, v6 to IPv6.
func prefix(v4, v6 bool, desc, example string) validator.String {
	return stringCheck{desc: "value is " + desc, check: func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil || (v4 && !p.Addr().Is4()) || (v6 && !p.Addr().Is6()) {
			return fmt.Errorf("must be %s such as %s", desc, example)
		}
		if p.Masked() != p {
			return fmt.Errorf("must be %s with the host bits zero, such as %s", desc, p.Masked())
		}
		return nil
	}}
}

// IPv4Prefix requires an IPv4 network in CIDR form with zero host bits.
func IPv4Prefix() validator.String {
	return prefix(true, false, "an IPv4 network in CIDR form", "10.0.0.0/24")
}

// IPv6Prefix requires an IPv6 network in CIDR form with zero host bits.
func IPv6Prefix() validator.String {
	return prefix(false, true, "an IPv6 network in CIDR form", "2001:db8::/64")
}

// IPPrefix requires an IP network in CIDR form with zero host bits.
func IPPrefix() validator.String {
	return prefix(false, false, "an IP network in CIDR form", "10.0.0.0/24")
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsUUID reports whether s is a UUID in its textual form.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// UUID requires a UUID such as 3f6c1c8e-8b1f-4a43-9a59-2a8f5e0d6b21.
func UUID() validator.String {
	return stringCheck{desc: "value is a UUID", check: func(s string) error {
		if !uuidRE.MatchString(s) {
			return fmt.Errorf("must be a UUID such as 3f6c1c8e-8b1f-4a43-9a59-2a8f5e0d6b21")
		}
		return nil
	}}
}

// isHostname reports whether s is a host name as protovalidate defines it:
// dot-separated labels of letters, digits and inner dashes, at most 63
// characters each and 253 in all, the last one not all digits.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// Hostname requires a DNS host name such as rack1.example.net.
func Hostname() validator.String {
	return stringCheck{desc: "value is a host name", check: func(s string) error {
		if !isHostname(s) {
			return fmt.Errorf("must be a host name of letters, digits and dashes with dots between labels, such as rack1.example.net")
		}
		return nil
	}}
}

// Address requires a host name or an IP address.
func Address() validator.String {
	return stringCheck{desc: "value is a host name or an IP address", check: func(s string) error {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			return nil
		}
		if !isHostname(s) {
			return fmt.Errorf("must be a host name or an IP address, such as bmc1.example.net or 10.0.0.1")
		}
		return nil
	}}
}

// URI requires an absolute URI such as https://example.net/file.
func URI() validator.String {
	return stringCheck{desc: "value is an absolute URI", check: func(s string) error {
		if u, err := url.Parse(s); err != nil || u.Scheme == "" {
			return fmt.Errorf("must be an absolute URI such as https://example.net/file")
		}
		return nil
	}}
}

// Duration requires a Go duration string ("90s", "1h30m"), between min
// and max when they are not zero.
func Duration(min, max time.Duration) validator.String {
	return stringCheck{desc: "value is a duration", check: func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("must be a duration such as \"90s\", \"30m\" or \"1h30m\"")
		}
		if min != 0 && d < min {
			return fmt.Errorf("must be at least %s", min)
		}
		if max != 0 && d > max {
			return fmt.Errorf("must be at most %s", max)
		}
		return nil
	}}
}

// RFC3339 requires an RFC 3339 time such as 2026-01-02T15:04:05Z.
func RFC3339() validator.String {
	return stringCheck{desc: "value is an RFC 3339 time", check: func(s string) error {
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fmt.Errorf("must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		return nil
	}}
}

// ignoringEmpty runs its validators on values other than "".
type ignoringEmpty []validator.String

// IgnoringEmpty runs vs on every value but "", which is always valid (a
// protovalidate rule with IGNORE_IF_ZERO_VALUE).
func IgnoringEmpty(vs ...validator.String) validator.String { return ignoringEmpty(vs) }

func (v ignoringEmpty) Description(ctx context.Context) string {
	var ds []string
	for _, x := range v {
		ds = append(ds, x.Description(ctx))
	}
	return strings.Join(ds, " and ") + ", or empty"
}

func (v ignoringEmpty) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v ignoringEmpty) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !req.ConfigValue.IsNull() && !req.ConfigValue.IsUnknown() && req.ConfigValue.ValueString() == "" {
		return
	}
	for _, x := range v {
		x.ValidateString(ctx, req, resp)
	}
}

// ignoringZero runs its validators on numbers other than 0.
type ignoringZero []validator.Int64

// IgnoringZero runs vs on every number but 0, which is always valid (a
// protovalidate rule with IGNORE_IF_ZERO_VALUE).
func IgnoringZero(vs ...validator.Int64) validator.Int64 { return ignoringZero(vs) }

func (v ignoringZero) Description(ctx context.Context) string {
	var ds []string
	for _, x := range v {
		ds = append(ds, x.Description(ctx))
	}
	return strings.Join(ds, " and ") + ", or 0"
}

func (v ignoringZero) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v ignoringZero) ValidateInt64(ctx context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if !req.ConfigValue.IsNull() && !req.ConfigValue.IsUnknown() && req.ConfigValue.ValueInt64() == 0 {
		return
	}
	for _, x := range v {
		x.ValidateInt64(ctx, req, resp)
	}
}
