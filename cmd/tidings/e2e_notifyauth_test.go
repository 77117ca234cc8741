package main

import (
	"bytes"
	"net/http"
	"testing"
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
