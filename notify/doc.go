// Package notify owns what a patient notice says and how it leaves: the
// minimum-necessary notice payloads (EOB and appointment) built field by
// field from fhir facts, the email templates that workflow steps name
// (Templates) rendered in each supported language, and the delivery
// channels. The email channel delivers over SMTP with TLS enforced unless
// configured otherwise, reusing a bounded pool of sessions, and reports what it guarantees (Security) so the
// policy can decide what may be sent through it. Its errors say whether a
// retry is safe: ErrTemporary only when the message was not sent in full,
// ErrUnknownOutcome when it was and the server's reply was lost. It also
// reads and checks a patient's own S/MIME certificate or OpenPGP key
// (ParseRecipientKey) and, for an Email that names one, sends the notice
// signed by the tenant (MessageSigner) and encrypted for it: CMS
// EnvelopedData with AES-256, or PGP/MIME (SecurityFor says when it can).
// ParseDSN reads the delivery status notifications (RFC 3464) a relay
// returns for a message it could not deliver: the message's Message-ID
// and whether the failure is permanent, never the recipients' addresses.
// The SMS channel (SMSChannel) posts to a Twilio-compatible HTTP API and
// sends only RenderSMS's fixed, PHI-free text with a portal link, refusing
// anything else; the package also checks the provider's callback
// signatures (ValidSMSSignature) and reads STOP/START replies (SMSKeyword).
package notify
