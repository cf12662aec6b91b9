package bmcd

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
)

// dialer opens BMCs with bmclib, as the configuration says.
func (c *Config) dialer() (Dialer, error) {
	o := Options{Timeout: c.CallTimeout, IPMIIgnoreBootValid: c.IPMIIgnoreBootValid}
	for _, p := range c.Providers {
		o.AutoOrder = append(o.AutoOrder, Protocol(p))
	}
	if c.RedfishCAFile != "" {
		pem, err := os.ReadFile(c.RedfishCAFile)
		if err != nil {
			return nil, fmt.Errorf("redfish-ca: %w", err)
		}
		o.RedfishRootCAs = x509.NewCertPool()
		if !o.RedfishRootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redfish-ca: %s holds no PEM certificate", c.RedfishCAFile)
		}
	}
	return func(ctx context.Context, t Target) (Conn, error) {
		return Open(ctx, t, o)
	}, nil
}

// protocolOf is the protocol a target's BMC is reached by.
func protocolOf(p bmcv1.Protocol) Protocol {
	switch p {
	case bmcv1.Protocol_PROTOCOL_IPMI:
		return ProtocolIPMI
	case bmcv1.Protocol_PROTOCOL_REDFISH:
		return ProtocolRedfish
	}
	return ProtocolAuto
}
