package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/carbide-dev/carbide/backend/internal/bmc"
	"github.com/carbide-dev/carbide/backend/internal/secrets"
	"github.com/prometheus/client_golang/prometheus"
)

// loadSecrets returns the keyring that seals stored secrets: cfg.Secrets
// if set, else the one in SecretsKeys or in SecretsKeyFile, else with Dev
// the development keyring <DataDir>/pki/secrets.keys, created on first
// start. With none of them it logs a warning and returns nil: the API
// serves, and storing or reading a BMC password fails with
// FailedPrecondition (secrets.ErrNoKeyring).
func loadSecrets(cfg Config, logger *slog.Logger) (*secrets.Keyring, error) {
	var (
		keys   *secrets.Keyring
		source string
		err    error
	)
	switch {
	case cfg.Secrets != nil:
		keys, source = cfg.Secrets, "configuration"
	case cfg.SecretsKeys != "":
		source = secrets.EnvKeys
		keys, err = secrets.ParseKeyring(source, []byte(cfg.SecretsKeys))
	case cfg.SecretsKeyFile != "":
		source = cfg.SecretsKeyFile
		keys, err = secrets.LoadKeyringFile(source)
	case cfg.Dev:
		source = filepath.Join(cfg.DataDir, "pki", secrets.DevKeyringFile)
		var created bool
		if created, err = secrets.EnsureKeyringFile(source, secrets.DevKeyID); err != nil {
			return nil, fmt.Errorf("set up the development secrets keyring %s: %w", source, err)
		}
		if created {
			logger.Info("development secrets keyring written", "file", source)
		}
		keys, err = secrets.LoadKeyringFile(source)
	default:
		logger.Warn("no --secrets-key-file or " + secrets.EnvKeys + ": BMC passwords cannot be stored or read " +
			"(failed_precondition) until the API restarts with a keyring; `carbide-api secrets-key` prints a key for one")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load the secrets keyring: %w", err)
	}
	logger.Info("secrets keyring loaded", "source", source, "keyring", keys)
	return keys, nil
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
		logger.Info("secrets resealed under the keyring's first key", "key", keys.PrimaryID(), "resealed", done)
	}
	left.Set(float64(n))
	return nil
}
