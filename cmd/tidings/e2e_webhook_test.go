package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/tidings-health/tidings/access"
)

// receiver is a tenant's webhook endpoint: it verifies each message's
// signature with the Standard Webhooks library, fails the first attempts
// of each message as told, and keeps what it accepted.
type receiver struct {
	t        *testing.T
	mu       sync.Mutex
	secret   string
	failures int            // answer 503 to each message this many times
	seen     map[string]int // attempts by webhook-id
	accepted []acceptedEvent
	bodies   []string
}

type acceptedEvent struct {
	ID   string
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(rc.secret)
	if err != nil || wh.Verify(body, r.Header) != nil {
		rc.t.Errorf("a message's signature does not verify (%v)", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	id := r.Header.Get("webhook-id")
	rc.seen[id]++
	if rc.seen[id] <= rc.failures {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var e acceptedEvent
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("unparseable event: %v", err)
	}
	e.ID = id
	rc.accepted, rc.bodies = append(rc.accepted, e), append(rc.bodies, string(body))
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		rc.mu.Lock()
		done := ok()
		rc.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooks: %s did not happen; accepted %+v, attempts %v", what, rc.accepted, rc.seen)
		}
	}
}

// A notice's delivery reaches the tenant's endpoint as signed Standard
// Webhooks messages, after the endpoint's refusals are retried; a message
// that keeps failing goes dead, is listed, and a replay delivers it. No
// message carries PHI.
func TestWebhooksEndToEnd(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true, WebhookRetries: "100ms,100ms"})
	token := ts.apiKey(t, "dev", access.Integration)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	create := func(id string, rc *receiver, url, types string) {
		r := doRequest(h, "POST", "/v1/webhooks", "application/json", token, `{"id":"`+id+`","url":"`+url+`"`+types+`}`)
		if r.Code != 201 {
			t.Fatalf("POST /v1/webhooks: %d %s", r.Code, r.Body)
		}
		var resp struct{ Secret string }
		_ = json.Unmarshal(r.Body.Bytes(), &resp)
		if !strings.HasPrefix(resp.Secret, "whsec_") {
			t.Fatalf("secret %q", resp.Secret)
		}
		rc.secret = resp.Secret
	}
	// Retried twice, then accepted.
	flaky := &receiver{t: t, failures: 2, seen: map[string]int{}}
	flakySrv := httptest.NewServer(flaky)
	defer flakySrv.Close()
	create("ops", flaky, flakySrv.URL+"/hooks", `,"event_types":["delivery.sent","notice.sent"]`)
	// Never accepts within the schedule (three attempts).
	down := &receiver{t: t, failures: 3, seen: map[string]int{}}
	downSrv := httptest.NewServer(down)
	defer downSrv.Close()
	create("crm", down, downSrv.URL+"/in", `,"event_types":["delivery.sent"]`)
	for _, bad := range []string{
		`{"id":"x","url":"ftp://example.org/"}`,
		`{"id":"x","url":"https://user:pw@example.org/"}`,
		`{"id":"Bad Id","url":"https://example.org/"}`,
		`{"id":"x","url":"https://example.org/","event_types":["contact.upsert"]}`,
	} {
		if r := doRequest(h, "POST", "/v1/webhooks", "application/json", token, bad); r.Code != 400 {
			t.Errorf("%s: %d %s, want 400", bad, r.Code, r.Body)
		}
	}

	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	ts.notifyOneMail(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")

	flaky.wait(t, "delivery.sent and notice.sent at the flaky endpoint", func() bool { return len(flaky.accepted) == 2 })
	types := map[string]bool{}
	for _, e := range flaky.accepted {
		types[e.Type] = true
		if flaky.seen[e.ID] != 3 {
			t.Errorf("%s accepted after %d attempts, want 3", e.Type, flaky.seen[e.ID])
		}
	}
	if !types["delivery.sent"] || !types["notice.sent"] {
		t.Fatalf("accepted %+v", flaky.accepted)
	}
	for _, b := range flaky.bodies {
		for _, phi := range []string{"member@example.org", "Patient2", "EOBPharmacy1"} {
			if strings.Contains(b, phi) {
				t.Errorf("a webhook body carries %q: %s", phi, b)
			}
		}
	}

	// The endpoint that never accepted: dead after three attempts.
	var dead struct {
		Messages []struct {
			ID        int64  `json:"id"`
			Endpoint  string `json:"endpoint_id"`
			EventType string `json:"event_type"`
			Attempts  int    `json:"attempts"`
			Status    int    `json:"last_status"`
		}
	}
	for deadline := time.Now().Add(30 * time.Second); len(dead.Messages) == 0; time.Sleep(100 * time.Millisecond) {
		r := doRequest(h, "GET", "/v1/webhook-messages?status=dead", "", token, "")
		if r.Code != 200 {
			t.Fatalf("dead letters: %d %s", r.Code, r.Body)
		}
		_ = json.Unmarshal(r.Body.Bytes(), &dead)
		if time.Now().After(deadline) {
			t.Fatal("no dead letter")
		}
	}
	d := dead.Messages[0]
	if len(dead.Messages) != 1 || d.Endpoint != "crm" || d.EventType != "delivery.sent" || d.Attempts != 3 || d.Status != 503 {
		t.Fatalf("dead letters %+v", dead.Messages)
	}
	down.mu.Lock()
	if len(down.accepted) != 0 {
		t.Fatalf("the failing endpoint accepted %+v", down.accepted)
	}
	down.failures = 0
	down.mu.Unlock()
	if err := ts.app.store.EnsureTenant(context.Background(), "other", "Other"); err != nil {
		t.Fatal(err)
	}
	other := ts.apiKey(t, "other", access.Integration)
	if r := doRequest(h, "POST", "/v1/webhook-messages/"+strconv.FormatInt(d.ID, 10)+"/replay", "", other, ""); r.Code != 404 {
		t.Fatalf("another tenant's replay: %d, want 404", r.Code)
	}
	if r := doRequest(h, "POST", "/v1/webhook-messages/"+strconv.FormatInt(d.ID, 10)+"/replay", "", token, ""); r.Code != 202 {
		t.Fatalf("replay: %d %s", r.Code, r.Body)
	}
	down.wait(t, "the replayed message accepted", func() bool { return len(down.accepted) == 1 })
	if down.accepted[0].Type != "delivery.sent" {
		t.Fatalf("replayed %+v", down.accepted[0])
	}
}
