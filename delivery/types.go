package delivery

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tidings-health/tidings/notify"
)

// Notice statuses.
const (
	NoticePending = "pending"
	NoticeSent    = "sent"
	NoticeDenied  = "denied"
	NoticeFailed  = "failed"
	NoticeSkipped = "skipped"
)

// Notice is one notice a run's send step (or an event that led to no run)
// produced. Its payload is stored sealed and never held here.
type Notice struct {
	ID          int64
	TenantID    string
	EventID     int64
	Type        string // the policy's notice type: eob, appointment
	Status      string
	PortalToken string // opaque, random: the portal link carries only it
	RunID       *int64
	Step        string
	Template    string
}

// Delivery statuses.
const (
	DeliverySending = "sending"
	DeliverySent    = "sent"
	DeliveryFailed  = "failed"
	// DeliveryBounced: the relay accepted the message and later reported
	// that it could not deliver it, permanently (a DSN's failed 5.x.x).
	DeliveryBounced = "bounced"
	// DeliveryUnknown: the message may or may not have reached the relay
	// (its reply to DATA was lost, or the process died mid-send). It is
	// never retried on its own: an operator checks the relay's logs and
	// resolves it as sent or has it sent again.
	DeliveryUnknown = "unknown"
)

// Delivery is one (notice, channel) delivery and its attempts.
type Delivery struct {
	ID       int64
	TenantID string
	NoticeID int64
	Channel  string
	Status   string
	Attempts int
	// MessageID is the Message-ID every attempt's mail carries, chosen
	// before the first, so that an unknown outcome can be looked up in the
	// relay's log; "" for a channel that does not name its messages.
	MessageID string
}

// Contact is how to reach a patient and what the patient asked for, in
// clear: it lives in memory only while a notice is sent.
type Contact struct {
	Email    string
	Phone    string // E.164, for SMS; "" when none
	Language string
	TimeZone string
	Source   string // "api" or "fhir"
	// FHIRSource is, for a contact read from a FHIR bundle, the source whose
	// bundle carried it (journey.Event.Source): two sources' Patient/7 are
	// different patients, so each source's contacts are its own. Empty for a
	// contact registered through the API, which wins over every source's.
	FHIRSource string

	// What the patient asked for (set through the API only).
	OptedOutChannels    []string // e.g. "email", "sms"
	ConfidentialEmail   string   // HIPAA 164.522(b): send here, and only here
	Restrictions        []string // agreed restrictions, e.g. "eob", "all"
	MarketingAuthorized bool
	// OptedOutPurposes are the purposes the patient unsubscribed from (a
	// marketing mail's one-click link); read for marketing notices only.
	OptedOutPurposes []string
	AlternateFormat  string // e.g. "large-print"
	// EncryptionKey is the patient's S/MIME certificate (PEM) or OpenPGP
	// public key (armored), set through the API only; "" for none. With a
	// usable one, email goes encrypted for it (encryption.go).
	EncryptionKey string
	// EmailSuppressed: the recipient address bounced permanently as often
	// as TIDINGS_BOUNCE_SUPPRESS_AFTER allows; no email goes to it until
	// the contact is registered again (bounces.go).
	EmailSuppressed bool
}

// LogValue keeps contact details out of logs.
func (Contact) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Decision is one policy decision as the decision log keeps it: the input
// only as a hash, never the input.
type Decision struct {
	TenantID    string
	NoticeID    int64
	Channel     string // what the decision was for: "email", "portal"
	Revision    string
	InputHash   string
	Allow       bool
	Reasons     []string
	Redact      []string
	Obligations []string
	LatencyUS   int64
}

// Channel delivers one rendered notice and says how secure it is (the
// policy decides on that). notify.EmailChannel is the email channel and
// notify.SMSChannel the SMS one (it takes the Email's To as the phone and
// Text as the whole message); a portal step needs no channel.
type Channel interface {
	Security() notify.Security
	Send(ctx context.Context, e notify.Email) (notify.Receipt, error)
}

// MessageNamer is a Channel that names its messages: the name is chosen and
// stored with the delivery before the message is handed over.
type MessageNamer interface {
	NewMessageID() string
}

// messageIDFor is a new message name from ch, or "" when it names none.
func messageIDFor(ch Channel) string {
	if m, ok := ch.(MessageNamer); ok {
		return m.NewMessageID()
	}
	return ""
}

var (
	// ErrRunEnded means the notice's workflow run ended (a cancellation, an
	// appointment entered in error) after the notice was decided and before
	// it was delivered: it is not sent.
	ErrRunEnded = errors.New("the notice's run has ended")
	// ErrOutcomeUnknown means the delivery's outcome is unknown: an earlier
	// attempt claimed it and never recorded how it ended (the process died
	// mid-send; the claim then marks it DeliveryUnknown), or it already is
	// DeliveryUnknown. It may have been sent, so it is not sent again.
	ErrOutcomeUnknown = errors.New("delivery outcome unknown")
)
