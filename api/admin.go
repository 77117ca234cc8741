package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/seal"
)

// Admin is what the source and subscription endpoints need.
type Admin interface {
	CreateSource(ctx context.Context, src intake.Source, credential []byte) error
	Report(ctx context.Context, tenantID, subscriptionID string) (intake.SubscriptionReport, error)
}

// Subscriber creates subscriptions on FHIR sources.
type Subscriber interface {
	Subscribe(ctx context.Context, req intake.NewSubscription, secret string) (string, error)
}

// SubscriptionReport is the body of GET /v1/subscriptions/{id}: the
// subscription's state for operators (no secrets).
type SubscriptionReport struct {
	ID               string     `json:"id"`
	Status           string     `json:"status"`
	SourceID         string     `json:"source_id,omitempty"`
	RemoteRef        string     `json:"remote_ref,omitempty"`
	Topic            string     `json:"topic,omitempty"`
	LastHandshakeAt  *time.Time `json:"last_handshake_at,omitempty"`
	LastHeartbeatAt  *time.Time `json:"last_heartbeat_at,omitempty"`
	Heartbeats       int64      `json:"heartbeats"`
	HeartbeatPeriodS int        `json:"heartbeat_period_s,omitempty"`
	SilentSince      *time.Time `json:"silent_since,omitempty"`
	EventsSinceStart int64      `json:"events_since_start"`
	LastEventNumber  *int64     `json:"last_event_number,omitempty"`
	Events           int64      `json:"events"`
	GapsOpen         int64      `json:"gaps_open"`
	GapsRecovered    int64      `json:"gaps_recovered"`
}

// SourceRequest is the body of POST /v1/sources. Exactly the credential its
// auth type needs is given; it is sealed at rest and never returned.
type SourceRequest struct {
	ID      string `json:"id"`
	BaseURL string `json:"base_url"`
	Auth    struct {
		Type          string `json:"type"` // none, bearer, smart-backend
		Token         string `json:"token,omitempty"`
		ClientID      string `json:"client_id,omitempty"`
		TokenURL      string `json:"token_url,omitempty"`
		KeyID         string `json:"key_id,omitempty"`
		PrivateKeyPEM string `json:"private_key_pem,omitempty"`
		Scopes        string `json:"scopes,omitempty"`
	} `json:"auth"`
}

// SubscriptionRequest is the body of POST /v1/subscriptions.
type SubscriptionRequest struct {
	ID               string `json:"id"`
	SourceID         string `json:"source_id"`
	Topic            string `json:"topic"`
	Criteria         string `json:"criteria,omitempty"`
	Payload          string `json:"payload,omitempty"` // full-resource (default), id-only, empty
	HeartbeatPeriodS int    `json:"heartbeat_period_s,omitempty"`
}

// decodeJSON reads a limited JSON body into v, refusing unknown fields.
func decodeJSON(c *gin.Context, max int64, v any) error {
	body, err := readBody(c, max, "application/json")
	if err != nil {
		return err
	}
	return strictJSON(body, v)
}

// strictJSON decodes a /v1 JSON body already read into v, refusing an
// empty body and unknown fields: a field this version does not read must
// not be ignored on the way to acting on the rest.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if len(body) == 0 || dec.Decode(v) != nil {
		return fault.New(fault.Invalid, "the body is not the JSON object this endpoint takes (unknown fields are refused)")
	}
	return nil
}

func (h *handlers) postSource(c *gin.Context) {
	var req SourceRequest
	if err := decodeJSON(c, 64<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	src := intake.Source{ID: req.ID, TenantID: c.GetString(ctxTenant), BaseURL: req.BaseURL, AuthType: req.Auth.Type,
		TokenURL: req.Auth.TokenURL, ClientID: req.Auth.ClientID, KeyID: req.Auth.KeyID, Scopes: req.Auth.Scopes}
	var cred []byte
	switch req.Auth.Type {
	case "bearer":
		cred = []byte(req.Auth.Token)
	case "smart-backend":
		cred = []byte(req.Auth.PrivateKeyPEM)
	}
	if problems := intake.ValidateSource(src, cred); len(problems) > 0 {
		jsonError(c, fault.New(fault.Invalid, strings.Join(problems, "; ")))
		return
	}
	if err := h.cfg.Admin.CreateSource(c.Request.Context(), src, cred); err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"id": src.ID, "base_url": src.BaseURL, "auth_type": src.AuthType})
}

func (h *handlers) postSubscription(c *gin.Context) {
	var req SubscriptionRequest
	if err := decodeJSON(c, 16<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	secret := seal.NewToken()
	remote, err := h.cfg.Subscriber.Subscribe(c.Request.Context(), intake.NewSubscription{
		ID: req.ID, TenantID: c.GetString(ctxTenant), SourceID: req.SourceID, Topic: req.Topic,
		Criteria: req.Criteria, Payload: req.Payload, HeartbeatPeriod: time.Duration(req.HeartbeatPeriodS) * time.Second,
	}, secret)
	if err != nil {
		if fault.CodeOf(err) == fault.Upstream {
			// Nothing is kept (Subscribe removed it); the upstream detail
			// stays in the server log.
			h.log.Warn("creating the Subscription on its source failed", "subscription", req.ID, "err", err)
		}
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"id": req.ID, "status": "requested", "remote_ref": remote})
}

func (h *handlers) getSubscription(c *gin.Context) {
	r, err := h.cfg.Admin.Report(c.Request.Context(), c.GetString(ctxTenant), c.Param("id"))
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, ToSubscriptionReport(r))
}

// ToSubscriptionReport is r as the API and the console show it.
func ToSubscriptionReport(r intake.SubscriptionReport) SubscriptionReport {
	return SubscriptionReport{ID: r.ID, Status: r.Status, SourceID: r.SourceID, RemoteRef: r.RemoteRef,
		Topic: r.Topic, LastHandshakeAt: r.LastHandshakeAt, LastHeartbeatAt: r.LastHeartbeatAt, Heartbeats: r.Heartbeats,
		HeartbeatPeriodS: int(r.HeartbeatPeriod / time.Second), SilentSince: r.SilentSince, EventsSinceStart: r.EventsSinceStart,
		LastEventNumber: r.LastEventNumber, Events: r.Events, GapsOpen: r.GapsOpen, GapsRecovered: r.GapsRecovered}
}
