package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/webhook"
)

// Webhooks manages a tenant's outbound webhook endpoints and dead letters
// (webhook.Admin).
type Webhooks interface {
	Create(ctx context.Context, e webhook.Endpoint) (string, error)
	List(ctx context.Context, tenant string) ([]webhook.Endpoint, error)
	Delete(ctx context.Context, tenant, id string) error
	Messages(ctx context.Context, tenant, status string, limit int) ([]webhook.Listed, error)
	Replay(ctx context.Context, tenant string, id int64) error
}

// WebhookRequest is the body of POST /v1/webhooks.
type WebhookRequest struct {
	ID         string   `json:"id"`
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types,omitempty"`
}

// WebhookResponse is a created endpoint with its signing secret, shown
// only here.
type WebhookResponse struct {
	webhook.Endpoint
	Secret string `json:"secret"`
}

var errNoWebhooks = fault.New(fault.Unavailable, "webhooks are not configured on this server")

func (h *handlers) hasWebhooks(c *gin.Context) bool {
	if h.cfg.Webhooks == nil {
		jsonError(c, errNoWebhooks)
		return false
	}
	return true
}

func (h *handlers) postWebhook(c *gin.Context) {
	if !h.hasWebhooks(c) {
		return
	}
	var req WebhookRequest
	if err := decodeJSON(c, 8<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	e := webhook.Endpoint{TenantID: principal(c).TenantID, ID: req.ID, URL: req.URL, EventTypes: req.EventTypes, Enabled: true}
	if e.EventTypes == nil {
		e.EventTypes = []string{}
	}
	secret, err := h.cfg.Webhooks.Create(c.Request.Context(), e)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, WebhookResponse{Endpoint: e, Secret: secret})
}

func (h *handlers) listWebhooks(c *gin.Context) {
	if !h.hasWebhooks(c) {
		return
	}
	eps, err := h.cfg.Webhooks.List(c.Request.Context(), principal(c).TenantID)
	if err != nil {
		jsonError(c, err)
		return
	}
	if eps == nil {
		eps = []webhook.Endpoint{} // a list, never null, as the document says
	}
	c.JSON(http.StatusOK, gin.H{"endpoints": eps})
}

func (h *handlers) deleteWebhook(c *gin.Context) {
	if !h.hasWebhooks(c) {
		return
	}
	if err := h.cfg.Webhooks.Delete(c.Request.Context(), principal(c).TenantID, c.Param("id")); err != nil {
		jsonError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// listWebhookMessages is GET /v1/webhooks/messages?status=dead (the
// dead-letter list; also pending or delivered), newest first.
func (h *handlers) listWebhookMessages(c *gin.Context) {
	if !h.hasWebhooks(c) {
		return
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			jsonError(c, fault.New(fault.Invalid, "limit: 1 to 1000"))
			return
		}
		limit = n
	}
	status := c.DefaultQuery("status", webhook.StatusDead)
	msgs, err := h.cfg.Webhooks.Messages(c.Request.Context(), principal(c).TenantID, status, limit)
	if err != nil {
		jsonError(c, err)
		return
	}
	if msgs == nil {
		msgs = []webhook.Listed{}
	}
	c.JSON(http.StatusOK, gin.H{"messages": msgs})
}

func (h *handlers) replayWebhookMessage(c *gin.Context) {
	if !h.hasWebhooks(c) {
		return
	}
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		jsonError(c, fault.New(fault.NotFound, "no such webhook message in this tenant"))
		return
	}
	if err := h.cfg.Webhooks.Replay(c.Request.Context(), principal(c).TenantID, id); err != nil {
		jsonError(c, err)
		return
	}
	c.Status(http.StatusAccepted)
}
