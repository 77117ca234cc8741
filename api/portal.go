package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
)

// PortalSettings reads and sets a tenant's portal settings; store.Store is it.
type PortalSettings interface {
	PortalVerification(ctx context.Context, tenantID string) (string, error)
	SetPortalVerification(ctx context.Context, tenantID, method, actor string) error
}

// PortalSettingsBody is the body of GET and PUT /v1/portal/settings.
// Verification is how patients prove who they are at the portal: "code"
// (a one-time code mailed to the address of record; the default),
// "birth_date" or "code_and_birth_date".
type PortalSettingsBody struct {
	Verification string `json:"verification"`
}

var errNoPortalSettings = fault.New(fault.Unavailable, "portal settings are not available in this process")

func (h *handlers) getPortalSettings(c *gin.Context) {
	if h.cfg.PortalSettings == nil {
		jsonError(c, errNoPortalSettings)
		return
	}
	m, err := h.cfg.PortalSettings.PortalVerification(c.Request.Context(), principal(c).TenantID)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, PortalSettingsBody{Verification: m})
}

func (h *handlers) putPortalSettings(c *gin.Context) {
	if h.cfg.PortalSettings == nil {
		jsonError(c, errNoPortalSettings)
		return
	}
	var req PortalSettingsBody
	if err := decodeJSON(c, maxSmallBodyBytes, &req); err != nil {
		jsonError(c, err)
		return
	}
	p := principal(c)
	if err := h.cfg.PortalSettings.SetPortalVerification(c.Request.Context(), p.TenantID, req.Verification, p.Actor()); err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, req)
}
