package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tidings-health/tidings/intake"
)

// The notify URL does not tell who is guessing whether a subscription id
// exists: an unknown subscription and a known one with a wrong secret get
// the same status and the same body.
func TestNotifyAnswersUnknownSubscriptionAsWrongSecret(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	body := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))
	post := func(sub, secret string) postResult {
		return ts.postTo(t, sub, body, "application/fhir+json", secret, nil)
	}
	for _, secret := range []string{"not-the-secret", ts.Secret} {
		unknown := post("no-such-subscription", secret)
		wrong := post(devSubscription, "not-the-secret")
		if unknown.Status != wrong.Status || !bytes.Equal(unknown.Body, wrong.Body) ||
			unknown.Header.Get("Content-Type") != wrong.Header.Get("Content-Type") {
			t.Errorf("unknown subscription: %d %s\nwrong secret:         %d %s", unknown.Status, unknown.Body, wrong.Status, wrong.Body)
		}
		if wrong.Status != http.StatusUnauthorized {
			t.Errorf("wrong secret: %d, want 401", wrong.Status)
		}
	}
	// The real secret still gets in.
	if r := ts.notify(t, body); r.Status != http.StatusAccepted {
		t.Fatalf("right secret: %d %s", r.Status, r.Body)
	}
}

// Subscription ids are per tenant. The notify URL with the tenant reaches
// that tenant's subscription, and the same resource notified to two
// tenants' subscriptions of one id is a new event in each. The URL without
// the tenant works while one tenant alone has the id, and answers an id
// two tenants share exactly as it answers a wrong secret.
func TestNotifyURLNamesTheTenant(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	eob := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))
	eob2 := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"))
	post := func(path string, body []byte, secret string) postResult {
		return ts.postTo(t, path, body, "application/fhir+json", secret, nil)
	}
	wrong := post(devTenant+"/"+devSubscription, eob, "not-the-secret")
	if wrong.Status != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d %s", wrong.Status, wrong.Body)
	}
	// While the id is dev's alone, the URL without the tenant still works.
	if r := post(devSubscription, eob, ts.Secret); r.Status != http.StatusAccepted {
		t.Fatalf("the URL without the tenant, unique id: %d %s", r.Status, r.Body)
	}

	const otherSecret = "the-other-tenants-secret-0123456789"
	if err := ts.app.store.EnsureTenant(ctx, "other", "Other"); err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.CreateSubscription(ctx, intake.Subscription{ID: devSubscription, TenantID: "other"}, otherSecret); err != nil {
		t.Fatalf("another tenant's subscription with dev's id: %v", err)
	}
	time.Sleep(1100 * time.Millisecond) // what Authenticate read is kept a second
	for _, secret := range []string{ts.Secret, otherSecret} {
		r := post(devSubscription, eob2, secret)
		if r.Status != wrong.Status || !bytes.Equal(r.Body, wrong.Body) || r.Header.Get("Content-Type") != wrong.Header.Get("Content-Type") {
			t.Errorf("an id two tenants share, without the tenant: %d %s\nwrong secret: %d %s", r.Status, r.Body, wrong.Status, wrong.Body)
		}
	}
	// Each tenant's URL takes its own secret only.
	if r := post("other/"+devSubscription, eob, ts.Secret); r.Status != wrong.Status || !bytes.Equal(r.Body, wrong.Body) {
		t.Errorf("dev's secret at the other tenant's URL: %d %s", r.Status, r.Body)
	}
	if r := post("other/"+devSubscription, eob, otherSecret); r.Status != http.StatusAccepted {
		t.Fatalf("the other tenant's URL: %d %s", r.Status, r.Body)
	}
	if r := post(devTenant+"/"+devSubscription, eob, ts.Secret); r.Status != http.StatusOK || r.Header.Get("X-Tidings-Duplicates") != "1" {
		t.Errorf("dev's URL, an event dev has: %d %s", r.Status, r.Body)
	}
	if r := post(devTenant+"/"+devSubscription, eob2, ts.Secret); r.Status != http.StatusAccepted {
		t.Errorf("dev's URL, a new event: %d %s", r.Status, r.Body)
	}
	// Classic rest-hook (the resource itself) under the tenant's URL.
	if r := post("other/"+devSubscription+"/ExplanationOfBenefit/EOBInpatient1",
		fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), otherSecret); r.Status != http.StatusAccepted {
		t.Errorf("classic rest-hook at the other tenant's URL: %d %s", r.Status, r.Body)
	}
	for tenant, want := range map[string]int64{devTenant: 2, "other": 2} {
		if c, err := ts.app.store.CountAll(ctx, tenant); err != nil || c.Events != want {
			t.Errorf("tenant %s: %d events (%v), want %d", tenant, c.Events, err, want)
		}
	}
}
