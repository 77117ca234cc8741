package delivery

import (
	"context"
	"errors"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// DefaultSuppressAfter is how many permanent bounces of an address
// suppress it when TIDINGS_BOUNCE_SUPPRESS_AFTER is unset: one hard bounce
// may be a relay's mistake, two are a pattern.
const DefaultSuppressAfter = 2

// BounceStore records a relay's report on a delivery.
type BounceStore interface {
	// RecordBounce applies b to the tenant's delivery whose message had
	// messageID, audited as actor; fault.NotFound when there is none.
	RecordBounce(ctx context.Context, tenantID, messageID string, b notify.Bounce, suppressAfter int, actor string) (Bounced, error)
}

// Bounced is what a report changed.
type Bounced struct {
	DeliveryID, NoticeID int64
	Hard                 bool
	// Counted is a permanent failure of a delivery not bounced before:
	// the delivery is now bounced and the address's count went up.
	Counted bool
	// Suppressed is how many of the patient's contact rows are now
	// suppressed (their address bounced SuppressAfter times).
	Suppressed int
	// Patient and Subject name the "email.bounced" engagement a caller
	// records for the notice's runs to see ("Patient/7",
	// "ExplanationOfBenefit/123"); "" when the notice has no portal view.
	Patient, Subject string
}

// Bounces applies relays' delivery status notifications to deliveries.
type Bounces struct {
	Store BounceStore
	// SuppressAfter is the number of permanent bounces that suppresses an
	// address; DefaultSuppressAfter when 0.
	SuppressAfter int
}

// ErrUnnamedBounce means a report does not name the bounced message.
var ErrUnnamedBounce = fault.New(fault.Invalid, "the report does not quote the bounced message's Message-ID (it needs its headers: text/rfc822-headers or message/rfc822)")

// Record reads a delivery status notification (raw, as the relay mailed
// it to the envelope sender) and applies it to the tenant's delivery it
// names. A report that is not one is fault.Invalid; one about a message
// the tenant never sent, fault.NotFound.
func (b Bounces) Record(ctx context.Context, tenantID, actor string, raw []byte) (Bounced, notify.Bounce, error) {
	report, err := notify.ParseDSN(raw)
	if err != nil {
		if errors.Is(err, notify.ErrNotDSN) {
			return Bounced{}, report, fault.Errorf(fault.Invalid, "%w", err)
		}
		return Bounced{}, report, err
	}
	if report.MessageID == "" {
		return Bounced{}, report, ErrUnnamedBounce
	}
	after := b.SuppressAfter
	if after <= 0 {
		after = DefaultSuppressAfter
	}
	done, err := b.Store.RecordBounce(ctx, tenantID, report.MessageID, report, after, actor)
	return done, report, err
}
