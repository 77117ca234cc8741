package config

import (
	"fmt"
	"os"
	"strings"
)

// MessageSignerSpec names a key that signs a tenant's encrypted notices
// ("*": every tenant's, for the service's own identity): Kind "smime"
// with the PEM certificate (chain) and private key files, or "openpgp"
// with the armored private key file (KeyFile).
type MessageSignerSpec struct{ Tenant, Kind, CertFile, KeyFile string }

// MessageSignerSpecs parses TIDINGS_SMIME_KEYS
// ("acme:/etc/tidings/acme-smime.crt:/etc/tidings/acme-smime.key,...")
// and TIDINGS_OPENPGP_KEYS ("acme:/etc/tidings/acme-openpgp.asc,...").
// The files must exist; the keys in them are checked when the email
// channel is built.
func (c Config) MessageSignerSpecs() ([]MessageSignerSpec, error) {
	var out []MessageSignerSpec
	for _, set := range []struct {
		env, value, kind, shape string
		fields                  int
	}{
		{"TIDINGS_SMIME_KEYS", c.SMIMEKeys, "smime", "tenant:cert.pem:key.pem", 3},
		{"TIDINGS_OPENPGP_KEYS", c.OpenPGPKeys, "openpgp", "tenant:key.asc", 2},
	} {
		for _, entry := range strings.Split(set.value, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			f := strings.SplitN(entry, ":", set.fields)
			if len(f) != set.fields || f[0] == "" || f[len(f)-1] == "" || f[1] == "" {
				return nil, fmt.Errorf("%s: an entry is not %s", set.env, set.shape)
			}
			sp := MessageSignerSpec{Tenant: f[0], Kind: set.kind, KeyFile: f[len(f)-1]}
			if set.fields == 3 {
				sp.CertFile = f[1]
			}
			for _, file := range []string{sp.CertFile, sp.KeyFile} {
				if file == "" {
					continue
				}
				if _, err := os.Stat(file); err != nil {
					return nil, fmt.Errorf("%s: signer of tenant %s: %w", set.env, sp.Tenant, err)
				}
			}
			out = append(out, sp)
		}
	}
	return out, nil
}
