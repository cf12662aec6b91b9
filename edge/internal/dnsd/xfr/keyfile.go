package xfr

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/miekg/dns"
)

// ParseKeyFile reads TSIG keys (--tsig-keyfile), one per line:
//
//	name algorithm base64secret
//
// with algorithm hmac-sha256 or hmac-sha512; empty lines and everything
// after a # are ignored. It returns the secrets by key name (lower-case
// FQDN), for dns.Server.TsigSecret and Config.TSIGSecrets, and the
// algorithms by key name (dns.HmacSHA256, dns.HmacSHA512), for
// Config.TSIGAlgorithms. Every bad line is reported, with its number; the
// secrets themselves never appear in an error.
func ParseKeyFile(r io.Reader) (map[string]string, map[string]string, error) {
	secrets := make(map[string]string)
	algs := make(map[string]string)
	var errs []error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			errs = append(errs, fmt.Errorf("line %d: want \"name algorithm base64secret\", got %d fields", n, len(f)))
			continue
		}
		name := dns.CanonicalName(f[0])
		if _, ok := dns.IsDomainName(name); !ok || name == "." {
			errs = append(errs, fmt.Errorf("line %d: key name %q is not a domain name", n, f[0]))
			continue
		}
		alg, ok := algorithm(f[1])
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: key %s: algorithm %q is not hmac-sha256 or hmac-sha512", n, name, f[1]))
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(f[2])
		if err != nil || len(raw) == 0 {
			errs = append(errs, fmt.Errorf("line %d: key %s: the secret is not base64 (generate one with tsig-keygen or openssl rand -base64 32)", n, name))
			continue
		}
		if _, dup := secrets[name]; dup {
			errs = append(errs, fmt.Errorf("line %d: key %s is defined twice", n, name))
			continue
		}
		secrets[name], algs[name] = f[2], alg
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read key file: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("TSIG key file: %w", err)
	}
	return secrets, algs, nil
}
