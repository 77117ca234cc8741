package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
)

// Disclosures reads a patient's accounting of disclosures (HIPAA
// 164.528); *store.Store is it.
type Disclosures interface {
	Disclosures(ctx context.Context, q delivery.DisclosureQuery) ([]delivery.Disclosure, delivery.DisclosureCursor, error)
}

// Page sizes of POST /v1/disclosures/search.
const (
	defaultDisclosurePage = 100
	maxDisclosurePage     = 500
)

var (
	errNoDisclosures     = fault.New(fault.Unavailable, "the accounting of disclosures is not available in this process")
	errBadDisclosureTime = fault.New(fault.Invalid, "from and to must be RFC 3339 times (2026-03-01T00:00:00Z) or dates (2026-03-01)")
	errDisclosureRange   = fault.New(fault.Invalid, "to must be after from")
	errBadLimit          = fault.New(fault.Invalid, fmt.Sprintf("limit must be a whole number from 1 to %d", maxDisclosurePage))
	errBadCursor         = fault.New(fault.Invalid, "cursor is not one this endpoint gave")
)

// DisclosureBody is one entry of a patient's accounting of disclosures:
// when, to whom, what kind of content (never the content) and why.
type DisclosureBody struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	Status     string    `json:"status"` // sent, unknown (may have gone out) or viewed
	Channel    string    `json:"channel"`
	Recipient  string    `json:"recipient"`
	NoticeType string    `json:"notice_type"`
	Detail     string    `json:"detail"`             // full, redacted or portal-only
	Redacted   []string  `json:"redacted,omitempty"` // the fields left out, by name
	Purpose    string    `json:"purpose"`
	NoticeID   int64     `json:"notice_id,omitempty"`
	DeliveryID int64     `json:"delivery_id,omitempty"`
}

// DisclosuresResponse is a page of disclosures; NextCursor, when set,
// fetches the next.
type DisclosuresResponse struct {
	Disclosures []DisclosureBody `json:"disclosures"`
	NextCursor  string           `json:"next_cursor,omitempty"`
}

// DisclosureSearch is the body of POST /v1/disclosures/search. The
// patient goes in a body, never in a URL, where proxies and clients log
// it.
type DisclosureSearch struct {
	Patient string `json:"patient"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Limit   int    `json:"limit,omitempty"`
	Cursor  string `json:"cursor,omitempty"`
}

// errPatientInURL answers GET /v1/disclosures, which took the patient in
// its query string until the search moved to a POST.
var errPatientInURL = fault.New(fault.Invalid, "a patient reference goes in no URL: POST the query to /v1/disclosures/search as JSON "+
	`({"patient": "Patient/…", "from", "to", "limit", "cursor"})`)

// refuseDisclosureGET answers the old GET /v1/disclosures with 400 and
// where the query went.
func (h *handlers) refuseDisclosureGET(c *gin.Context) { jsonError(c, errPatientInURL) }

// searchDisclosures answers POST /v1/disclosures/search: the patient's
// disclosures in this tenant, oldest first, a page at a time.
func (h *handlers) searchDisclosures(c *gin.Context) {
	if h.cfg.Disclosures == nil {
		jsonError(c, errNoDisclosures)
		return
	}
	var req DisclosureSearch
	if err := decodeJSON(c, 4<<10, &req); err != nil {
		jsonError(c, err)
		return
	}
	q, err := req.query()
	if err != nil {
		jsonError(c, err)
		return
	}
	q.TenantID = c.GetString(ctxTenant)
	ds, next, err := h.cfg.Disclosures.Disclosures(c.Request.Context(), q)
	if err != nil {
		jsonError(c, err)
		return
	}
	out := DisclosuresResponse{Disclosures: make([]DisclosureBody, len(ds))}
	for i, d := range ds {
		out.Disclosures[i] = ToDisclosureBody(d)
	}
	if next.ID != 0 {
		out.NextCursor = encodeCursor(next)
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

// query checks the search. Errors never repeat the patient reference.
func (r DisclosureSearch) query() (delivery.DisclosureQuery, error) {
	q, err := ParseDisclosureQuery(r.Patient, r.From, r.To)
	if err != nil {
		return q, err
	}
	q.Limit = defaultDisclosurePage
	if r.Limit != 0 {
		if r.Limit < 1 || r.Limit > maxDisclosurePage {
			return q, errBadLimit
		}
		q.Limit = r.Limit
	}
	if r.Cursor != "" {
		if q.After, err = decodeCursor(r.Cursor); err != nil {
			return q, err
		}
	}
	return q, nil
}

// ParseDisclosureQuery checks a patient reference and a range of dates
// (see ParseDisclosureTime) as a disclosures query. Errors never repeat
// the patient reference.
func ParseDisclosureQuery(patient, from, to string) (delivery.DisclosureQuery, error) {
	q := delivery.DisclosureQuery{PatientRef: patient}
	if !IsPatientRef(q.PatientRef) {
		return q, errBadPatient
	}
	var err error
	if q.From, err = ParseDisclosureTime(from); err != nil {
		return q, err
	}
	if q.To, err = ParseDisclosureTime(to); err != nil {
		return q, err
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		return q, errDisclosureRange
	}
	return q, nil
}

// ParseDisclosureTime reads a bound of a disclosures range: an RFC 3339
// time, or a date (its midnight UTC); "" is no bound.
func ParseDisclosureTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, errBadDisclosureTime
}

func encodeCursor(c delivery.DisclosureCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixNano(), 10) + "." + strconv.FormatInt(c.ID, 10)))
}

func decodeCursor(s string) (delivery.DisclosureCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 64 {
		return delivery.DisclosureCursor{}, errBadCursor
	}
	at, id, ok := strings.Cut(string(b), ".")
	ns, err1 := strconv.ParseInt(at, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if !ok || err1 != nil || err2 != nil || n <= 0 {
		return delivery.DisclosureCursor{}, errBadCursor
	}
	return delivery.DisclosureCursor{At: time.Unix(0, ns).UTC(), ID: n}, nil
}

// IsPatientRef reports whether s is a patient reference the API takes
// (Patient/ and 1-64 of A-Z a-z 0-9 - .).
func IsPatientRef(s string) bool { return patientRef.MatchString(s) }

// ToDisclosureBody is d as the API and the CLI show it.
func ToDisclosureBody(d delivery.Disclosure) DisclosureBody {
	return DisclosureBody{ID: d.ID, At: d.At, Status: d.Status, Channel: d.Channel, Recipient: d.Recipient,
		NoticeType: d.NoticeType, Detail: d.Detail, Redacted: d.Redacted, Purpose: d.Purpose, NoticeID: d.NoticeID, DeliveryID: d.DeliveryID}
}
