package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/fault"
)

// KeyRequest is the body of POST /v1/keys: a key for the caller's tenant.
type KeyRequest struct {
	Role access.Role `json:"role"`
	Name string      `json:"name,omitempty"`
	// ExpiresIn is the key's lifetime as a Go duration ("720h"); empty: it
	// does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// KeyResponse is a created key with its token, which is shown only here.
type KeyResponse struct {
	access.Key
	Token string `json:"token"`
}

func principal(c *gin.Context) access.Principal {
	p, _ := c.MustGet(ctxPrincipal).(access.Principal)
	return p
}

func (h *handlers) postKey(c *gin.Context) {
	var req KeyRequest
	if err := decodeJSON(c, 4<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	var ttl time.Duration
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			jsonError(c, fault.New(fault.Invalid, `expires_in: want a positive Go duration such as "720h"`))
			return
		}
		ttl = d
	}
	p := principal(c)
	k, token, err := h.cfg.Keys.Create(c.Request.Context(), p.TenantID, req.Role, req.Name, ttl, p.Actor())
	if err != nil {
		jsonError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, KeyResponse{Key: k, Token: token})
}

func (h *handlers) listKeys(c *gin.Context) {
	keys, err := h.cfg.Keys.List(c.Request.Context(), principal(c).TenantID)
	if err != nil {
		jsonError(c, err)
		return
	}
	if keys == nil {
		keys = []access.Key{}
	}
	c.JSON(http.StatusOK, gin.H{"keys": keys})
}

func (h *handlers) revokeKey(c *gin.Context) {
	p := principal(c)
	if err := h.cfg.Keys.Revoke(c.Request.Context(), p.TenantID, c.Param("id"), p.Actor()); err != nil {
		jsonError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
