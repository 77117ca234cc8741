package webhook

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/audit"
)

// Types are the event types an endpoint may take: the audit actions about
// deliveries, notices, engagements and runs.
var Types = []string{
	"delivery.sent", "delivery.failed", "delivery.unknown", "delivery.resolved",
	"notice.sent", "notice.failed", "notice.denied",
	"engagement.recorded", "run.ended",
}

// dataKeys are the audit detail keys an event may carry, by type: ids,
// statuses, counts. Anything else in the detail (error texts, reasons)
// stays out: a relay's reply can quote an address.
var dataKeys = map[string][]string{
	"delivery.sent":       {"notice_id", "channel", "tls", "attempt"},
	"delivery.failed":     {"notice_id", "channel", "tls", "attempt"},
	"delivery.unknown":    {"notice_id", "channel", "attempt"},
	"delivery.resolved":   {"notice_id", "outcome"},
	"notice.sent":         {"event_id"},
	"notice.failed":       {"event_id"},
	"notice.denied":       {"event_id"},
	"engagement.recorded": {"type", "runs_woken"},
	"run.ended":           {"workflow", "outcome", "step"},
}

// Event is one webhook message's body.
type Event struct {
	Type      string         `json:"type"`
	Timestamp time.Time      `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// Of turns a tenant's audit row into the event an endpoint gets; false for
// an action that is no event type. The data holds the row's subject (a
// delivery, notice, engagement or run id) and the allowed detail keys.
func Of(r audit.Row) (Event, bool) {
	keys, ok := dataKeys[r.Action]
	if !ok {
		return Event{}, false
	}
	data := map[string]any{r.SubjectType + "_id": r.SubjectID}
	var detail map[string]any
	if len(r.Detail) > 0 {
		_ = json.Unmarshal(r.Detail, &detail)
	}
	for _, k := range keys {
		if v, ok := detail[k]; ok {
			switch v.(type) {
			case string, float64, bool:
				data[k] = v
			}
		}
	}
	return Event{Type: r.Action, Timestamp: r.At.UTC(), Data: data}, true
}

// Wants reports whether an endpoint taking types takes an event of type t
// (no types: all).
func Wants(types []string, t string) bool {
	if len(types) == 0 {
		return true
	}
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}

// CheckTypes reports a type that is not an event type.
func CheckTypes(types []string) error {
	for _, t := range types {
		if !Wants(Types, t) {
			return fmt.Errorf("unknown event type %s", strconv.Quote(t))
		}
	}
	return nil
}

// MessageID is the webhook-id of the message for chain seq of tenant to
// endpoint: the same on every retry, so receivers can drop repeats.
func MessageID(tenant, endpoint string, seq int64) string {
	return "msg_" + tenant + "_" + endpoint + "_" + strconv.FormatInt(seq, 10)
}
