package segments

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/carbide-dev/carbide/ent/schema"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

// The limits of a static record. protovalidate checks them too; the
// parser does not rely on that, since it also reads stored records.
const (
	maxDNSRecords  = 1024
	maxDNSTTL      = 7 * 24 * 60 * 60 // one week, in seconds
	maxTXTString   = 255
	maxDNSValueLen = 4096
	maxDNSName     = 253
	maxDNSLabel    = 63
)

// Record types as stored (schema.DNSRecord.Type).
const (
	typeCNAME = "CNAME"
	typeTXT   = "TXT"
	typeSRV   = "SRV"
)

var recordTypes = map[networkv1.DNSRecordType]string{
	networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME: typeCNAME,
	networkv1.DNSRecordType_DNS_RECORD_TYPE_TXT:   typeTXT,
	networkv1.DNSRecordType_DNS_RECORD_TYPE_SRV:   typeSRV,
}

var recordTypeEnums = map[string]networkv1.DNSRecordType{
	typeCNAME: networkv1.DNSRecordType_DNS_RECORD_TYPE_CNAME,
	typeTXT:   networkv1.DNSRecordType_DNS_RECORD_TYPE_TXT,
	typeSRV:   networkv1.DNSRecordType_DNS_RECORD_TYPE_SRV,
}

// checkDNSRecords checks a segment's static records and returns them in
// canonical form: names lower-case and relative ("" for the apex), values
// re-printed from what was parsed. The error names the record and what to
// fix; it is the caller's to wrap as InvalidArgument. Clashes between
// records (a CNAME next to other data) are checked by dnsClashes.
func checkDNSRecords(domain string, in []*networkv1.DNSRecord) ([]schema.DNSRecord, error) {
	if len(in) == 0 {
		return []schema.DNSRecord{}, nil
	}
	if len(in) > maxDNSRecords {
		return nil, fmt.Errorf("dns_records: %d records; a segment holds at most %d", len(in), maxDNSRecords)
	}
	if domain == "" {
		return nil, errors.New("dns_records: the segment has no domain to serve them in; set segment.domain")
	}
	out := make([]schema.DNSRecord, 0, len(in))
	seen := map[schema.DNSRecord]int{}
	for i, r := range in {
		rec, err := checkDNSRecord(domain, r)
		if err != nil {
			return nil, fmt.Errorf("dns_records[%d] (%s): %w", i, describe(r), err)
		}
		// TTL aside, a record given twice is a mistake (DNS serves one).
		key := rec
		key.TTL = 0
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("dns_records[%d] (%s): the same record as dns_records[%d]; remove one", i, describe(r), j)
		}
		seen[key] = i
		out = append(out, rec)
	}
	return out, nil
}

func checkDNSRecord(domain string, r *networkv1.DNSRecord) (schema.DNSRecord, error) {
	var rec schema.DNSRecord
	typ, ok := recordTypes[r.GetType()]
	if !ok {
		return rec, errors.New("type: must be CNAME, TXT or SRV")
	}
	name, err := relativeName(r.GetName())
	if err != nil {
		return rec, fmt.Errorf("name: %w", err)
	}
	full := len(domain)
	if name != "" {
		full += len(name) + 1
	}
	if full > maxDNSName {
		return rec, fmt.Errorf("name: %q in %s is %d characters long; a DNS name has at most %d", name, domain, full, maxDNSName)
	}
	if r.GetTtl() > maxDNSTTL {
		return rec, fmt.Errorf("ttl: %d seconds is more than a week (%d)", r.GetTtl(), maxDNSTTL)
	}
	if len(r.GetValue()) > maxDNSValueLen {
		return rec, fmt.Errorf("value: %d bytes; at most %d", len(r.GetValue()), maxDNSValueLen)
	}
	var value string
	switch typ {
	case typeCNAME:
		if name == "" {
			return rec, errors.New("name: a CNAME cannot be at the domain's apex, which holds its SOA and NS records; give it a name")
		}
		value, err = absoluteName(strings.TrimSpace(r.GetValue()))
		if err != nil {
			return rec, fmt.Errorf("value: the CNAME target %w", err)
		}
	case typeTXT:
		value, err = parseTXT(r.GetValue())
	case typeSRV:
		value, err = parseSRV(r.GetValue())
	}
	if err != nil {
		return rec, fmt.Errorf("value: %w", err)
	}
	return schema.DNSRecord{Name: name, Type: typ, TTL: r.GetTtl(), Value: value}, nil
}

func describe(r *networkv1.DNSRecord) string {
	name := r.GetName()
	if name == "" {
		name = "@"
	}
	typ := strings.TrimPrefix(r.GetType().String(), "DNS_RECORD_TYPE_")
	return name + " " + typ
}

// relativeName checks a record's owner name and returns it lower-case,
// "" for the apex.
func relativeName(raw string) (string, error) {
	if raw == "" || raw == "@" {
		return "", nil
	}
	if strings.HasSuffix(raw, ".") {
		return "", fmt.Errorf("%q ends in a dot; names are relative to the segment's domain, write it without the domain and the dot", raw)
	}
	if err := checkLabels(raw, true); err != nil {
		return "", fmt.Errorf("%q: %w", raw, err)
	}
	return strings.ToLower(raw), nil
}

// absoluteName checks a fully qualified name ending in "." and returns
// it lower-case.
func absoluteName(raw string) (string, error) {
	if !strings.HasSuffix(raw, ".") || raw == "." {
		return "", fmt.Errorf("%q must be a fully qualified name ending in a dot, such as \"www.example.net.\"", raw)
	}
	name := strings.TrimSuffix(raw, ".")
	if len(name) > maxDNSName {
		return "", fmt.Errorf("%q is longer than %d characters", raw, maxDNSName)
	}
	if err := checkLabels(name, true); err != nil {
		return "", fmt.Errorf("%q: %w", raw, err)
	}
	return strings.ToLower(raw), nil
}

// checkLabels checks dot-separated RFC 1123 labels: letters, digits and
// dashes, no dash first or last, at most 63 characters. With underscore,
// a label may start with "_" (service labels such as "_ldap._tcp").
func checkLabels(name string, underscore bool) error {
	for _, l := range strings.Split(name, ".") {
		if l == "" {
			return errors.New("has an empty label (two dots in a row, or a leading dot)")
		}
		if len(l) > maxDNSLabel {
			return fmt.Errorf("label %q is longer than %d characters", l, maxDNSLabel)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			case c == '-' && i > 0 && i < len(l)-1:
			case c == '_' && i == 0 && underscore:
			default:
				return fmt.Errorf("label %q: %q is not allowed there (letters, digits, inner dashes, a leading underscore)", l, c)
			}
		}
	}
	return nil
}

// parseTXT reads one or more double-quoted strings separated by blanks,
// with the escapes of RFC 1035 section 5.1 (\" \\ \DDD), and prints them
// back in one canonical form.
func parseTXT(raw string) (string, error) {
	var parts []string
	s := raw
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != '"' {
			return "", fmt.Errorf("TXT data must be double-quoted strings, such as %q; found %q", `"v=spf1 -all"`, clip(s))
		}
		var b []byte
		i, closed := 1, false
		for i < len(s) && !closed {
			c := s[i]
			switch {
			case c == '"':
				closed = true
				i++
			case c == '\\':
				if i+1 >= len(s) {
					return "", errors.New("TXT string ends in a lone backslash")
				}
				if isDigit(s[i+1]) {
					if i+3 >= len(s) || !isDigit(s[i+2]) || !isDigit(s[i+3]) {
						return "", fmt.Errorf("TXT escape %q must be a backslash and three digits", clip(s[i:]))
					}
					n, _ := strconv.Atoi(s[i+1 : i+4])
					if n > 255 {
						return "", fmt.Errorf("TXT escape \\%s is above 255", s[i+1:i+4])
					}
					b = append(b, byte(n))
					i += 4
				} else {
					b = append(b, s[i+1])
					i += 2
				}
			case c < 0x20 || c == 0x7f:
				return "", fmt.Errorf("TXT string holds control character %#02x; write it as \\%03d", c, c)
			default:
				b = append(b, c)
				i++
			}
		}
		if !closed {
			return "", fmt.Errorf("TXT string %q has no closing quote", clip(s))
		}
		if len(b) > maxTXTString {
			return "", fmt.Errorf("TXT string %d is %d bytes; split it into strings of at most %d", len(parts)+1, len(b), maxTXTString)
		}
		if i < len(s) && s[i] != ' ' && s[i] != '\t' {
			return "", fmt.Errorf("TXT strings must be separated by a space; found %q after a closing quote", clip(s[i:]))
		}
		parts = append(parts, quoteTXT(b))
		s = s[i:]
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("TXT data is empty; give at least one double-quoted string, such as %q", `"v=spf1 -all"`)
	}
	return strings.Join(parts, " "), nil
}

// quoteTXT prints a character string in presentation format: printable
// ASCII as is, quote and backslash escaped, everything else as \DDD.
func quoteTXT(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&sb, "\\%03d", c)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// parseSRV reads "priority weight port target." (RFC 2782) and prints it
// back canonically. A target of "." says the service is not offered.
func parseSRV(raw string) (string, error) {
	f := strings.Fields(raw)
	if len(f) != 4 {
		return "", fmt.Errorf("SRV data %q must be four fields, \"priority weight port target.\", such as \"10 5 389 ldap1.example.net.\"", clip(raw))
	}
	var nums [3]uint64
	for i, what := range []string{"priority", "weight", "port"} {
		n, err := strconv.ParseUint(f[i], 10, 16)
		if err != nil {
			return "", fmt.Errorf("SRV %s %q must be a whole number from 0 to 65535", what, f[i])
		}
		nums[i] = n
	}
	target := f[3]
	if target != "." {
		var err error
		if target, err = absoluteName(target); err != nil {
			return "", fmt.Errorf("SRV target %w", err)
		}
	}
	return fmt.Sprintf("%d %d %d %s", nums[0], nums[1], nums[2], target), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
