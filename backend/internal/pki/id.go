// Package pki issues and checks the X.509 certificates Carbide uses for
// mutual TLS, and maps a verified client certificate to a principal.
//
// Every client certificate carries exactly one URI SAN, a SPIFFE ID in the
// deployment's trust domain (DefaultTrustDomain unless configured):
//
//	spiffe://<td>/service/<role>        a daemon: role dhcp, pxe, dns or bmc
//	spiffe://<td>/agent/<machine-uuid>  the discovery agent of one machine
//	spiffe://<td>/user/<role>/<name>    a user with role admin, operator or viewer
//
// Anything else is rejected. The package also provides a small certificate
// authority (ECDSA P-256 keys, SHA-256 signatures) and EnsureDev, which
// bootstraps a development PKI on the API server's first start with --dev.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// DefaultTrustDomain is the trust domain used when none is configured. Every
// function in this package that takes a trust domain treats "" as this.
const DefaultTrustDomain = "carbide.local"

// ErrInvalidIdentity is wrapped by every error PrincipalFromCert returns for a
// certificate whose identity is not one Carbide accepts. Check it with
// errors.Is to tell a rejected caller from a misconfigured server.
var ErrInvalidIdentity = errors.New("invalid certificate identity")

// The first path segment of each kind of SPIFFE ID.
const (
	kindService = "service"
	kindAgent   = "agent"
	kindUser    = "user"
)

// maxIDLen is the longest SPIFFE ID accepted, per the SPIFFE ID specification.
const maxIDLen = 2048

// userNameRE is what the <name> of a user ID may be.
var userNameRE = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// ServiceID returns the SPIFFE ID of the Carbide daemon holding role, one of
// principal.ServiceRoles, in trust domain td. It does not check its inputs;
// PrincipalFromCert does.
func ServiceID(td string, role principal.Role) string {
	return "spiffe://" + trustDomain(td) + "/" + kindService + "/" + string(role)
}

// AgentID returns the SPIFFE ID of the discovery agent of the machine with
// the given UUID, in trust domain td. The UUID is lower-cased, since only the
// lower-case canonical form is accepted by PrincipalFromCert.
func AgentID(td, machineID string) string {
	return "spiffe://" + trustDomain(td) + "/" + kindAgent + "/" + strings.ToLower(machineID)
}

// UserID returns the SPIFFE ID of the user name holding role, one of
// principal.UserRoles, in trust domain td. It does not check its inputs;
// PrincipalFromCert does.
func UserID(td string, role principal.Role, name string) string {
	return "spiffe://" + trustDomain(td) + "/" + kindUser + "/" + string(role) + "/" + name
}

// PrincipalFromCert returns the caller identified by cert, a client
// certificate whose chain the caller has ALREADY verified (for example by a
// tls.Config with ClientCAs set); it does not check signatures or validity
// dates. The certificate must carry exactly one URI SAN, a SPIFFE ID of one
// of the forms described in the package documentation, in trust domain td.
// The principal's Name is that SPIFFE ID, its Method MethodCertificate.
// A rejected certificate gives an error wrapping ErrInvalidIdentity.
func PrincipalFromCert(td string, cert *x509.Certificate) (*principal.Principal, error) {
	td = trustDomain(td)
	if err := checkTrustDomain(td); err != nil {
		return nil, fmt.Errorf("identify client certificate: %w", err)
	}
	if cert == nil {
		return nil, fmt.Errorf("identify client certificate: %w: no certificate", ErrInvalidIdentity)
	}
	if cert.IsCA {
		return nil, fmt.Errorf("identify client certificate %s: %w: a CA certificate cannot identify a caller",
			describe(cert), ErrInvalidIdentity)
	}
	switch len(cert.URIs) {
	case 0:
		return nil, fmt.Errorf("identify client certificate %s: %w: no URI SAN; want one SPIFFE ID such as %s",
			describe(cert), ErrInvalidIdentity, ServiceID(td, principal.RoleDHCP))
	case 1:
	default:
		return nil, fmt.Errorf("identify client certificate %s: %w: %d URI SANs; want exactly one SPIFFE ID",
			describe(cert), ErrInvalidIdentity, len(cert.URIs))
	}
	p, err := parseID(td, cert.URIs[0].String())
	if err != nil {
		return nil, fmt.Errorf("identify client certificate %s: %w", describe(cert), err)
	}
	return p, nil
}

// parseID maps a SPIFFE ID in trust domain td (already defaulted and
// checked) to a principal. Every error wraps ErrInvalidIdentity.
func parseID(td, id string) (*principal.Principal, error) {
	reject := func(format string, args ...any) error {
		return fmt.Errorf("%w: SPIFFE ID %q: %s", ErrInvalidIdentity, id, fmt.Sprintf(format, args...))
	}
	host, segs, err := splitID(id)
	if err != nil {
		return nil, reject("%s", err)
	}
	if host != td {
		return nil, reject("trust domain %q is not %q", host, td)
	}
	p := &principal.Principal{Name: id, Method: principal.MethodCertificate}
	switch segs[0] {
	case kindService:
		if len(segs) != 2 {
			return nil, reject("want spiffe://%s/service/<role>", td)
		}
		role := principal.Role(segs[1])
		if !slices.Contains(principal.ServiceRoles, role) {
			return nil, reject("unknown service role %q; want one of %v", role, principal.ServiceRoles)
		}
		p.Roles = []principal.Role{role}
	case kindAgent:
		if len(segs) != 2 {
			return nil, reject("want spiffe://%s/agent/<machine-uuid>", td)
		}
		u, err := uuid.Parse(segs[1])
		if err != nil || u.String() != segs[1] {
			return nil, reject("machine ID %q is not a lower-case canonical UUID", segs[1])
		}
		if u == uuid.Nil {
			return nil, reject("machine ID is the nil UUID")
		}
		p.Roles = []principal.Role{principal.RoleAgent}
		p.MachineID = segs[1]
	case kindUser:
		if len(segs) != 3 {
			return nil, reject("want spiffe://%s/user/<role>/<name>", td)
		}
		role := principal.Role(segs[1])
		if !slices.Contains(principal.UserRoles, role) {
			return nil, reject("unknown user role %q; want one of %v", role, principal.UserRoles)
		}
		if !userNameRE.MatchString(segs[2]) {
			return nil, reject("user name %q does not match %s", segs[2], userNameRE)
		}
		p.Roles = []principal.Role{role}
	default:
		return nil, reject("unknown kind %q; want service, agent or user", segs[0])
	}
	return p, nil
}

// splitID checks that id is a syntactically valid SPIFFE ID with a non-empty
// path, as the SPIFFE ID specification defines it, and returns its trust
// domain and path segments.
func splitID(id string) (td string, segs []string, err error) {
	if len(id) > maxIDLen {
		return "", nil, fmt.Errorf("longer than %d bytes", maxIDLen)
	}
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", nil, errors.New(`does not start with "spiffe://"`)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return "", nil, errors.New("has no path")
	}
	if err := checkTrustDomain(td); err != nil {
		return "", nil, err
	}
	segs = strings.Split(path, "/")
	for _, s := range segs {
		switch {
		case s == "":
			return "", nil, errors.New("has an empty path segment")
		case s == "." || s == "..":
			return "", nil, fmt.Errorf("has a %q path segment", s)
		case strings.IndexFunc(s, func(r rune) bool { return !isPathChar(r) }) >= 0:
			return "", nil, fmt.Errorf("path segment %q has a character other than [A-Za-z0-9._-]", s)
		}
	}
	return td, segs, nil
}

// checkTrustDomain reports whether td is a valid SPIFFE trust domain name.
func checkTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("trust domain %q has a character other than [a-z0-9._-]", td)
		}
	}
	return nil
}

// isPathChar reports whether r may appear in a SPIFFE ID path segment.
func isPathChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
}

// trustDomain returns td, or DefaultTrustDomain if td is empty.
func trustDomain(td string) string {
	if td == "" {
		return DefaultTrustDomain
	}
	return td
}

// describe names cert in an error message by its serial number, which is
// never secret and lets an operator find it.
func describe(cert *x509.Certificate) string {
	if cert.SerialNumber == nil {
		return "(no serial)"
	}
	return "serial " + cert.SerialNumber.Text(16)
}
