package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/prometheus/client_golang/prometheus"
)

// devKeyringFile is the keyring --dev creates in <data-dir>/pki.
const devKeyringFile = "secrets.keys"

// keyring loads the keyring the configuration names; nil, without an
// error, when it names none.
func keyring(cfg Config, logger *slog.Logger) (*secrets.Keyring, error) {
	switch {
	case cfg.SecretsKeys != "":
		k, err := secrets.Parse(cfg.SecretsKeys)
		if err != nil {
			return nil, fmt.Errorf("CARBIDE_SECRETS_KEYS: %w", err)
		}
		return k, nil
	case cfg.SecretsKeyFile != "":
		return secrets.Load(cfg.SecretsKeyFile)
	case cfg.Dev:
		path := filepath.Join(cfg.DataDir, "pki", devKeyringFile)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			line, err := secrets.GenerateKeyLine("dev1")
			if err != nil {
				return nil, err
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, fmt.Errorf("create the development keyring: %w", err)
			}
			if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("create the development keyring: %w", err)
			}
			logger.Info("development keyring written", "file", path)
		}
		return secrets.Load(path)
	}
	logger.Warn("no keyring (--secrets-key-file): BMC passwords cannot be stored")
	return nil, nil
}

// reseal moves every stored secret to the keyring's first key (the second
// step of a key rotation), and exports how many are left under other keys
// as carbide_secrets_sealed_under_old_keys.
func reseal(s *bmc.Service, keys *secrets.Keyring, logger *slog.Logger, reg prometheus.Registerer) error {
	left := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "carbide_secrets_sealed_under_old_keys",
		Help: "Secrets still sealed under a key other than the keyring's first after the start-up reseal (their key is missing, or they do not open); a rotated-out key can be removed at 0.",
	})
	if err := reg.Register(left); err != nil {
		return err
	}
	if keys == nil {
		return nil
	}
	done, n, err := s.Reseal(context.Background())
	if err != nil {
		return err
	}
	if done > 0 {
		logger.Info("secrets resealed under the keyring's first key", "key", keys.Primary(), "resealed", done)
	}
	left.Set(float64(n))
	return nil
}
