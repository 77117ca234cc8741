package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// SMS limits. A text longer than two concatenated segments is refused: the
// fixed template with a portal link fits well within it.
const (
	SMSMaxRunes       = 320
	smsMaxSenderRunes = 40
	DefaultSMSTimeout = 15 * time.Second
)

// ErrInvalidSMS: the message is not the fixed SMS template with a portal
// link (or its recipient is not an E.164 number). Nothing was sent. It
// wraps ErrInvalidEmail so callers treat it as any unsendable message.
var ErrInvalidSMS = fmt.Errorf("%w: not the fixed sms template", ErrInvalidEmail)

// smsTexts are, per language, the only texts the SMS channel sends: who
// the message is from and the portal link, never what the notice is about.
// The default sender stands in when the workflow names none.
var smsTexts = map[string]struct{ text, defaultSender string }{
	"en": {"You have a new message from %s. Read it securely: %s Reply STOP to opt out.", "your health plan"},
	"es": {"Tiene un mensaje nuevo de %s. Léalo de forma segura: %s Responda STOP para no recibir más.", "su plan de salud"},
	"vi": {"Quý vị có tin nhắn mới từ %s. Đọc an toàn tại: %s Trả lời STOP để ngừng nhận.", "chương trình bảo hiểm của quý vị"},
}

// smsSender is what a sender name in an SMS may look like: a plan's name,
// short, without anything that reads as a link or markup.
var smsSender = regexp.MustCompile(`^[\p{L}\p{N}][\p{L}\p{N} &.,'()-]*$`)

// RenderSMS renders the only SMS Tidings sends: "You have a new message
// from <sender>" and the portal link (an opaque token), in the patient's
// language. It carries no PHI: not the notice's type, date, amount or
// provider. sender is the workflow's sender name ("" for the default).
func RenderSMS(sender, portalURL, lang string) (Email, error) {
	portal, err := checkPortalURL(portalURL)
	if err != nil {
		return Email{}, err
	}
	if !ValidSMSSender(sender) {
		return Email{}, fmt.Errorf("%w: the sender name is not a short plain name", ErrInvalidSMS)
	}
	return Email{Text: smsText(pickLanguage(lang), sender, portal), FromName: sender}, nil
}

// ValidSMSSender reports whether name may stand as the sender in an SMS:
// short, letters, digits, spaces and & . , ' ( ) - only ("" is the default).
func ValidSMSSender(name string) bool {
	return name == "" || (utf8.RuneCountInString(name) <= smsMaxSenderRunes && smsSender.MatchString(name))
}

func smsText(lang, sender, portal string) string {
	t := smsTexts[lang]
	if sender == "" {
		sender = t.defaultSender
	}
	return fmt.Sprintf(t.text, sender, portal)
}

// e164 is an E.164 number: "+", a country code not starting with 0, and
// at most 15 digits in all.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// ValidE164 reports whether s is a phone number in E.164 form (+15551234567).
func ValidE164(s string) bool { return e164.MatchString(s) }

// SMSConfig configures the SMS channel: a provider with Twilio's Messages
// API (POST {BaseURL}/2010-04-01/Accounts/{AccountSID}/Messages.json, form
// fields To, From, Body, StatusCallback, HTTP basic auth AccountSID:AuthToken).
type SMSConfig struct {
	BaseURL    string // e.g. https://api.twilio.com; http only for loopback test servers
	AccountSID string
	AuthToken  string // secret: never logged
	From       string // the sending number, E.164
	// StatusCallback is where the provider posts delivery statuses
	// ({public base}/sms/status); "" asks for none.
	StatusCallback string
	// PortalBaseURL is the public base the portal links must start with:
	// a text whose link points anywhere else is refused.
	PortalBaseURL string
	Timeout       time.Duration // default 15s
	// Client sends the requests; nil: a client with Timeout.
	Client *http.Client
}

// LogValue logs the config without its secrets.
func (c SMSConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.BaseURL), slog.Bool("auth", c.AuthToken != ""),
		slog.Bool("status_callback", c.StatusCallback != ""))
}

// SMSChannel sends the fixed, PHI-free SMS (RenderSMS) through an HTTP
// provider. Its Send refuses every other text: it is the channel's own
// lock, after the policy's portal_only obligation.
type SMSChannel struct {
	cfg      SMSConfig
	endpoint string
	portal   *regexp.Regexp
	client   *http.Client
}

var smsSID = regexp.MustCompile(`^[A-Za-z0-9]{2,64}$`)

// NewSMSChannel validates cfg (every problem at once, wrapped in
// ErrInvalidConfig) and returns a channel.
func NewSMSChannel(cfg SMSConfig) (*SMSChannel, error) {
	var problems []string
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || base.Host == "" || base.User != nil || (base.Scheme != "https" && !(base.Scheme == "http" && isLoopback(base.Hostname()))) {
		problems = append(problems, "base URL must be https (http only on loopback)")
	}
	if !smsSID.MatchString(cfg.AccountSID) {
		problems = append(problems, "account SID is empty or not alphanumeric")
	}
	if cfg.AuthToken == "" {
		problems = append(problems, "auth token is empty")
	}
	if !ValidE164(cfg.From) {
		problems = append(problems, "from is not an E.164 number")
	}
	if cfg.StatusCallback != "" {
		if u, err := url.Parse(cfg.StatusCallback); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			problems = append(problems, "status callback is not an absolute URL")
		}
	}
	pb, err := url.Parse(cfg.PortalBaseURL)
	if err != nil || pb.Host == "" || (pb.Scheme != "https" && pb.Scheme != "http") {
		problems = append(problems, "portal base URL is not an absolute URL")
	}
	orDefault(&cfg.Timeout, DefaultSMSTimeout, "timeout", func(p string) { problems = append(problems, p) })
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: sms: %s", ErrInvalidConfig, strings.Join(problems, "; "))
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: cfg.Timeout}
	}
	return &SMSChannel{
		cfg:      cfg,
		endpoint: base.String() + "/2010-04-01/Accounts/" + cfg.AccountSID + "/Messages.json",
		// The portal's link: its base, a tenant and an opaque token, nothing else.
		portal: regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimRight(cfg.PortalBaseURL, "/")) +
			`/portal/[A-Za-z0-9._~-]{1,64}/notices/[A-Za-z0-9_-]{16,128}$`),
		client: client,
	}, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Security: an SMS crosses carriers in clear, whatever the API call's TLS.
func (c *SMSChannel) Security() Security { return Security{} }

// Check reports whether e is an SMS this channel may send: an E.164
// recipient, no subject, HTML or addresses, and a text that is exactly
// the fixed template of one language with this deployment's portal link
// and a plain sender name. It fails closed: anything else is ErrInvalidSMS.
func (c *SMSChannel) Check(e Email) error {
	switch {
	case !ValidE164(e.To):
		return fmt.Errorf("%w: the recipient is not an E.164 number", ErrInvalidSMS)
	case e.Subject != "" || e.HTML != "" || e.From != "" || e.ReplyTo != "":
		return fmt.Errorf("%w: only a text body is sent", ErrInvalidSMS)
	case utf8.RuneCountInString(e.Text) > SMSMaxRunes:
		return fmt.Errorf("%w: the text is longer than %d characters", ErrInvalidSMS, SMSMaxRunes)
	}
	if !ValidSMSSender(e.FromName) {
		return fmt.Errorf("%w: the sender name is not a short plain name", ErrInvalidSMS)
	}
	for lang := range smsTexts {
		link, ok := smsLink(lang, e.FromName, e.Text)
		if ok && c.portal.MatchString(link) && smsText(lang, e.FromName, link) == e.Text {
			return nil
		}
	}
	return fmt.Errorf("%w: the text is not the template with a portal link", ErrInvalidSMS)
}

// smsLink cuts the link out of text rendered from lang's template and
// sender; ok false when the text does not have the template's shape.
func smsLink(lang, sender, text string) (string, bool) {
	t := smsTexts[lang]
	if sender == "" {
		sender = t.defaultSender
	}
	head, tail, _ := strings.Cut(t.text, "%s")
	head = fmt.Sprintf(head+"%s", sender)
	mid, end, _ := strings.Cut(tail, "%s")
	head += mid
	if !strings.HasPrefix(text, head) || !strings.HasSuffix(text, end) || len(text) < len(head)+len(end) {
		return "", false
	}
	return text[len(head) : len(text)-len(end)], true
}

// smsRef is a delivery's reference as NewMessageID makes it.
var smsRef = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidSMSRef reports whether ref has the shape NewMessageID gives.
func ValidSMSRef(ref string) bool { return smsRef.MatchString(ref) }

// NewMessageID is a random reference for one SMS delivery (128 bits,
// hex): stored with the delivery before the message is handed over and
// carried in the status callback's URL, it names no patient or notice.
func (c *SMSChannel) NewMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// smsReply is what the provider answers to a created message.
type smsReply struct {
	SID    string `json:"sid"`
	Status string `json:"status"`
	Code   int    `json:"code"` // on errors: the provider's error code
}

// Send checks e (Check) and posts it to the provider. The receipt's
// MessageID is e.MessageID, the delivery's reference its status callbacks
// carry (the provider's SID when e has none). Errors wrap ErrInvalidSMS (nothing sent), ErrRejected (a 4xx
// answer: do not retry), ErrTemporary (429, 5xx, or the request never
// went out in full) or ErrUnknownOutcome (the request went out and no
// answer came). They name the stage and the HTTP status and provider
// code only: the provider's message text may echo the number.
func (c *SMSChannel) Send(ctx context.Context, e Email) (Receipt, error) {
	if err := c.Check(e); err != nil {
		return Receipt{}, err
	}
	form := url.Values{"To": {e.To}, "From": {c.cfg.From}, "Body": {e.Text}}
	if c.cfg.StatusCallback != "" {
		cb := c.cfg.StatusCallback
		if smsRef.MatchString(e.MessageID) {
			// The delivery's reference, so that its statuses find it.
			cb += "?ref=" + e.MessageID
		}
		form.Set("StatusCallback", cb)
	}
	var wrote bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) { wrote = i.Err == nil }})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Receipt{}, &SMSError{Stage: "request", Kind: ErrRejected}
	}
	req.SetBasicAuth(c.cfg.AccountSID, c.cfg.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		kind := ErrTemporary
		if wrote {
			kind = ErrUnknownOutcome
		}
		return Receipt{}, &SMSError{Stage: "post", Kind: kind, cause: transportCause(err)}
	}
	defer resp.Body.Close()
	var reply smsReply
	decErr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&reply)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return Receipt{}, &SMSError{Stage: "answer", Status: resp.StatusCode, Code: reply.Code, Kind: ErrTemporary}
	case resp.StatusCode >= 300:
		return Receipt{}, &SMSError{Stage: "answer", Status: resp.StatusCode, Code: reply.Code, Kind: ErrRejected}
	case decErr != nil || !smsSID.MatchString(reply.SID):
		// Created (2xx), but the answer does not name the message.
		return Receipt{}, &SMSError{Stage: "answer", Status: resp.StatusCode, Kind: ErrUnknownOutcome}
	}
	ref := e.MessageID
	if ref == "" {
		ref = reply.SID
	}
	return Receipt{MessageID: ref, TLS: strings.HasPrefix(c.endpoint, "https:")}, nil
}

// SMSError describes a failed SMS without the number or the text.
type SMSError struct {
	Stage  string // request, post, answer
	Status int    // HTTP status, 0 when there was no answer
	Code   int    // the provider's error code, 0 when none
	Kind   error  // ErrRejected, ErrTemporary or ErrUnknownOutcome
	cause  error
}

func (e *SMSError) Error() string {
	s := "notify: sms failed at " + e.Stage
	if e.Status != 0 {
		s += fmt.Sprintf(" (http %d", e.Status)
		if e.Code != 0 {
			s += fmt.Sprintf(", provider code %d", e.Code)
		}
		s += ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap exposes the kind and the transport cause.
func (e *SMSError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.cause}
}
