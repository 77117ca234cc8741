package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
)

// Every /v1 route, called with a key of every role: the roles it names get
// past authorization (whatever the handler then says of the empty request),
// every other role gets 403, no key or a wrong one 401.
func TestEveryRouteChecksItsRole(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	pol, err := ts.app.tenantPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ts.app.handler(pol)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[access.Role]string{}
	for _, r := range access.Roles {
		tokens[r] = ts.apiKey(t, devTenant, r)
	}
	routes := api.Routes()
	if len(routes) < 15 {
		t.Fatalf("only %d routes", len(routes))
	}
	for _, rt := range routes {
		path := "/v1" + strings.NewReplacer(":id", "no-such-id", ":segment", "vip").Replace(rt.Path)
		body := ""
		if rt.Method == "POST" || rt.Method == "PUT" {
			body = "{}"
		}
		for _, role := range access.Roles {
			rec := doRequest(h, rt.Method, path, "application/json", tokens[role], body)
			allowed := role == rt.Role || role == access.Admin
			switch {
			case allowed && (rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden):
				t.Errorf("%s %s as %s: %d, want past authorization: %s", rt.Method, rt.Path, role, rec.Code, rec.Body)
			case !allowed && rec.Code != http.StatusForbidden:
				t.Errorf("%s %s as %s: %d, want 403: %s", rt.Method, rt.Path, role, rec.Code, rec.Body)
			}
		}
		for _, tok := range []string{"", "tdk_0123456789abcdef_" + strings.Repeat("A", 43), tokens[rt.Role] + "x"} {
			if rec := doRequest(h, rt.Method, path, "application/json", tok, body); rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with a bad key: %d, want 401", rt.Method, rt.Path, rec.Code)
			}
		}
	}
}

// A tenant's keys see nothing of another tenant: its subscriptions,
// workflows and keys are 404, as if they did not exist.
func TestKeysSeeOnlyTheirTenant(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.EnsureTenant(ctx, "other", "Other"); err != nil {
		t.Fatal(err)
	}
	mine, theirs := ts.apiKey(t, devTenant, access.Admin), ts.apiKey(t, "other", access.Admin)
	def := `{"id": "eob-mine", "trigger": {"event": "eob.received"}, "sender": {"name": "Plan"},
		"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`
	if r := doRequest(h, "POST", "/v1/workflows", "application/json", mine, def); r.Code != 201 {
		t.Fatalf("POST /v1/workflows: %d %s", r.Code, r.Body)
	}
	r := doRequest(h, "POST", "/v1/keys", "application/json", mine, `{"role":"operator","name":"scheduler"}`)
	var created api.KeyResponse
	if r.Code != 201 || json.Unmarshal(r.Body.Bytes(), &created) != nil || created.ID == "" {
		t.Fatalf("POST /v1/keys: %d %s", r.Code, r.Body)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/subscriptions/" + devSubscription},
		{"GET", "/v1/workflows/eob-mine"},
		{"GET", "/v1/workflows/eob-mine/stats"},
		{"POST", "/v1/workflows/eob-mine/pause"},
		{"DELETE", "/v1/keys/" + created.ID},
	} {
		if r := doRequest(h, c.method, c.path, "", theirs, ""); r.Code != http.StatusNotFound {
			t.Errorf("%s %s by another tenant: %d %s, want 404", c.method, c.path, r.Code, r.Body)
		}
	}
	if r := doRequest(h, "GET", "/v1/keys", "", theirs, ""); r.Code != 200 || strings.Contains(r.Body.String(), created.ID) {
		t.Errorf("another tenant's key list: %d %s", r.Code, r.Body)
	}
	for _, path := range []string{"/v1/subscriptions/" + devSubscription, "/v1/workflows/eob-mine"} {
		if r := doRequest(h, "GET", path, "", mine, ""); r.Code != 200 {
			t.Errorf("GET %s by its tenant: %d %s", path, r.Code, r.Body)
		}
	}
}

// A key made through the API works at once, is named as the actor of what
// it does, never shows its token again, and stops working when revoked; an
// expired key stops too.
func TestKeyLifecycle(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	admin := ts.apiKey(t, devTenant, access.Admin)
	r := doRequest(h, "POST", "/v1/keys", "application/json", admin, `{"role":"contacts","name":"crm","expires_in":"720h"}`)
	var created api.KeyResponse
	if r.Code != 201 || json.Unmarshal(r.Body.Bytes(), &created) != nil || created.Role != access.Contacts || created.ExpiresAt == nil {
		t.Fatalf("POST /v1/keys: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "POST", "/v1/keys", "application/json", admin, `{"role":"root"}`); r.Code != 400 {
		t.Errorf("unknown role: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/p1", "application/json", created.Token, `{"email":"p1@example.org"}`); r.Code != 200 {
		t.Fatalf("PUT contact with the new key: %d %s", r.Code, r.Body)
	}
	var actors []string
	ts.app.store.RawScan(ctx, &actors, `SELECT actor FROM audit_log WHERE action = 'contact.upsert'`)
	if len(actors) != 1 || actors[0] != "key:"+created.ID {
		t.Errorf("contact.upsert actors = %q, want key:%s", actors, created.ID)
	}
	ts.app.store.RawScan(ctx, &actors, `SELECT actor FROM audit_log WHERE action = 'key.created' AND subject_id = ?`, created.ID)
	if len(actors) != 1 || !strings.HasPrefix(actors[0], "key:") {
		t.Errorf("key.created actors = %q", actors)
	}
	if r := doRequest(h, "GET", "/v1/keys", "", admin, ""); r.Code != 200 || !strings.Contains(r.Body.String(), created.ID) ||
		strings.Contains(r.Body.String(), created.Token[len(created.Token)-20:]) || strings.Contains(r.Body.String(), "token") {
		t.Errorf("GET /v1/keys: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "DELETE", "/v1/keys/"+created.ID, "", admin, ""); r.Code != 204 {
		t.Fatalf("revoke: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/p1", "application/json", created.Token, `{"email":"p1@example.org"}`); r.Code != 401 {
		t.Errorf("revoked key: %d %s", r.Code, r.Body)
	}

	// A key past its expiry, on a service whose clock has moved on.
	now := time.Now()
	svc := ts.app.apiKeyService()
	svc.Now = func() time.Time { return now }
	_, token, err := svc.Create(ctx, devTenant, access.Contacts, "short", time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/p2", "application/json", token, `{"email":"p2@example.org"}`); r.Code != 200 {
		t.Fatalf("fresh key: %d %s", r.Code, r.Body)
	}
	now = now.Add(time.Hour + time.Second)
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/p2", "application/json", token, `{"email":"p2@example.org"}`); r.Code != 401 {
		t.Errorf("expired key: %d %s", r.Code, r.Body)
	}
}
