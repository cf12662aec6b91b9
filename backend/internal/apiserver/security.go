package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/carbide-dev/carbide/backend/internal/authn"
	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// security builds the authenticator and the server's TLS configuration
// (nil with InsecurePlaintext). With Dev it sets up the development PKI,
// token issuer and agent-token key under the data directory; nothing else
// does.
func security(ctx context.Context, cfg Config, logger *slog.Logger) (*authn.Authenticator, *tls.Config, error) {
	td := cfg.TrustDomain
	if td == "" {
		td = pki.DefaultTrustDomain
	}
	auth := &authn.Authenticator{
		Identify: func(cert *x509.Certificate) (*principal.Principal, error) {
			return pki.PrincipalFromCert(td, cert)
		},
	}
	devDir := filepath.Join(cfg.DataDir, "pki")
	jwtConfig := cfg.JWT
	if jwtConfig == nil && cfg.Dev {
		// Development mode: accept tokens of the development issuer, which
		// `carbide-api dev-token` signs.
		created, err := pki.EnsureDevJWT(devDir)
		if err != nil {
			return nil, nil, fmt.Errorf("set up the development token issuer in %s: %w", devDir, err)
		}
		if len(created) > 0 {
			logger.Info("development token issuer written", "dir", devDir, "files", created)
		}
		jwtConfig = &authn.JWTConfig{
			Issuer:   pki.DevJWTIssuer,
			Audience: pki.DevJWTAudience,
			JWKSFile: filepath.Join(devDir, pki.DevJWKSFile),
		}
	}
	if jwtConfig != nil {
		v, err := authn.NewJWTVerifier(ctx, *jwtConfig, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("set up JWT verification: %w", err)
		}
		auth.JWT = v
		logger.Info("bearer tokens accepted", "issuer", jwtConfig.Issuer, "audience", jwtConfig.Audience)
	}
	switch {
	case cfg.AgentTokenKey != "":
		t, _, err := pki.NewAgentTokens(cfg.AgentTokenKey, td, cfg.AgentTokenTTL, false)
		if err != nil {
			return nil, nil, err
		}
		auth.Agents = t
	case cfg.Dev:
		t, created, err := pki.NewAgentTokens(filepath.Join(devDir, pki.AgentTokenKeyFile), td, cfg.AgentTokenTTL, true)
		if err != nil {
			return nil, nil, fmt.Errorf("set up the development agent token key in %s: %w", devDir, err)
		}
		if created {
			logger.Info("development agent token key written", "dir", devDir, "file", pki.AgentTokenKeyFile)
		}
		auth.Agents = t
	default:
		logger.Warn("no --agent-token-key: booting machines get no agent token, so discovery agents cannot report")
	}
	if cfg.InsecurePlaintext {
		return auth, nil, nil
	}

	certFile, keyFile, caFile := cfg.TLSCert, cfg.TLSKey, cfg.ClientCA
	if cfg.Dev {
		dir := devDir
		created, err := pki.EnsureDev(dir, td, devHosts(cfg.Listen))
		if err != nil {
			return nil, nil, fmt.Errorf("set up the development PKI in %s: %w", dir, err)
		}
		if len(created) > 0 {
			logger.Info("development PKI written", "dir", dir, "files", created)
		}
		logger.Info("using the development PKI: fine for a lab, use your own CA in production", "dir", dir)
		certFile, keyFile = filepath.Join(dir, pki.ServerCertFile), filepath.Join(dir, pki.ServerKeyFile)
		if caFile == "" {
			caFile = filepath.Join(dir, pki.CACertFile)
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load the server certificate %s: %w", certFile, err)
	}
	if caFile != "" {
		if auth.ClientCAs, err = pki.LoadPool(caFile); err != nil {
			return nil, nil, fmt.Errorf("load the client CA bundle: %w", err)
		}
	} else {
		logger.Warn("no client CA: client certificates are not accepted")
	}
	return auth, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The handshake only asks for a certificate; the authenticator
		// verifies it, so that a bad one gets a clear Unauthenticated.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2", "http/1.1"},
	}, nil
}

// devHosts are the names the development server certificate covers: the
// loopback names and the listen host, or every address of this host when
// listening on all of them, so that machines booting on a local network can
// reach the API by address.
func devHosts(listen string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	h, _, err := net.SplitHostPort(listen)
	switch {
	case err != nil, h == "localhost", h == "127.0.0.1", h == "::1":
	case h == "", h == "0.0.0.0", h == "::":
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			break
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				hosts = append(hosts, ipn.IP.String())
			}
		}
	default:
		hosts = append(hosts, h)
	}
	return hosts
}
