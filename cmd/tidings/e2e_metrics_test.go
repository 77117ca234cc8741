package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/metrics/metricstest"
	"github.com/tidings-health/tidings/testenv"
)

// maxLabelValues bounds every label of every family either process
// exposes: each takes its values from a fixed set, never from ids or data.
const maxLabelValues = 12

// One canary patient's EOB goes through serve and the worker and is mailed;
// another is a preauthorization the policy denies; the first is posted
// again (a duplicate), once with a wrong secret and once as a broken body.
// Serve's and the worker's /metrics moved by exactly that, hold none of the
// canary's PHI, and every label has a few values at most.
func TestMetricsCountAFlowWithoutPHI(t *testing.T) {
	c := newCanary(t)
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	serveURL, workerURL := ts.BaseURL+"/metrics", ts.WorkerURL+"/metrics"
	before := map[string]metricstest.Exposition{"serve": metricstest.Scrape(t, serveURL, ""), "worker": metricstest.Scrape(t, workerURL, "")}

	sent := ts.wrap(t, c.collection(t, c.patient(t, c.patientSent, c.emailSent), c.eob(t, "EOBmetrics"+c.ids, c.patientSent, c.code)))
	preauth := editJSON(t, c.eob(t, "EOBmetricspreauth"+c.ids, c.patientSent, c.code), func(e map[string]any) { e["use"] = "preauthorization" })
	for _, r := range []struct {
		what   string
		body   []byte
		secret string
		want   int
	}{
		{"the EOB", sent, ts.Secret, 202},
		{"the preauthorization", ts.wrap(t, c.collection(t, c.patient(t, c.patientSent, c.emailSent), preauth)), ts.Secret, 202},
		{"the EOB again", sent, ts.Secret, 200},
		{"a wrong secret", sent, "not-the-secret", 401},
		{"a broken body", []byte(`{"resourceType":"Bundle","type":`), ts.Secret, 400},
	} {
		if got := ts.post(t, r.body, "application/fhir+json", r.secret); got.Status != r.want {
			t.Fatalf("%s: %d %s, want %d", r.what, got.Status, got.Body, r.want)
		}
	}
	ts.waitNotices(t, 2)
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1); err != nil {
		t.Fatalf("no mail: %v", err)
	}

	// Serve and the worker share a process here (and so one registry):
	// read each counter from the endpoint of the process that counts it
	// in production.
	after := map[string]metricstest.Exposition{"serve": metricstest.Scrape(t, serveURL, "")}
	var e metricstest.Exposition
	// The worker counts the notices a moment after they are written.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		e = metricstest.Scrape(t, workerURL, "")
		if n, _ := e.Value("tidings_notices_total"); n >= 2 || time.Now().After(deadline) {
			break
		}
	}
	after["worker"] = e
	for _, w := range []struct {
		process, name string
		labels        []string
		moved         float64
	}{
		{"serve", "tidings_notifications_received_total", []string{"outcome", "accepted"}, 2},
		{"serve", "tidings_notifications_received_total", []string{"outcome", "duplicate"}, 1},
		{"serve", "tidings_notifications_received_total", []string{"outcome", "unauthorized"}, 1},
		{"serve", "tidings_notifications_received_total", []string{"outcome", "rejected"}, 1},
		{"serve", "tidings_notifications_received_total", nil, 5},
		{"serve", "tidings_events_accepted_total", []string{"source", "notification"}, 2},
		{"worker", "tidings_events_processed_total", []string{"result", "done"}, 2},
		{"worker", "tidings_events_processed_total", []string{"result", "retry"}, 0},
		{"worker", "tidings_notices_total", []string{"status", "sent", "channel", "email"}, 1},
		{"worker", "tidings_notices_total", []string{"status", "denied", "channel", "email"}, 1},
		{"worker", "tidings_notices_total", nil, 2},
		// The sent notice takes two decisions (its email and its portal
		// view), the denied one one.
		{"worker", "tidings_policy_decisions_total", []string{"result", "allow"}, 2},
		{"worker", "tidings_policy_decisions_total", []string{"result", "deny"}, 1},
		{"worker", "tidings_policy_decisions_total", []string{"result", "no_decision"}, 0},
		{"worker", "tidings_policy_decision_seconds", nil, 3},
		{"worker", "tidings_smtp_sends_total", []string{"result", "sent"}, 1},
		{"worker", "tidings_smtp_sends_total", nil, 1},
		{"worker", "tidings_smtp_send_seconds", nil, 1},
		{"worker", "tidings_fhir_requests_total", nil, 0},                              // full-resource notifications: nothing fetched
		{"serve", "tidings_http_slot_waits_total", []string{"outcome", "admitted"}, 0}, // never over the in-flight bound here
		{"serve", "tidings_http_slot_waits_total", []string{"outcome", "refused"}, 0},
	} {
		was, _ := before[w.process].Value(w.name, w.labels...)
		if now := after[w.process].Get(t, w.name, w.labels...); now-was != w.moved {
			t.Errorf("%s %s%v moved by %v, want %v", w.process, w.name, w.labels, now-was, w.moved)
		}
	}
	// Sampled on the worker's scrape: every queue, and the chain's lag.
	for _, q := range []string{"default", "workflow_high", "workflow", "workflow_low"} {
		after["worker"].Get(t, "tidings_queue_tasks", "queue", q, "state", "pending")
		after["worker"].Get(t, "tidings_queue_latency_seconds", "queue", q)
	}
	after["worker"].Get(t, "tidings_audit_unchained_rows")
	if n, _ := after["worker"].Value("tidings_metrics_collect_errors_total"); n != 0 {
		t.Errorf("%v sampled reads failed", n)
	}

	for process, e := range after {
		c.assertAbsent(t, process+"'s /metrics", e.Raw)
		for _, id := range []string{c.patientSent, c.ids, devSubscription, ts.Secret} {
			if strings.Contains(string(e.Raw), id) {
				t.Errorf("%s's /metrics names %q", process, id)
			}
		}
		for label, values := range e.LabelValues() {
			if len(values) > maxLabelValues {
				t.Errorf("%s's %s has %d values: %v", process, label, len(values), values)
			}
		}
	}
}

// The worker's /healthz says the process answers; its /readyz follows
// Postgres and Redis, as serve's does.
func TestWorkerHealthFollowsRedis(t *testing.T) {
	rd, err := testenv.StartRedis(context.Background(), t.TempDir(), testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ts := newTestStack(t, testOpts{RedisAddr: rd.Addr, DeferWorker: true})
	get := func(path string) (int, map[string]string) {
		t.Helper()
		resp, err := http.Get(ts.WorkerURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out struct{ Checks map[string]string }
		json.Unmarshal(body, &out)
		return resp.StatusCode, out.Checks
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, checks := get("/readyz"); code != 200 || checks["postgres"] != "ok" || checks["redis"] != "ok" {
		t.Fatalf("/readyz: %d %v", code, checks)
	}
	// A round of checks answers /readyz for 250 ms: a change shows within that.
	readyz := func(want int) (int, map[string]string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, checks := get("/readyz")
			if code == want || time.Now().After(deadline) {
				return code, checks
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, checks := readyz(503); code != 503 || checks["redis"] != "unavailable" || checks["postgres"] != "ok" {
		t.Fatalf("/readyz with Redis stopped: %d %v", code, checks)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz with Redis stopped: %d; the process still answers", code)
	}
	if err := rd.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, checks := readyz(200); code != 200 {
		t.Fatalf("/readyz once Redis is back: %d %v", code, checks)
	}
}
