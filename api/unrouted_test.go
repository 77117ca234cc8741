package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A path or method no route serves is limited per client like every other
// request, and answered in the shape its clients read: JSON, or an
// OperationOutcome under /fhir.
func TestUnroutedRequestsAreRateLimited(t *testing.T) {
	h := New(Config{RatePerSec: 0.001, RateBurst: 2})
	do := func(method, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		req.RemoteAddr = "198.51.100.4:5555"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := do("GET", "/nope"); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `"not-found"`) {
		t.Fatalf("first unknown path: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/fhir/r4/notify/t1/s1"); rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), "OperationOutcome") {
		t.Fatalf("GET on the notify route: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/fhir/r4/Patient"); rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "OperationOutcome") {
		t.Fatalf("third unrouted request of a burst of 2: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/other"); rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), `"throttled"`) {
		t.Fatalf("fourth: %d %s", rec.Code, rec.Body)
	}
}
