package pki

import "time"

// IssueClientWindow exposes issueClient so tests can make a client
// certificate valid from notBefore to notAfter, such as an expired one.
func (ca *CA) IssueClientWindow(spiffeID string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	return ca.issueClient(spiffeID, notBefore, notAfter)
}
