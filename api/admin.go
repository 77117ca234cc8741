package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fhir/client"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

// Admin is what the source and subscription endpoints need.
type Admin interface {
	CreateSource(ctx context.Context, src store.Source, credential []byte) error
	Report(ctx context.Context, tenantID, subscriptionID string) (store.SubscriptionReport, error)
}

// Subscriber creates subscriptions on FHIR sources.
type Subscriber interface {
	Subscribe(ctx context.Context, req intake.Subscription, secret string) (string, error)
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

var errBadBody = errors.New("bad body")

// decodeJSON reads a limited JSON body into v, refusing unknown fields.
func decodeJSON(c *gin.Context, max int64, v any) error {
	body, err := readBody(c, max, "application/json")
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if len(body) == 0 || dec.Decode(v) != nil {
		return newError(http.StatusBadRequest, "invalid", "the body is not the JSON object this endpoint takes (unknown fields are refused)")
	}
	return nil
}

func (h *handlers) postSource(c *gin.Context) {
	var req SourceRequest
	if err := decodeJSON(c, 64<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	src := store.Source{ID: req.ID, TenantID: c.GetString(ctxTenant), BaseURL: req.BaseURL, AuthType: req.Auth.Type,
		TokenURL: req.Auth.TokenURL, ClientID: req.Auth.ClientID, KeyID: req.Auth.KeyID, Scopes: req.Auth.Scopes}
	var cred []byte
	switch req.Auth.Type {
	case "bearer":
		cred = []byte(req.Auth.Token)
	case "smart-backend":
		cred = []byte(req.Auth.PrivateKeyPEM)
	}
	if problems := ValidateSource(src, cred); len(problems) > 0 {
		jsonError(c, newError(http.StatusBadRequest, "invalid", strings.Join(problems, "; ")))
		return
	}
	if err := h.cfg.Admin.CreateSource(c.Request.Context(), src, cred); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			jsonError(c, newError(http.StatusConflict, "duplicate", "a source with this id exists"))
			return
		}
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
	remote, err := h.cfg.Subscriber.Subscribe(c.Request.Context(), intake.Subscription{
		ID: req.ID, TenantID: c.GetString(ctxTenant), SourceID: req.SourceID, Topic: req.Topic,
		Criteria: req.Criteria, Payload: req.Payload, HeartbeatPeriod: time.Duration(req.HeartbeatPeriodS) * time.Second,
	}, secret)
	switch {
	case errors.Is(err, intake.ErrInvalidSubscription):
		jsonError(c, newError(http.StatusBadRequest, "invalid", err.Error()))
		return
	case errors.Is(err, store.ErrDuplicate):
		jsonError(c, newError(http.StatusConflict, "duplicate", "a subscription with this id exists"))
		return
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrUnknownReference):
		jsonError(c, newError(http.StatusBadRequest, "invalid", "source_id names no registered source of this tenant"))
		return
	case err != nil:
		// Nothing is kept (Subscribe removed it); the upstream detail stays in
		// the server log, so the API cannot be used to probe other hosts.
		h.log.Warn("creating the Subscription on its source failed", "subscription", req.ID, "err", err)
		jsonError(c, newError(http.StatusBadGateway, "transient", "the FHIR source did not create the Subscription; nothing was kept, try again"))
		return
	}
	c.JSON(http.StatusCreated, gin.H{"id": req.ID, "status": "requested", "remote_ref": remote})
}

func (h *handlers) getSubscription(c *gin.Context) {
	r, err := h.cfg.Admin.Report(c.Request.Context(), c.GetString(ctxTenant), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		jsonError(c, newError(http.StatusNotFound, "not-found", "no such subscription in this tenant"))
		return
	}
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

// ValidateSource checks a source's settings and credential, all problems at once.
func ValidateSource(src store.Source, cred []byte) []string {
	var p []string
	if !fhirID.MatchString(src.ID) {
		p = append(p, "id: 1-64 of A-Z a-z 0-9 - .")
	}
	if _, err := client.New(client.Options{BaseURL: src.BaseURL}); err != nil {
		p = append(p, "base_url: "+err.Error())
	}
	switch src.AuthType {
	case "none":
	case "bearer":
		if len(strings.TrimSpace(string(cred))) == 0 {
			p = append(p, "bearer: the token is empty")
		}
	case "smart-backend":
		if _, err := client.ParsePrivateKeyPEM(cred); err != nil {
			p = append(p, "smart-backend: private key: "+err.Error())
		}
		if src.ClientID == "" {
			p = append(p, "smart-backend: client_id is required")
		}
		if src.KeyID == "" {
			p = append(p, "smart-backend: key_id (the key's kid in the client's JWK Set) is required")
		}
		if _, err := client.New(client.Options{BaseURL: src.TokenURL}); err != nil {
			p = append(p, "smart-backend: token_url must be an https URL (http only on loopback)")
		}
	default:
		p = append(p, "auth.type: none, bearer or smart-backend")
	}
	return p
}
