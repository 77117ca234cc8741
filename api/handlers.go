package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/metrics"
)

type handlers struct {
	cfg        Config
	log        *slog.Logger
	policyJobs *tenantJobs
}

const ctxSubscription = "tidings.subscription"
const ctxTenant = "tidings.tenant"
const ctxPrincipal = "tidings.principal"
const ctxRoute = "tidings.route" // the route the access log names, when not the router's pattern

// notifyTarget names a notify route's path segments tenant, subscription,
// type and id: /{tenant}/{subscription}[/{type}/{id}] withTenant, else
// /{subscription}[/{type}/{id}] (tenant ""), and gives the access log the
// route with those names.
func notifyTarget(withTenant bool) gin.HandlerFunc {
	names := []string{"tenant", "subscription", "type", "id"}
	return func(c *gin.Context) {
		first := 0
		if !withTenant {
			first = 1
		}
		route := c.FullPath()
		route = route[:strings.IndexByte(route, ':')]
		params := gin.Params{}
		for i, p := range c.Params {
			params = append(params, gin.Param{Key: names[first+i], Value: p.Value})
			if i > 0 {
				route += "/"
			}
			route += ":" + names[first+i]
		}
		c.Params = params
		c.Set(ctxRoute, route)
		c.Next()
	}
}

// authSubscription checks the subscription's shared secret, sent as
// "Authorization: Bearer <secret>" (what Subscription.channel.header carries).
func (h *handlers) authSubscription(c *gin.Context) {
	sub, err := h.cfg.Intake.Authenticate(c.Request.Context(), c.Param("tenant"), c.Param("subscription"), bearer(c))
	if err != nil {
		fhirError(c, err)
		return
	}
	c.Set(ctxSubscription, sub)
	c.Next()
}

// countRefused counts the notifications refused anywhere on their way (the
// rate limits, the secret, the body, intake); notify counts the others.
func (h *handlers) countRefused(c *gin.Context) {
	c.Next()
	switch s := c.Writer.Status(); {
	case s < 400:
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		h.cfg.Metrics.Notification(metrics.Unauthorized)
	case s == http.StatusTooManyRequests:
		h.cfg.Metrics.Notification(metrics.Throttled)
	case s >= 500:
		h.cfg.Metrics.Notification(metrics.Failed)
	default:
		h.cfg.Metrics.Notification(metrics.Rejected)
	}
}

func (h *handlers) notify(c *gin.Context) {
	body, err := readBody(c, h.cfg.MaxBodyBytes, "application/fhir+json", "application/json")
	if err != nil {
		fhirError(c, err)
		return
	}
	sub := c.MustGet(ctxSubscription).(intake.Subscription)
	if err := h.cfg.Intake.VerifySignature(c.Request.Context(), sub, body, c.GetHeader("X-Signature"), c.GetHeader("X-Signature-Timestamp")); err != nil {
		fhirError(c, err)
		return
	}
	var res intake.Result
	if typ := c.Param("type"); typ != "" {
		res, err = h.cfg.Intake.ReceiveResource(c.Request.Context(), sub, body, typ, c.Param("id"))
	} else {
		res, err = h.cfg.Intake.Receive(c.Request.Context(), sub, body)
	}
	if err != nil {
		if statusOf(err) >= 500 {
			h.log.Error("notification not processed", "subscription", sub.ID, "err", err)
			// The source will retry; whatever of this one took effect is
			// deduplicated, so its retry is not refused as a replay.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
			if ferr := h.cfg.Intake.ForgetSignature(fctx, sub, c.GetHeader("X-Signature")); ferr != nil {
				h.log.Error("signature not released", "subscription", sub.ID, "err", ferr)
			}
			cancel()
		}
		fhirError(c, err)
		return
	}
	status := http.StatusOK
	msg, counted := "notification recorded", metrics.Recorded
	if res.Accepted > 0 || res.Fetches > 0 {
		status = http.StatusAccepted
		msg, counted = "event(s) accepted for processing", metrics.Accepted
	} else if res.Duplicates > 0 {
		msg, counted = "duplicate event(s); already accepted", metrics.Duplicate
	} else if res.Ignored > 0 {
		msg, counted = "no event of a resource type Tidings notifies about", metrics.Ignored
	}
	h.cfg.Metrics.Notification(counted)
	h.cfg.Metrics.EventsAccepted(metrics.FromNotification, res.Accepted)
	c.Header("Content-Type", "application/fhir+json")
	c.Header("X-Tidings-Accepted", strconv.Itoa(res.Accepted))
	c.Header("X-Tidings-Duplicates", strconv.Itoa(res.Duplicates))
	c.Header("X-Tidings-Ignored", strconv.Itoa(res.Ignored))
	c.Header("X-Tidings-Fetches", strconv.Itoa(res.Fetches))
	c.JSON(status, outcome("information", "informational", msg))
}

// authAPI authenticates the API key and puts its principal, tenant and
// audit actor on the request.
func (h *handlers) authAPI(c *gin.Context) {
	if h.cfg.Keys == nil {
		jsonError(c, access.ErrUnauthenticated)
		return
	}
	p, err := h.cfg.Keys.Authenticate(c.Request.Context(), bearer(c))
	if err != nil {
		if !errors.Is(err, fault.Unauthorized) {
			h.log.Error("API key not checked", "err", err)
		}
		jsonError(c, err)
		return
	}
	c.Set(ctxPrincipal, p)
	c.Set(ctxTenant, p.TenantID)
	c.Request = c.Request.WithContext(audit.WithActor(c.Request.Context(), p.Actor()))
	c.Next()
}

// require lets only principals whose role may use the route through.
func require(role access.Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, ok := c.MustGet(ctxPrincipal).(access.Principal)
		if !ok || !p.May(role) {
			jsonError(c, fault.Errorf(fault.Forbidden, "this route needs an API key with role %s", role))
			return
		}
		c.Next()
	}
}

// ContactRequest is the body of PUT /v1/contacts/Patient/{id}.
type ContactRequest struct {
	Email string `json:"email,omitempty"`
	// Phone is for SMS, in E.164 form (+15551234567); sealed at rest like
	// the email. One of email and phone is required.
	Phone    string `json:"phone,omitempty"`
	Language string `json:"language,omitempty"`
	TimeZone string `json:"time_zone,omitempty"`
	// The patient's requests (HIPAA 164.522): channels opted out of, a
	// confidential-communication address to use instead, agreed
	// restrictions (a notice type, or "all"), marketing authorization, an
	// alternate format.
	OptedOutChannels    []string `json:"opted_out_channels,omitempty"`
	ConfidentialEmail   string   `json:"confidential_email,omitempty"`
	Restrictions        []string `json:"restrictions,omitempty"`
	MarketingAuthorized bool     `json:"marketing_authorized,omitempty"`
	AlternateFormat     string   `json:"alternate_format,omitempty"`
	// The patient's key for message-level encryption, at most one: an
	// S/MIME certificate (PEM) or an OpenPGP public key (armored). Email
	// then goes encrypted for it and signed by the tenant.
	SMIMECertificate string `json:"smime_certificate,omitempty"`
	OpenPGPKey       string `json:"openpgp_key,omitempty"`
}

func (h *handlers) putContact(c *gin.Context) {
	var req ContactRequest
	// Room for a key (notify.MaxRecipientKeyBytes) besides the rest.
	if err := decodeJSON(c, 48<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	key, err := delivery.EncryptionKeyOf(req.SMIMECertificate, req.OpenPGPKey)
	if err != nil {
		jsonError(c, err)
		return
	}
	err = h.cfg.Contacts.Register(c.Request.Context(), c.GetString(ctxTenant), c.Param("id"), delivery.Contact{
		Email: req.Email, Phone: req.Phone, Language: req.Language, TimeZone: req.TimeZone,
		OptedOutChannels: req.OptedOutChannels, ConfidentialEmail: req.ConfidentialEmail, Restrictions: req.Restrictions,
		MarketingAuthorized: req.MarketingAuthorized, AlternateFormat: req.AlternateFormat, EncryptionKey: key})
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "stored"})
}
