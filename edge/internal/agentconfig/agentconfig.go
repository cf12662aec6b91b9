// Package agentconfig is what the PXE daemon hands the discovery agent
// (carbide-scout) when it boots: where the API is, how to trust it, and the
// token with which the agent speaks for its machine. carbide-pxe serves it
// as JSON at /agent/{mac}.json; the agent finds that URL on the kernel
// command line (carbide.config=...).
package agentconfig

import "time"

// Path is the HTTP path under which carbide-pxe serves the configuration,
// followed by the lower-case MAC address and ".json".
const Path = "/agent/"

// ParamBoot is the query parameter of the configuration URL that carries
// the nonce of the machine's boot: carbide-pxe places it in the URL of the
// iPXE script it serves, and exchanges it, once, for the agent token. A
// secret: never log the URL's query.
const ParamBoot = "boot"

// Kernel command-line parameters that the PXE daemon sets and the agent
// reads.
const (
	// ParamConfig is the URL of the agent's configuration.
	ParamConfig = "carbide.config"
	// ParamMAC is the MAC address the machine booted from.
	ParamMAC = "carbide.mac"
)

// Config is the agent's configuration.
type Config struct {
	// APIURL is the base URL of the Carbide API, e.g.
	// https://198.18.0.1:1079.
	APIURL string `json:"api_url"`
	// CAPEM is the PEM bundle the API's certificate chains to; empty for
	// the system roots.
	CAPEM string `json:"ca_pem,omitempty"`
	// MachineID is the machine the token speaks for.
	MachineID string `json:"machine_id"`
	// Token is the agent token (a bearer token). A secret: never log it.
	Token string `json:"token"`
	// TokenExpireTime is when Token expires.
	TokenExpireTime time.Time `json:"token_expire_time"`
	// CloudInitURL is where the machine's NoCloud seed is served,
	// <carbide-pxe base URL>/cloud-init/<mac>/, with a trailing slash:
	// the agent fetches meta-data, user-data, network-config and
	// vendor-data from it when it installs an instance's image, and writes
	// them to the seed partition (CIDATA). The agent uses it when the
	// install step's seed_url is empty, as the API leaves it: the API does
	// not know carbide-pxe's URL. carbide-pxe
	// serves the instance's files only to the address that holds the
	// machine's lease. Empty when carbide-pxe knows no base URL for the
	// request (no --public-url and an unusable Host header).
	CloudInitURL string `json:"cloud_init_url,omitempty"`
}
