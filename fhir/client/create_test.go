package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
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
	c, err := New(Options{BaseURL: srv.URL + "/fhir", Sleep: func(context.Context, time.Duration) error { return nil }})
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
}
