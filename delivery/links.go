package delivery

import (
	"context"
	"errors"
	"fmt"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// OptOuts reads the purposes a patient unsubscribed from; store.Store
// implements it.
type OptOuts interface {
	OptedOutPurposes(ctx context.Context, tenantID, patientRef string) ([]string, error)
}

// MailLinks says which of a notice's own links its mail gets.
type MailLinks struct {
	TenantID string
	NoticeID int64
	// Unsubscribe is the purpose the one-click unsubscribe link opts out
	// of; "": no link (a required notice).
	Unsubscribe string
	// Tracking adds the open pixel and routes the mail's links through
	// click redirects.
	Tracking bool
}

// Links puts a notice's own links in its mail: the RFC 8058
// List-Unsubscribe headers, the open pixel and the click redirects. It
// fails only when it cannot make them (the mail then does not go: a
// marketing mail without its way out is not sent). links.Mailer is it.
type Links interface {
	Stamp(e notify.Email, l MailLinks) (notify.Email, error)
}

// errNoLinks: a marketing or tracked mail, and no Links configured.
var errNoLinks = errors.New("the workflow's mail needs unsubscribe or tracking links, and none can be made in this deployment; not sent")

// withOptOuts adds to c the purposes the patient unsubscribed from, for a
// notice of a purpose one can unsubscribe from; for a required notice the
// opt-outs cannot change the decision and are not read.
func (s *Service) withOptOuts(ctx context.Context, tenantID string, c Contact, purpose string, out outgoing) (Contact, error) {
	if !workflow.OffersUnsubscribe(purpose) {
		return c, nil
	}
	ps, err := s.Store.OptedOutPurposes(ctx, tenantID, out.patientRef)
	if err != nil {
		return c, fmt.Errorf("opt-outs: %w", err)
	}
	c.OptedOutPurposes = ps
	return c, nil
}

// stamp gives a mail about to go the links its workflow asks for: the
// unsubscribe headers of a marketing notice, tracking when the workflow
// enables it. A required notice untracked goes as it is, and so does every
// message on another channel: an SMS carries its fixed template with the
// plain portal link, which its channel checks.
func (s *Service) stamp(e notify.Email, noticeID int64, out outgoing) (notify.Email, error) {
	if out.channel != ChannelEmail {
		return e, nil
	}
	l := MailLinks{TenantID: out.tenant, NoticeID: noticeID, Tracking: out.tracking}
	if workflow.OffersUnsubscribe(out.purpose) {
		l.Unsubscribe = out.purpose
	}
	if l.Unsubscribe == "" && !l.Tracking {
		return e, nil
	}
	if s.Links == nil {
		return e, errNoLinks
	}
	return s.Links.Stamp(e, l)
}
