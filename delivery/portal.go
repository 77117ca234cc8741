package delivery

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
)

// ChannelPortal is the portal as a channel: the page the notice's link
// opens. The policy judges it as its own channel, with the security of a
// patient who has proved who they are.
const ChannelPortal = "portal"

// portalSecurity is how the portal protects what it shows.
var portalSecurity = policy.Channel{Type: ChannelPortal, Security: policy.ChannelPortalAuthenticated}

// Disclosure is what showing the view to the patient discloses: recorded
// in the accounting of disclosures (status viewed, channel portal, the
// recipient the address of record) when the portal shows it.
func (v PortalView) Disclosure(tenantID, patientRef, patientIndex string, noticeID int64) Disclosure {
	detail := v.Detail
	if detail == "" {
		detail = DetailFull // a view sealed before views named their detail: claim all of it
	}
	return Disclosure{TenantID: tenantID, PatientIndex: patientIndex, PatientRef: patientRef, Status: DisclosureViewed, Channel: ChannelPortal,
		Recipient: v.Email, NoticeType: v.NoticeType, Detail: detail, Redacted: v.Redacted,
		Purpose: PurposeOf(v.Purpose, v.NoticeType), NoticeID: noticeID}
}

// PortalView is what the portal shows of a notice and what it needs to
// check who opens it, decided when the notice is sent and stored sealed
// with it: it is PHI.
type PortalView struct {
	NoticeType string `json:"notice_type"`
	// Payload is the notice as the policy allowed it on the authenticated
	// portal (notify.EOBNotice or notify.AppointmentNotice); nil when the
	// policy allowed nothing there.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Reasons say why there is no payload (policy texts, no PHI).
	Reasons []string `json:"reasons,omitempty"`
	// Email is the address of record: where the notice went, and where
	// the portal's one-time code goes.
	Email     string `json:"email"`
	Language  string `json:"language,omitempty"`
	BirthDate string `json:"birth_date,omitempty"` // YYYY-MM-DD, when the source gave it
	// Patient and Subject name the portal.viewed event, as a posted one
	// would ("Patient/7", "ExplanationOfBenefit/123").
	Patient string `json:"patient"`
	Subject string `json:"subject"`
	// What a view discloses, for the accounting of disclosures: the
	// purpose, and the detail the portal's decision left (full, redacted
	// fields).
	Purpose  string   `json:"purpose,omitempty"`
	Detail   string   `json:"detail,omitempty"`
	Redacted []string `json:"redacted,omitempty"`
}

// LogValue keeps the view out of logs.
func (PortalView) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// portalURL is the notice's link: the tenant's portal and the token.
func (s *Service) portalURL(tenantID, token string) string {
	return strings.TrimRight(s.PublicBaseURL, "/") + "/portal/" + url.PathEscape(tenantID) + "/notices/" + token
}

// portalViewOf starts a notice's portal view from what it is about.
func portalViewOf(sub subject) PortalView {
	v := PortalView{NoticeType: sub.noticeType}
	if refs := journey.PatientRefs(sub.patientID, sub.patientRef); len(refs) > 0 {
		v.Patient = refs[0]
	}
	if pc, ok := sub.rec.PatientContact(sub.patientRef); ok {
		v.BirthDate = pc.BirthDate
	}
	if sub.event != nil {
		v.Subject = sub.event.ResourceType + "/" + sub.event.ResourceID
	}
	return v
}

// portalDecision asks the policy what the authenticated portal may show of
// the notice (pd, a copy of the draft no decision has changed) and fills
// v with it and with the address the notice goes to. It returns the sealed
// view's plaintext and the decision to log (nil when none was made).
func (s *Service) portalDecision(ctx context.Context, tenantID string, contact Contact, base policy.Input, pd draft, out outgoing, to string, v PortalView) ([]byte, *Decision, error) {
	pout := out
	pout.channel = ChannelPortal
	in := policyInput(base, pd, ChannelPortal, notify.Security{}, contact)
	in.Channel = portalSecurity
	p, rec, err := s.decide(ctx, tenantID, contact, in, pd, pout)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case p.Status != "":
		v.Reasons = p.Reasons
	case p.PortalOnly:
		v.Reasons = []string{"the policy allows the portal to show nothing of this notice"}
	default:
		v.Payload, v.Detail, v.Redacted = p.Payload, p.Disclosure.Detail, p.Disclosure.Redacted
	}
	v.Email, v.Language, v.Purpose = to, contact.Language, base.Purpose
	b, err := json.Marshal(v)
	return b, rec, err
}
