package main

import (
	"fmt"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/notify"
)

// messageSigners loads the keys TIDINGS_SMIME_KEYS and
// TIDINGS_OPENPGP_KEYS name, which sign the notices encrypted for a
// patient's own key.
func messageSigners(cfg config.Config) ([]notify.MessageSigner, error) {
	specs, err := cfg.MessageSignerSpecs()
	if err != nil {
		return nil, err
	}
	var signers []notify.MessageSigner
	for _, sp := range specs {
		var s notify.MessageSigner
		if sp.Kind == "smime" {
			s, err = notify.LoadSMIMESigner(sp.Tenant, sp.CertFile, sp.KeyFile)
		} else {
			s, err = notify.LoadOpenPGPSigner(sp.Tenant, sp.KeyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("message signers: %w", err)
		}
		signers = append(signers, s)
	}
	return signers, nil
}
