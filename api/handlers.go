package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
)

type handlers struct {
	cfg Config
	log *slog.Logger
}

const ctxSubscription = "tidings.subscription"
const ctxTenant = "tidings.tenant"

// authSubscription checks the subscription's shared secret, sent as
// "Authorization: Bearer <secret>" (what Subscription.channel.header carries).
func (h *handlers) authSubscription(c *gin.Context) {
	secret := bearer(c)
	if secret == "" {
		fhirError(c, newError(http.StatusUnauthorized, "login", "missing subscription secret (Authorization: Bearer …)"))
		return
	}
	sub, err := h.cfg.Intake.Authenticate(c.Request.Context(), c.Param("subscription"), secret)
	if err != nil {
		fhirError(c, err)
		return
	}
	c.Set(ctxSubscription, sub)
	c.Next()
}

func (h *handlers) notify(c *gin.Context) {
	body, err := readBody(c, h.cfg.MaxBodyBytes, "application/fhir+json", "application/json")
	if err != nil {
		fhirError(c, err)
		return
	}
	sub := c.MustGet(ctxSubscription).(store.Subscription)
	if err := h.cfg.Intake.VerifySignature(sub, body, c.GetHeader("X-Signature"), c.GetHeader("X-Signature-Timestamp")); err != nil {
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
		if classify(err).status >= 500 {
			h.log.Error("notification not processed", "subscription", sub.ID, "err", err)
		}
		fhirError(c, err)
		return
	}
	status := http.StatusOK
	msg := "notification recorded"
	if res.Accepted > 0 || res.Fetches > 0 {
		status = http.StatusAccepted
		msg = "event(s) accepted for processing"
	} else if res.Duplicates > 0 {
		msg = "duplicate event(s); already accepted"
	} else if res.Ignored > 0 {
		msg = "no event of a resource type Tidings notifies about"
	}
	c.Header("Content-Type", "application/fhir+json")
	c.Header("X-Tidings-Accepted", strconv.Itoa(res.Accepted))
	c.Header("X-Tidings-Duplicates", strconv.Itoa(res.Duplicates))
	c.Header("X-Tidings-Ignored", strconv.Itoa(res.Ignored))
	c.Header("X-Tidings-Fetches", strconv.Itoa(res.Fetches))
	c.JSON(status, outcome("information", "informational", msg))
}

// authAPI maps a bearer token to its tenant.
func (h *handlers) authAPI(c *gin.Context) {
	tok := bearer(c)
	for known, tenant := range h.cfg.APITokens {
		if tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(known)) == 1 {
			c.Set(ctxTenant, tenant)
			c.Next()
			return
		}
	}
	jsonError(c, newError(http.StatusUnauthorized, "login", "missing or unknown API token"))
}

// ContactRequest is the body of PUT /v1/contacts/Patient/{id}.
type ContactRequest struct {
	Email    string `json:"email"`
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
}

var (
	channelNames    = map[string]bool{"email": true, "sms": true, "push": true, "portal": true}
	restrictionName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
)

var (
	fhirID  = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
	langTag = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
)

func (h *handlers) putContact(c *gin.Context) {
	id := c.Param("id")
	if !fhirID.MatchString(id) {
		jsonError(c, newError(http.StatusBadRequest, "invalid", "the patient id is not a FHIR id"))
		return
	}
	body, err := readBody(c, 16<<10, "application/json")
	if err != nil {
		jsonError(c, err)
		return
	}
	if len(body) == 0 {
		jsonError(c, newError(http.StatusBadRequest, "invalid", "body must be a JSON object with email, language, time_zone"))
		return
	}
	var req ContactRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		jsonError(c, newError(http.StatusBadRequest, "invalid", "body must be a JSON object with email, language, time_zone"))
		return
	}
	var problems []string
	if addr, err := mail.ParseAddress(req.Email); err != nil || addr.Address != req.Email {
		problems = append(problems, "email must be a plain address such as name@example.org")
	}
	if req.Language != "" && !langTag.MatchString(req.Language) {
		problems = append(problems, "language must be a BCP-47 tag such as en or es-MX")
	}
	if req.TimeZone != "" {
		if _, err := time.LoadLocation(req.TimeZone); err != nil || req.TimeZone == "Local" {
			problems = append(problems, "time_zone must be an IANA zone such as America/Chicago")
		}
	}
	for _, ch := range req.OptedOutChannels {
		if !channelNames[ch] {
			problems = append(problems, "opted_out_channels: each must be email, sms, push or portal")
			break
		}
	}
	if req.ConfidentialEmail != "" {
		if addr, err := mail.ParseAddress(req.ConfidentialEmail); err != nil || addr.Address != req.ConfidentialEmail {
			problems = append(problems, "confidential_email must be a plain address")
		}
	}
	for _, r := range req.Restrictions {
		if !restrictionName.MatchString(r) {
			problems = append(problems, "restrictions: each must be a short lower-case name such as eob or all")
			break
		}
	}
	if req.AlternateFormat != "" && !restrictionName.MatchString(req.AlternateFormat) {
		problems = append(problems, "alternate_format must be a short lower-case name such as large-print")
	}
	if len(req.OptedOutChannels) > 4 || len(req.Restrictions) > 16 {
		problems = append(problems, "too many opted_out_channels or restrictions")
	}
	if len(problems) > 0 {
		jsonError(c, newError(http.StatusBadRequest, "invalid", strings.Join(problems, "; ")))
		return
	}
	tenant := c.GetString(ctxTenant)
	err = h.cfg.Contacts.UpsertContact(c.Request.Context(), tenant, "Patient/"+id, store.ContactDetails{
		Email: req.Email, Language: req.Language, TimeZone: req.TimeZone, Source: "api",
		OptedOutChannels: req.OptedOutChannels, ConfidentialEmail: req.ConfidentialEmail, Restrictions: req.Restrictions,
		MarketingAuthorized: req.MarketingAuthorized, AlternateFormat: req.AlternateFormat})
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "stored"})
}

func (h *handlers) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	status := http.StatusOK
	checks := gin.H{}
	for _, ch := range h.cfg.Checks {
		if err := ch.Ping(ctx); err != nil {
			status = http.StatusServiceUnavailable
			checks[ch.Name] = "unavailable"
			h.log.Warn("readiness check failed", "check", ch.Name, "err", err)
		} else {
			checks[ch.Name] = "ok"
		}
	}
	c.JSON(status, gin.H{"checks": checks})
}
