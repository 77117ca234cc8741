package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
)

// FuzzDisclosureSearch feeds POST /v1/disclosures/search bodies to the
// decoding and checks the handler does: it never panics, every refusal is
// a 400 with one of the route's fixed messages (so none can repeat the
// patient), and a query it takes has a patient reference and a page size
// inside the route's bounds.
func FuzzDisclosureSearch(f *testing.F) {
	for _, s := range []string{
		`{"patient":"Patient/p1"}`,
		`{"patient":"Patient/p1","from":"2026-03-02","to":"2026-03-03T00:00:00Z","limit":2}`,
		`{"patient":"Patient/p1","cursor":"` + encodeCursor(delivery.DisclosureCursor{At: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), ID: 7}) + `"}`,
		`{"patient":"Patient/x y"}`,
		`{"patient":"Patient/p1","limit":501}`,
		`{"patient":"Patient/p1","from":"2026-03-02","to":"2026-03-01"}`,
		`{"patient":"Patient/p1","cursor":"MTcwMDAwMDAwMDAwMDAwMDAwMC4x"}`,
		`{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	fixed := map[string]bool{}
	for _, e := range []error{errBadPatient, errBadDisclosureTime, errDisclosureRange, errBadLimit, errBadCursor} {
		fixed[fault.MessageOf(e)] = true
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req DisclosureSearch
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return // decodeJSON answers these with its own fixed 400
		}
		q, err := req.query()
		if err != nil {
			if !errors.Is(err, fault.Invalid) || !fixed[fault.MessageOf(err)] {
				t.Fatalf("refusal %v is not one of the route's fixed 400s", err)
			}
			return
		}
		if !IsPatientRef(q.PatientRef) || q.PatientRef != req.Patient || q.Limit < 1 || q.Limit > maxDisclosurePage {
			t.Fatalf("taken: %+v from %+v", q, req)
		}
		if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
			t.Fatalf("an empty range taken: %+v", q)
		}
	})
}
