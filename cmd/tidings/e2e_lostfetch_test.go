package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fetch tasks lost from Redis (here: FLUSHDB before any worker ran) are
// re-driven by the reconciler once their lease has passed, and complete;
// the lost ping's fetch no longer keeps every later ping a "duplicate".
func TestLostFetchTasksAreRedriven(t *testing.T) {
	f := newFakeFHIR(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json", "carin-bb-2.0.0/Patient-Patient2.json",
		"carin-bb-2.0.0/Organization-Payer1.json", "carin-bb-2.0.0/Organization-ProviderOrganization1.json")
	ts := newTestStack(t, testOpts{NoPlaceholder: true, DeferWorker: true, ReconcileEvery: 200 * time.Millisecond})
	ts.attachFake(t, f, 0)
	ctx := context.Background()
	body := ts.notification(t, f.URL+"/fhir", true, map[int64]string{1: "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"})
	if r := ts.notify(t, body); r.Status != 202 || r.Header.Get("X-Tidings-Fetches") != "1" {
		t.Fatalf("id-only notification: %d %s", r.Status, r.Body)
	}
	if r := ts.post(t, nil, "", ts.Secret); r.Status != 202 || r.Header.Get("X-Tidings-Fetches") != "1" {
		t.Fatalf("ping: %d %s", r.Status, r.Body)
	}
	var handedOver int
	ts.app.store.RawScan(ctx, &handedOver, `SELECT count(*) FROM outbox WHERE fetch_id IS NOT NULL AND enqueued_at IS NOT NULL`)
	if handedOver != 2 {
		t.Fatalf("%d fetch tasks handed to Redis, want 2", handedOver)
	}
	// Redis loses them (restarted without persistence).
	rc := redis.NewClient(&redis.Options{Addr: ts.app.redis.Addr, DB: ts.app.redis.DB})
	defer rc.Close()
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// While the lost ping's fetch is pending, pings coalesce into it.
	if r := ts.post(t, nil, "", ts.Secret); r.Header.Get("X-Tidings-Duplicates") != "1" {
		t.Fatalf("a ping while the first is pending: %d, duplicates %q", r.Status, r.Header.Get("X-Tidings-Duplicates"))
	}
	// Their lease passes.
	if err := ts.app.store.RawScan(ctx, new([]int64), `UPDATE fetches SET updated_at = now() - interval '1 hour' RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1); err != nil {
		t.Fatalf("the lost id-only fetch was not re-driven: %v; fake saw %v", err, f.requests)
	}
	deadline := time.Now().Add(30 * time.Second)
	var done int
	for done < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		ts.app.store.RawScan(ctx, &done, `SELECT count(*) FROM fetches WHERE status = 'done'`)
	}
	if done != 2 || f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated") != 1 {
		t.Fatalf("%d fetches done, %d searches; want both fetches done, the ping's search made once",
			done, f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated"))
	}
	// A later ping is a new search, not a duplicate of the lost one.
	if r := ts.post(t, nil, "", ts.Secret); r.Status != 202 || r.Header.Get("X-Tidings-Fetches") != "1" {
		t.Fatalf("a ping after the re-driven one: %d, fetches %q, duplicates %q", r.Status,
			r.Header.Get("X-Tidings-Fetches"), r.Header.Get("X-Tidings-Duplicates"))
	}
}
