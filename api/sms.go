package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// SMSReplies records what the SMS provider posts back; delivery.SMSReplies
// is it.
type SMSReplies interface {
	Status(ctx context.Context, ref, messageSID, status string) error
	Inbound(ctx context.Context, phone, body string) (keyword string, err error)
}

// SMSCallbacks configures the SMS provider's callbacks: POST /sms/status
// (delivery statuses) and POST /sms/inbound (replies: STOP, START), both
// signed by the provider (X-Twilio-Signature).
type SMSCallbacks struct {
	Replies SMSReplies
	// AuthToken is the provider's auth token, the signatures' key (secret).
	AuthToken string
	// PublicBaseURL is the base of the URLs the provider was given, as it
	// sees them: the signature covers the full URL it posted to, which a
	// proxy in front of serve may not pass on as it was.
	PublicBaseURL string
}

// maxSMSCallbackBytes bounds a callback's form: a provider's status or
// reply (at most ten segments of text) is a few kilobytes.
const maxSMSCallbackBytes = 16 << 10

// mountSMS adds the SMS callback routes.
func mountSMS(r gin.IRouter, cfg SMSCallbacks, limits ...gin.HandlerFunc) {
	s := &smsHandlers{cfg: cfg, base: strings.TrimRight(cfg.PublicBaseURL, "/")}
	g := r.Group("/sms", limits...)
	g.POST("/status", s.verified(s.status))
	g.POST("/inbound", s.verified(s.inbound))
}

type smsHandlers struct {
	cfg  SMSCallbacks
	base string
}

// verified reads the form and checks the provider's signature over the
// public URL and the form (403 when it is missing or wrong) before h runs.
func (s *smsHandlers) verified(h func(*gin.Context, url.Values)) gin.HandlerFunc {
	return func(c *gin.Context) {
		body, err := readBody(c, maxSMSCallbackBytes, "application/x-www-form-urlencoded")
		if err != nil {
			jsonError(c, err)
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			jsonError(c, fault.New(fault.Invalid, "the body is not a URL-encoded form"))
			return
		}
		if !notify.ValidSMSSignature(s.cfg.AuthToken, s.base+c.Request.URL.RequestURI(), form, c.GetHeader("X-Twilio-Signature")) {
			jsonError(c, fault.New(fault.Forbidden, "the X-Twilio-Signature is missing or does not match"))
			return
		}
		h(c, form)
	}
}

// status records a delivery status: MessageSid and MessageStatus, for the
// delivery whose reference the callback URL's ref carries.
func (s *smsHandlers) status(c *gin.Context, form url.Values) {
	if err := s.cfg.Replies.Status(c.Request.Context(), c.Query("ref"), form.Get("MessageSid"), form.Get("MessageStatus")); err != nil {
		jsonError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// emptyTwiML answers a reply with no message of ours: the provider sends
// its own confirmation of STOP and START.
const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response></Response>`

// inbound reads a patient's reply: STOP and START keywords change the SMS
// opt-out of every contact with the From number. The text is not kept.
func (s *smsHandlers) inbound(c *gin.Context, form url.Values) {
	if _, err := s.cfg.Replies.Inbound(c.Request.Context(), form.Get("From"), form.Get("Body")); err != nil {
		jsonError(c, err)
		return
	}
	c.Data(http.StatusOK, "text/xml; charset=utf-8", []byte(emptyTwiML))
}
