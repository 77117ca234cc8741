// Package delivery owns how a run's send step becomes a delivered notice:
// the run's event becomes minimum-necessary facts and a notice (package
// notify), the contact is found (API-registered first, then the bundle's
// Patient), the policy input is built, the notice's tenant's policy
// revision (or the default rules) decides, and the decision is applied by pure
// functions that fail closed (no decision, an obligation this version cannot
// meet, a redaction the notice cannot make: no send), and the message goes
// to the channel once, every step recorded (Notice, Decision with its tenant
// and revision, Delivery). A delivery that may have reached the relay
// without a reply saying so (notify.ErrUnknownOutcome, or an attempt that
// never finished) is recorded DeliveryUnknown and never retried on its own;
// an operator's resend goes through Send again (journey.Engine.Resend).
// A step's channel is email, sms (only the portal link, only under the
// policy's portal_only, only inside the workflow's SMS window: else
// journey.Deferred) or portal (nothing sent, the view stored); a step whose
// channel cannot deliver falls back to its fallback's channel on the same
// notice. It also validates and registers the contacts patients give
// through a tenant's systems (Contacts), with the patient's own encryption
// key: a notice to a patient with a usable key goes encrypted for it (the
// policy sees channel.security "message-encrypted"), and one whose key can
// no longer be used goes portal-only (encryption.go). It records the SMS
// provider's statuses and STOP/START replies (SMSReplies). Bounces applies
// a relay's delivery status notification to the delivery it names: a
// permanent failure marks it bounced, and repeated ones suppress the
// address until the contact is registered again (bounces.go). Service
// implements journey.Sender.
package delivery
