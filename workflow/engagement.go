package workflow

// PurposeMarketing is the purpose of a workflow whose notices the patient
// may opt out of: marketing and engagement mail, never a required notice
// (an EOB, an appointment's confirmation or reminder for treatment,
// payment or operations). Its mails carry a one-click unsubscribe link.
const PurposeMarketing = "marketing"

// Engagement types the links in a mail record (see package links).
const (
	EngagementOpened       = "opened"
	EngagementClicked      = "clicked"
	EngagementUnsubscribed = "unsubscribed"
)

// OffersUnsubscribe says whether a workflow's mails carry the one-click
// unsubscribe link: only marketing ones do.
func OffersUnsubscribe(purpose string) bool { return purpose == PurposeMarketing }

// tracking checks that a workflow that asks for tracking has a mail to
// track: an email send step.
func (v *validator) tracking() {
	if !v.d.Tracking {
		return
	}
	for _, s := range v.d.Steps {
		if s.Type == StepSend && (s.Channel == "" || s.Channel == "email") {
			return
		}
	}
	v.add("", "tracking", "needs an email send step (opens and clicks are tracked in mail only)")
}
