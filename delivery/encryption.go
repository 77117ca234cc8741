package delivery

import (
	"errors"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// RecipientEncrypter is a Channel that can encrypt a message for the
// recipient's own key (notify.EmailChannel): what it guarantees for a
// tenant's notice to a holder of key k at now.
type RecipientEncrypter interface {
	SecurityFor(tenant string, k *notify.RecipientKey, now time.Time) notify.Security
}

// encryption settles, for a contact who registered an encryption key, how
// the notice goes: encrypted for the key (out.encryptFor, and sec says
// MessageEncrypted, so the policy sees channel.security
// "message-encrypted"), or, when the key cannot be used now (expired,
// revoked, no signer for the tenant, a channel that cannot encrypt),
// portal-only with no PHI in the message (out.keyProblem says why). A
// patient who asked for encrypted mail never gets PHI in a message that
// is not. A contact without a key is left as it was.
func (s *Service) encryption(tenantID string, c Contact, out outgoing, sec notify.Security) (outgoing, notify.Security) {
	if c.EncryptionKey == "" {
		return out, sec
	}
	enc, ok := s.Channels[out.channel].(RecipientEncrypter)
	if !ok {
		out.keyProblem = "the " + out.channel + " channel cannot encrypt for the patient's key"
		return out, sec
	}
	now := time.Now()
	k, err := notify.ParseRecipientKey(c.EncryptionKey, now)
	if err != nil {
		out.keyProblem = "the patient's encryption key cannot be used now (" + keyReason(err) + ")"
		return out, sec
	}
	if sec = enc.SecurityFor(tenantID, k, now); !sec.MessageEncrypted {
		out.keyProblem = "no " + k.Kind + " signing key is configured for the tenant"
		return out, sec
	}
	out.encryptFor = k
	return out, sec
}

// EncryptionKeyKind is the kind of the contact's key (notify.KeySMIME,
// notify.KeyOpenPGP), "" for none.
func (c Contact) EncryptionKeyKind() string { return notify.KindOf(c.EncryptionKey) }

// keyFallback is how a notice that could not go encrypted is recorded.
func keyFallback(problem string) string {
	return problem + "; sent portal-only, with no PHI in the message"
}

// EncryptionKeyOf is the key a contact request gives: an S/MIME
// certificate (PEM) or an OpenPGP public key (armored), at most one, each
// of its kind; "" for none. Whether the key is usable is checked when the
// contact is registered.
func EncryptionKeyOf(smimeCertificate, openPGPKey string) (string, error) {
	switch {
	case smimeCertificate != "" && openPGPKey != "":
		return "", fault.New(fault.Invalid, "give smime_certificate or openpgp_key, not both")
	case smimeCertificate != "" && notify.KindOf(smimeCertificate) != notify.KeySMIME:
		return "", fault.New(fault.Invalid, "smime_certificate must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
	case openPGPKey != "" && notify.KindOf(openPGPKey) != notify.KeyOpenPGP:
		return "", fault.New(fault.Invalid, "openpgp_key must be an armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)")
	}
	return smimeCertificate + openPGPKey, nil
}

// keyProblem is what is wrong with a contact's encryption key at
// registration; "" when it is usable or there is none.
func keyProblem(key string, now time.Time) string {
	if key == "" {
		return ""
	}
	if _, err := notify.ParseRecipientKey(key, now); err != nil {
		return "encryption key: " + keyReason(err)
	}
	return ""
}

// keyReason is why a key is unusable: the rule it breaks (expired,
// revoked, too weak), which never quotes the key.
func keyReason(err error) string {
	if !errors.Is(err, notify.ErrUnusableKey) {
		return "it cannot be read"
	}
	return strings.TrimPrefix(err.Error(), notify.ErrUnusableKey.Error()+": ")
}
