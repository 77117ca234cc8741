package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/workflow"
)

// Channels besides the portal (ChannelPortal).
const (
	ChannelEmail = workflow.ChannelEmail
	ChannelSMS   = workflow.ChannelSMS
)

// addressOf is where a notice on channel goes for contact c, "" when the
// patient has none there: the phone for SMS, else the email (a
// confidential one first).
func addressOf(c Contact, channel string) string {
	switch {
	case channel == ChannelSMS:
		return c.Phone
	case c.ConfidentialEmail != "":
		return c.ConfidentialEmail
	}
	return c.Email
}

// portalAddress is the portal view's address of record, where its
// one-time code goes: the address the notice went to, or, for a notice
// that went by SMS or only to the portal, the email on file.
func portalAddress(c Contact, channel, sentTo string) string {
	if channel == ChannelSMS || channel == ChannelPortal {
		return addressOf(c, ChannelEmail)
	}
	return sentTo
}

// undeliverable is a send its channel cannot deliver (no address there, or
// refused for good), returned instead of failing the notice when the step
// has a fallback to try.
type undeliverable struct{ reason string }

func (u *undeliverable) Error() string { return u.reason }

// undeliverable fails the notice, or, when the step can fall back,
// returns *undeliverable for sendStep to try the fallback. reason holds
// no PHI.
func (s *Service) undeliverable(ctx context.Context, n Notice, out outgoing, reason string) error {
	if out.canFallBack {
		return &undeliverable{reason: reason}
	}
	return s.fail(ctx, n, out.channel, reason)
}

// sendStep delivers a send step's notice on its channel and, when that
// channel cannot deliver it (no address, refused for good) and the step
// has a fallback, on the fallback's channel: the same notice, another
// delivery.
func (s *Service) sendStep(ctx context.Context, n Notice, run journey.Run, contact Contact, sub subject, out outgoing, req journey.Send) (bool, error) {
	fb := req.Action.Fallback
	out.canFallBack = fb != nil && fb.Channel != out.channel
	delivered, err := s.sendOn(ctx, n, run, contact, sub, out, req)
	var unsent *undeliverable
	if !out.canFallBack || !errors.As(err, &unsent) {
		return delivered, err
	}
	if s.Log != nil {
		s.Log.Info("send falls back", "notice_id", n.ID, "step", req.Action.Step, "from", out.channel, "to", fb.Channel, "reason", unsent.reason)
	}
	out.channel, out.canFallBack = fb.Channel, false
	if fb.Template != "" {
		out.template = fb.Template
	}
	return s.sendOn(ctx, n, run, contact, sub, out, req)
}

// sendOn delivers the notice on out.channel: a portal step records it for
// the portal; an SMS waits for the workflow's SMS window and carries only
// the portal link (smsDraft); anything else goes through decideAndSend.
func (s *Service) sendOn(ctx context.Context, n Notice, run journey.Run, contact Contact, sub subject, out outgoing, req journey.Send) (bool, error) {
	if out.channel == ChannelSMS {
		if err := s.quietTime(ctx, n, contact, req); err != nil {
			return false, err
		}
	}
	base, d := s.draftFor(sub, contact, n.PortalToken, out.purpose)
	switch out.channel {
	case ChannelPortal:
		return s.toPortal(ctx, n, contact, base, d, out, portalViewOf(sub))
	case ChannelSMS:
		d = &smsDraft{full: d, portalURL: portalURLOf(d)}
	}
	return s.decideAndSend(ctx, n, run, contact, base, d, out, portalViewOf(sub))
}

// quietTime defers an SMS due outside the workflow's SMS window to its
// next opening (journey.Deferred); on the last try it fails the notice
// instead. nil: the SMS may go now.
func (s *Service) quietTime(ctx context.Context, n Notice, contact Contact, req journey.Send) error {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	open, err := workflow.SMSOpening(req.Workflow, now, contact.TimeZone, req.Run.Facts)
	if err != nil || !open.After(now) {
		return nil // a window Validate refused cannot be saved; none to keep
	}
	if req.LastTry {
		return s.fail(ctx, n, ChannelSMS, "the SMS was due in the workflow's quiet time at its last try; not sent")
	}
	return &journey.Deferred{Until: open}
}

// toPortal carries out a portal step: nothing is sent; the policy decides
// what the authenticated portal may show, the view is stored sealed with
// the notice, and a portal delivery records that the notice is there.
// Its disclosure is accounted for when the patient views it.
func (s *Service) toPortal(ctx context.Context, n Notice, contact Contact, base policy.Input, d draft, out outgoing, view PortalView) (bool, error) {
	if slices.Contains(contact.OptedOutChannels, ChannelPortal) {
		return false, s.finish(ctx, n, ChannelPortal, NoticeDenied, []string{"the patient opted out of portal (enforced by the worker)"})
	}
	// Nothing is sent: what is stored "as sent" is the link alone.
	payload, err := (&smsDraft{portalURL: portalURLOf(d)}).Payload()
	if err != nil {
		return false, s.fail(ctx, n, ChannelPortal, "the notice could not be encoded")
	}
	portal, prec, err := s.portalDecision(ctx, n.TenantID, contact, base, d, out, portalAddress(contact, ChannelPortal, ""), view)
	if err != nil {
		return false, fmt.Errorf("notice %d: portal: %w", n.ID, err)
	}
	if prec != nil {
		prec.NoticeID = n.ID
	}
	if err := s.Store.SealNoticePayload(ctx, n.ID, payload, portal, prec); err != nil {
		return false, fmt.Errorf("notice %d: %w", n.ID, err)
	}
	dl, proceed, err := s.Store.BeginDelivery(ctx, n, ChannelPortal, "", out.resend, Disclosure{})
	switch {
	case errors.Is(err, ErrRunEnded):
		return false, s.finish(ctx, n, ChannelPortal, NoticeSkipped, []string{"the run ended before the notice was put in the portal"})
	case err != nil:
		return false, fmt.Errorf("notice %d: begin delivery: %w", n.ID, err)
	case proceed:
		if err := s.Store.FinishDelivery(ctx, dl, DeliverySent, true, "", "", Disclosure{}); err != nil {
			return false, err
		}
	}
	return true, s.finish(ctx, n, ChannelPortal, NoticeSent, nil)
}

// portalURLOf reads a draft's portal link.
func portalURLOf(d draft) string {
	u, _ := d.Fields()["portal_url"].(string)
	return u
}

// smsDraft is a notice on its way to SMS: the policy judges, and the
// message carries, only the portal link, whatever the notice holds. Its
// Clone is the full notice, undecided: the portal's decision starts from
// it, as for every channel.
type smsDraft struct {
	full      draft
	portalURL string
}

func (d *smsDraft) Fields() map[string]any { return map[string]any{"portal_url": d.portalURL} }
func (d *smsDraft) Redact(fields ...string) error {
	if slices.Contains(fields, "portal_url") {
		return errors.New("an SMS without its portal link has no purpose")
	}
	return nil
}
func (d *smsDraft) HideProvider() []string { return nil }
func (d *smsDraft) PortalOnly()            {}
func (d *smsDraft) Render(_, lang, _ string, _ bool) (notify.Email, error) {
	return notify.RenderSMS("", d.portalURL, lang)
}
func (d *smsDraft) Payload() ([]byte, error) { return json.Marshal(d.Fields()) }
func (d *smsDraft) Clone() draft             { return d.full.Clone() }

// smsPlan completes apply for an SMS the policy allowed, failing closed:
// the policy must have set portal_only (an SMS never carries more than the
// link), a patient who asked for confidential communications at an
// address gets no SMS, and the text is the fixed template with the
// workflow's sender name (which the channel checks again).
func smsPlan(dec policy.Decision, d draft, c Contact, out outgoing, portalOnly bool) plan {
	switch {
	case !portalOnly:
		return failed("the policy did not oblige portal_only on sms; an SMS carries only the portal link, so it is not sent")
	case dec.Has("route_to_confidential_address") || c.ConfidentialEmail != "":
		return plan{Status: NoticeDenied, Reasons: []string{"the patient asked to be reached only at a confidential address; an SMS would reach another (enforced by the worker)"}}
	}
	msg, err := notify.RenderSMS(out.from.Name, portalURLOf(d), c.Language)
	if err != nil {
		return failed("the SMS could not be rendered: the workflow's sender name is not a short plain name")
	}
	msg.To, msg.TenantID = c.Phone, out.tenant
	payload, err := d.Payload()
	if err != nil {
		return failed("the notice could not be encoded")
	}
	return plan{Email: msg, Payload: payload, PortalOnly: true, Disclosure: disclosed(out.channel, msg.To, nil, true)}
}
