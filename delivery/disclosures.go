package delivery

import (
	"log/slog"
	"slices"
	"time"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// Why a notice discloses what it does (HIPAA 164.506): the accounting of
// disclosures records one of these with each.
const (
	PurposePayment    = "payment"
	PurposeTreatment  = "treatment"
	PurposeOperations = "operations"
	// PurposeMarketing: a marketing workflow's notice (HIPAA 164.508(a)(3),
	// sent only with the patient's authorization).
	PurposeMarketing = workflow.PurposeMarketing
)

// How much of a notice went out, as the accounting of disclosures
// describes its content (never the content itself).
const (
	DetailFull       = "full"        // the notice as built
	DetailRedacted   = "redacted"    // fields left out (Disclosure.Redacted names them)
	DetailPortalOnly = "portal-only" // a link to the portal, nothing else
)

// DisclosureViewed is the status of a disclosure made in the portal (a
// patient or a personal representative read the notice there); a
// delivery's is DeliverySent, or DeliveryUnknown when it may have gone out.
const DisclosureViewed = "viewed"

// Disclosure is one entry of a patient's accounting of disclosures
// (HIPAA 164.528): when, to whom, what kind of content and why. It holds
// the recipient's address in clear while in memory; the store seals it.
type Disclosure struct {
	ID       int64 // 0 until recorded
	TenantID string
	// PatientIndex is the patient's blind index (as contacts and runs
	// keep it); PatientRef the patient reference, which the store keeps
	// only sealed (to re-key the index when its key is rotated).
	PatientIndex string
	PatientRef   string
	At           time.Time // zero: when it is recorded
	Status       string    // DeliverySent, DeliveryUnknown or DisclosureViewed
	Channel      string    // email, portal, …
	Recipient    string    // the address it went to
	NoticeType   string    // eob, appointment: the content's class
	Detail       string    // DetailFull, DetailRedacted or DetailPortalOnly
	Redacted     []string  // the fields left out, by name
	Purpose      string    // PurposePayment, PurposeTreatment, PurposeOperations or PurposeMarketing
	NoticeID     int64
	DeliveryID   int64 // 0: not a delivery (a portal view)
	Attempt      int   // the delivery's attempt
}

// LogValue keeps the recipient out of logs.
func (Disclosure) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// PurposeOf is the purpose of a notice: the workflow's, when its
// definition names one, else the notice type's (an EOB is about payment,
// an appointment about treatment).
func PurposeOf(workflowPurpose, noticeType string) string {
	switch {
	case workflowPurpose != "":
		return workflowPurpose
	case noticeType == notify.NoticeTypeEOB:
		return PurposePayment
	}
	return PurposeTreatment
}

// disclosed describes what a plan sends: how much of the notice, to whom
// on which channel. The policy input adds the notice type and purpose, the
// delivery's outcome the rest.
func disclosed(channel, recipient string, redacted []string, portalOnly bool) Disclosure {
	d := Disclosure{Channel: channel, Recipient: recipient, Detail: DetailFull}
	switch {
	case portalOnly:
		d.Detail = DetailPortalOnly
	case len(redacted) > 0:
		d.Detail, d.Redacted = DetailRedacted, slices.Clone(redacted)
	}
	return d
}

// DisclosureQuery selects a page of one patient's disclosures.
type DisclosureQuery struct {
	TenantID   string
	PatientRef string    // Patient/123: the store looks it up by its blind index
	From, To   time.Time // From inclusive, To exclusive; zero: unbounded
	After      DisclosureCursor
	Limit      int
}

// DisclosureCursor is where a page ends: the last entry's time and id.
type DisclosureCursor struct {
	At time.Time
	ID int64
}
