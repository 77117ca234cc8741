package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/metrics/metricstest"
)

func TestCreateIsNotRetriedExceptOn429(t *testing.T) {
	var calls atomic.Int32
	statuses := []int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1)) - 1
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/fhir/Subscription" || r.Header.Get("Content-Type") != "application/fhir+json" || !json.Valid(body) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		st := statuses[min(n, len(statuses)-1)]
		w.Header().Set("Content-Type", "application/fhir+json")
		if st == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(st)
		if st == http.StatusCreated {
			w.Write([]byte(`{"resourceType":"Subscription","id":"remote-1","status":"requested"}`))
		}
	}))
	defer srv.Close()
	m := metrics.New()
	c, err := New(Options{BaseURL: srv.URL + "/fhir", Sleep: func(context.Context, time.Duration) error { return nil }, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	sub := json.RawMessage(`{"resourceType":"Subscription","status":"requested"}`)

	statuses = []int{http.StatusTooManyRequests, http.StatusCreated}
	got, err := c.Create(context.Background(), "Subscription", sub)
	if err != nil || calls.Load() != 2 {
		t.Fatalf("429 then 201: %v after %d calls", err, calls.Load())
	}
	var created struct{ ID string }
	if json.Unmarshal(got, &created); created.ID != "remote-1" {
		t.Fatalf("created %s", got)
	}

	calls.Store(0)
	statuses = []int{http.StatusInternalServerError, http.StatusCreated}
	_, err = c.Create(context.Background(), "Subscription", sub)
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || calls.Load() != 1 {
		t.Fatalf("500: %v after %d calls; a create must not be retried (it could create twice)", err, calls.Load())
	}
	if _, err := c.Create(context.Background(), "Not a type", sub); !errors.Is(err, ErrInvalidReference) {
		t.Fatalf("bad type: %v", err)
	}
	// Each HTTP request counted, the retried 429 too; none for the bad type.
	e := metricstest.Of(t, m)
	for result, want := range map[string]float64{"2xx": 1, "4xx": 1, "5xx": 1, "network": 0} {
		if got := e.Get(t, "tidings_fhir_requests_total", "method", "POST", "result", result); got != want {
			t.Errorf("POST requests with result %s: %v, want %v", result, got, want)
		}
	}
	if got := e.Get(t, "tidings_fhir_request_seconds", "method", "POST"); got != 3 {
		t.Errorf("POST requests timed: %v, want 3", got)
	}
}

func TestErrorsNameNoResourceIDs(t *testing.T) {
	for in, want := range map[string]string{
		"/fhir/Patient/pat-Canary-123":                "/fhir/Patient/{id}",
		"/fhir/r4/ExplanationOfBenefit/e1/_history/7": "/fhir/r4/ExplanationOfBenefit/{id}/_history/{vid}",
		"/fhir/Subscription/s1/$events":               "/fhir/Subscription/{id}/$events",
		"/fhir/ExplanationOfBenefit":                  "/fhir/ExplanationOfBenefit",
	} {
		if got := templatePath(in); got != want {
			t.Errorf("templatePath(%q) = %q, want %q", in, got, want)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer srv.Close()
	c, _ := New(Options{BaseURL: srv.URL + "/fhir", MaxRetries: -1})
	_, err := c.Read(context.Background(), "Patient", "pat-Canary-123")
	if err == nil || strings.Contains(err.Error(), "Canary") {
		t.Fatalf("error %v names the patient id", err)
	}
}

func TestDenyPrivateNetworks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the guarded client reached a loopback server")
	}))
	defer srv.Close()
	c, err := New(Options{BaseURL: srv.URL + "/fhir", DenyPrivateNetworks: true, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(context.Background(), "Patient", "p1"); err == nil {
		t.Fatal("a loopback source was reached")
	}
	for _, a := range []string{"10.1.2.3", "192.168.0.1", "169.254.169.254", "127.0.0.1", "::1", "fd00::1", "100.64.0.1"} {
		if publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s counted as public", a)
		}
	}
	if !publicAddr(netip.MustParseAddr("93.184.216.34")) {
		t.Error("a public address was refused")
	}
}
