package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// Bounces records relays' delivery status notifications (delivery.Bounces).
type Bounces interface {
	Record(ctx context.Context, tenantID, actor string, raw []byte) (delivery.Bounced, notify.Bounce, error)
}

// BounceResponse is what POST /v1/bounces answers: ids, the report's
// action and status, and what changed; never an address.
type BounceResponse struct {
	DeliveryID         int64  `json:"delivery_id"`
	NoticeID           int64  `json:"notice_id"`
	Action             string `json:"action"`
	Status             string `json:"status,omitempty"`
	Hard               bool   `json:"hard"`
	Counted            bool   `json:"counted"`
	SuppressedContacts int    `json:"suppressed_contacts"`
}

// postBounce takes a delivery status notification as the relay mailed it
// to the envelope sender (Content-Type message/rfc822: a bounce mailbox's
// pipe posts it as it came), applies it to the delivery it names, and for
// a new permanent failure records an "email.bounced" engagement, which a
// workflow's wait_event step may wait for to try another channel.
func (h *handlers) postBounce(c *gin.Context) {
	if h.cfg.Bounces == nil {
		jsonError(c, fault.New(fault.Unavailable, "bounces are not configured"))
		return
	}
	raw, err := readBody(c, notify.MaxDSNBytes, "message/rfc822")
	if err != nil {
		jsonError(c, err)
		return
	}
	if len(raw) == 0 {
		jsonError(c, fault.New(fault.Invalid, "the body is empty: post the delivery status notification as the relay sent it"))
		return
	}
	ctx, p := c.Request.Context(), principal(c)
	done, report, err := h.cfg.Bounces.Record(ctx, p.TenantID, p.Actor(), raw)
	if err != nil {
		jsonError(c, err)
		return
	}
	// A new permanent failure only: a delay, or a report posted again, is
	// no news to a workflow.
	if done.Counted && done.Patient != "" && h.cfg.Journeys != nil {
		data, _ := json.Marshal(map[string]any{"delivery_id": done.DeliveryID, "status": report.Status, "hard": report.Hard})
		if _, _, err := h.cfg.Journeys.RecordEvent(ctx, p.TenantID, done.Patient, done.Subject, "email.bounced", data); err != nil {
			// The bounce is recorded and audited; only the engagement is
			// missing, and posting the report again records it.
			jsonError(c, err)
			return
		}
	}
	c.JSON(http.StatusOK, BounceResponse{DeliveryID: done.DeliveryID, NoticeID: done.NoticeID, Action: report.Action, Status: report.Status,
		Hard: report.Hard, Counted: done.Counted, SuppressedContacts: done.Suppressed})
}
