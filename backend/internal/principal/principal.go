// Package principal describes who calls an RPC — a service or discovery
// agent identified by its client certificate, or a user identified by a
// JWT — and carries that identity in the call's context.
package principal

import (
	"context"
	"slices"
	"time"
)

// Role is what a caller may do. Services and agents have exactly one role;
// a user may have several.
type Role string

// The roles. Service roles belong to Carbide's own daemons; user roles to
// people and automation.
const (
	RoleDHCP  Role = "dhcp"
	RolePXE   Role = "pxe"
	RoleDNS   Role = "dns"
	RoleBMC   Role = "bmc"
	RoleAgent Role = "agent"

	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleViewer   Role = "viewer"
)

// ServiceRoles are the roles a service certificate may carry.
var ServiceRoles = []Role{RoleDHCP, RolePXE, RoleDNS, RoleBMC}

// UserRoles are the roles a user may hold.
var UserRoles = []Role{RoleAdmin, RoleOperator, RoleViewer}

// Method says how a caller proved its identity.
type Method string

// The authentication methods.
const (
	MethodCertificate Method = "certificate"
	MethodJWT         Method = "jwt"
	// MethodAgentToken is the bearer token the API issues to a booting
	// machine's discovery agent.
	MethodAgentToken Method = "agent-token"
)

// Principal is an authenticated caller.
type Principal struct {
	// Name identifies the caller in logs, history and audit records: the
	// SPIFFE ID of a certificate, or "<issuer>#<subject>" of a JWT.
	Name string
	// Roles the caller holds.
	Roles []Role
	// MachineID is set for the agent role: the one machine it speaks for.
	MachineID string
	// BootID is set for an agent token: the boot of MachineID it was
	// issued for, which must still be the machine's current boot.
	BootID string
	// Method is how the caller authenticated.
	Method Method
	// Expires is when the credential stops being valid (a token's exp).
	Expires time.Time
}

// Has reports whether p holds role r.
func (p *Principal) Has(r Role) bool { return slices.Contains(p.Roles, r) }

type key struct{}

// Anonymous names a caller that presented no identity.
const Anonymous = "anonymous"

// With returns ctx carrying p.
func With(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, key{}, p)
}

// FromContext returns the caller, or nil for an anonymous one.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(key{}).(*Principal)
	return p
}

// From returns the caller's name, or Anonymous.
func From(ctx context.Context) string {
	if p := FromContext(ctx); p != nil && p.Name != "" {
		return p.Name
	}
	return Anonymous
}
