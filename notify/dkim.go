package notify

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"os"
	"strings"

	"github.com/wneessen/go-mail"
)

// DKIMKey signs (DKIM, RFC 6376) the mail of one tenant whose header From
// is at Domain: the key a health plan publishes under
// Selector._domainkey.Domain. TenantID "*" signs for every tenant; use it
// only for the service's own sender domain, since a tenant's workflow may
// name any From address, and a key of one tenant's domain must never sign
// another tenant's mail.
type DKIMKey struct {
	TenantID, Domain, Selector string
	Signer                     crypto.Signer
}

// LoadDKIMKey reads a PEM private key (PKCS#1 or PKCS#8; RSA of at least
// 2048 bits, or Ed25519) for tenant, domain and selector.
func LoadDKIMKey(tenant, domain, selector, pemFile string) (DKIMKey, error) {
	raw, err := os.ReadFile(pemFile)
	if err != nil {
		return DKIMKey{}, fmt.Errorf("DKIM key of %s: %w", domain, err)
	}
	signer, err := mail.PrivKeyFromPEM(raw)
	if err != nil {
		return DKIMKey{}, fmt.Errorf("DKIM key of %s (%s): %w", domain, pemFile, err)
	}
	return DKIMKey{TenantID: tenant, Domain: domain, Selector: selector, Signer: signer}, nil
}

// dkimKeys are the channel's keys by tenant and lower-case domain.
type dkimKeys map[[2]string]DKIMKey

// newDKIMKeys checks keys and indexes them, reporting each bad one.
func newDKIMKeys(keys []DKIMKey, bad func(string)) dkimKeys {
	out := dkimKeys{}
	for _, k := range keys {
		k.Domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(k.Domain), "."))
		name := "DKIM key of " + k.Domain
		switch {
		case k.TenantID == "":
			bad(name + " names no tenant (\"*\" for all)")
		case k.Domain == "" || len(k.Domain) > 253 || !hostnameRE.MatchString(k.Domain):
			bad("a DKIM key's domain is not a domain name")
		case k.Selector == "" || !hostnameRE.MatchString(k.Selector):
			bad(name + " has no valid selector")
		}
		switch key := k.Signer.(type) {
		case *rsa.PrivateKey:
			if key.N.BitLen() < 2048 {
				bad(fmt.Sprintf("%s is RSA of %d bits; at least 2048 (RFC 8301)", name, key.N.BitLen()))
			}
		case ed25519.PrivateKey:
		default:
			bad(name + " is neither RSA nor Ed25519")
		}
		id := [2]string{k.TenantID, k.Domain}
		if _, dup := out[id]; dup {
			bad(name + " is given twice for tenant " + k.TenantID)
		}
		out[id] = k
	}
	return out
}

// signer is the DKIM signer for a message of tenant from address from: the
// tenant's key of that domain, else one for every tenant; nil when there
// is none (the mail goes unsigned, and a receiver applying the domain's
// DMARC policy sees it fail).
func (ks dkimKeys) signer(tenant, from string) *mail.DKIMSigner {
	if len(ks) == 0 {
		return nil
	}
	domain := strings.ToLower(from[strings.LastIndexByte(from, '@')+1:])
	k, ok := ks[[2]string{tenant, domain}]
	if !ok {
		if k, ok = ks[[2]string{"*", domain}]; !ok {
			return nil
		}
	}
	s := mail.NewDKIMSigner(k.Domain, k.Selector, k.Signer)
	// Relaxed: relays re-fold headers and re-wrap trailing whitespace.
	s.HeaderCanonicalization(mail.CanonicalizationRelaxed)
	s.BodyCanonicalization(mail.CanonicalizationRelaxed)
	return s
}
