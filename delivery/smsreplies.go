package delivery

import (
	"context"
	"regexp"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// SMSReplyStore is what the SMS provider's callbacks need from storage;
// store.Store implements it.
type SMSReplyStore interface {
	// RecordSMSStatus records the provider's status and id on the SMS
	// delivery with that reference; fault.NotFound when there is none.
	RecordSMSStatus(ctx context.Context, ref, providerID, status string) error
	// SetSMSOptOut adds "sms" to (optOut) or removes it from the opted-out
	// channels of every contact with that phone, audited; it returns how
	// many there are.
	SetSMSOptOut(ctx context.Context, phone string, optOut bool) (int, error)
}

// SMSReplies records what the SMS provider posts back, once its signature
// has been checked: delivery statuses, and the STOP and START replies that
// change patients' SMS opt-outs.
type SMSReplies struct {
	Store SMSReplyStore
}

// smsStatuses are the message statuses a Twilio-compatible provider reports.
var smsStatuses = map[string]bool{"accepted": true, "scheduled": true, "queued": true, "sending": true, "sent": true,
	"delivered": true, "undelivered": true, "failed": true, "read": true, "canceled": true}

var providerID = regexp.MustCompile(`^[A-Za-z0-9]{2,64}$`)

// Status records a delivery status for the SMS delivery with reference ref.
func (r SMSReplies) Status(ctx context.Context, ref, messageSID, status string) error {
	switch {
	case !notify.ValidSMSRef(ref):
		return fault.New(fault.Invalid, "ref must be the delivery reference the status callback URL was given")
	case !providerID.MatchString(messageSID):
		return fault.New(fault.Invalid, "MessageSid is missing or malformed")
	case !smsStatuses[status]:
		return fault.New(fault.Invalid, "MessageStatus is not a known message status")
	}
	return r.Store.RecordSMSStatus(ctx, ref, messageSID, status)
}

// Inbound reads a reply from phone: a STOP keyword opts every contact with
// that number out of SMS, a START keyword back in; any other text is
// ignored (and never stored: it may be PHI). It returns the keyword
// (notify.SMSKeywordStop, SMSKeywordStart or SMSKeywordNone).
func (r SMSReplies) Inbound(ctx context.Context, phone, body string) (string, error) {
	if !notify.ValidE164(phone) {
		return "", fault.New(fault.Invalid, "From must be an E.164 number")
	}
	kw := notify.SMSKeyword(body)
	if kw == notify.SMSKeywordNone {
		return kw, nil
	}
	_, err := r.Store.SetSMSOptOut(ctx, phone, kw == notify.SMSKeywordStop)
	return kw, err
}
