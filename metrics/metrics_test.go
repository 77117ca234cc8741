package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/metrics/metricstest"
)

func scrape(t *testing.T, m *metrics.Metrics) metricstest.Exposition {
	t.Helper()
	return metricstest.Of(t, m)
}

func TestCountersMoveByWhatIsRecorded(t *testing.T) {
	m := metrics.New()
	m.Notification(metrics.Accepted)
	m.Notification(metrics.Accepted)
	m.Notification(metrics.Throttled)
	m.EventsAccepted(metrics.FromNotification, 3)
	m.EventsAccepted(metrics.FromFetch, 0) // nothing
	m.EventsProcessed(metrics.EventDone, 2)
	m.EventsProcessed(metrics.EventRetry, 1)
	m.Notice("sent", "email")
	m.Notice("denied", "email")
	m.Notice("sent", "sms")                      // an unknown channel is "other"
	m.Notice("pending", "email")                 // not an outcome: not counted
	m.Notice("Jane Doe <jane@example.org>", "x") // never a label value
	m.Decision(metrics.Allow, 200*time.Microsecond)
	m.Decision(metrics.NoDecision, time.Millisecond)
	m.SMTPSend(metrics.SMTPSent, 10*time.Millisecond)
	m.SMTPSend(metrics.SMTPTemporary, time.Second)
	m.FHIRRequest("GET", metrics.FHIROK, 50*time.Millisecond)
	m.FHIRRequest("PATCH", metrics.FHIRNetwork, time.Second)
	m.Notification(metrics.Outcome(99)) // out of range: ignored
	m.SlotWaited(metrics.SlotAdmitted)
	m.SlotWaited(metrics.SlotRefused)
	m.SlotWaited(metrics.SlotRefused)
	m.SlotWaited(metrics.SlotWait(7)) // out of range: ignored

	e := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tidings_notifications_received_total", []string{"outcome", "accepted"}, 2},
		{"tidings_notifications_received_total", []string{"outcome", "throttled"}, 1},
		{"tidings_notifications_received_total", []string{"outcome", "error"}, 0},
		{"tidings_notifications_received_total", nil, 3},
		{"tidings_events_accepted_total", []string{"source", "notification"}, 3},
		{"tidings_events_accepted_total", []string{"source", "fetch"}, 0},
		{"tidings_events_processed_total", []string{"result", "done"}, 2},
		{"tidings_events_processed_total", []string{"result", "retry"}, 1},
		{"tidings_notices_total", []string{"status", "sent", "channel", "email"}, 1},
		{"tidings_notices_total", []string{"status", "sent", "channel", "other"}, 1},
		{"tidings_notices_total", []string{"status", "denied"}, 1},
		{"tidings_notices_total", nil, 3},
		{"tidings_policy_decisions_total", []string{"result", "allow"}, 1},
		{"tidings_policy_decisions_total", []string{"result", "no_decision"}, 1},
		{"tidings_policy_decision_seconds", nil, 2},
		{"tidings_smtp_sends_total", []string{"result", "sent"}, 1},
		{"tidings_smtp_sends_total", []string{"result", "temporary"}, 1},
		{"tidings_smtp_send_seconds", nil, 2},
		{"tidings_fhir_requests_total", []string{"method", "GET", "result", "2xx"}, 1},
		{"tidings_fhir_requests_total", []string{"method", "other", "result", "network"}, 1},
		{"tidings_fhir_request_seconds", []string{"method", "GET"}, 1},
		{"tidings_http_slot_waits_total", []string{"outcome", "admitted"}, 1},
		{"tidings_http_slot_waits_total", []string{"outcome", "refused"}, 2},
	} {
		if got := e.Get(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := e.Value("go_goroutines"); !ok {
		t.Error("the Go runtime's metrics are missing")
	}
	vals := e.LabelValues()
	if got := len(vals["tidings_notices_total/status"]); got != 5 {
		t.Errorf("notice statuses: %d values %v, want the 5 outcomes", got, vals["tidings_notices_total/status"])
	}
	if vals["tidings_notices_total/status"]["pending"] || vals["tidings_notices_total/channel"]["sms"] || vals["tidings_fhir_requests_total/method"]["PATCH"] {
		t.Errorf("a value outside the fixed sets became a label: %v", vals)
	}
}

func TestEachProcessHasItsOwnRegistry(t *testing.T) {
	a, b := metrics.New(), metrics.New()
	a.Notification(metrics.Accepted)
	if got := scrape(t, b).Get(t, "tidings_notifications_received_total", "outcome", "accepted"); got != 0 {
		t.Fatalf("a second Metrics sees the first's count: %v", got)
	}
}

func TestNilRecordsNothing(t *testing.T) {
	var m *metrics.Metrics
	m.Notification(metrics.Accepted)
	m.EventsAccepted(metrics.FromFetch, 1)
	m.EventsProcessed(metrics.EventDone, 1)
	m.Notice("sent", "email")
	m.Decision(metrics.Allow, time.Millisecond)
	m.SMTPSend(metrics.SMTPSent, time.Millisecond)
	m.FHIRRequest("GET", metrics.FHIROK, time.Millisecond)
	m.SlotWaited(metrics.SlotRefused)
	m.SampleQueues([]string{"default"}, nil)
	m.SampleAuditLag(nil)
}

func TestHotPathUpdatesDoNotAllocate(t *testing.T) {
	m := metrics.New()
	for name, f := range map[string]func(){
		"Notification":   func() { m.Notification(metrics.Duplicate) },
		"EventsAccepted": func() { m.EventsAccepted(metrics.FromNotification, 2) },
		"Notice":         func() { m.Notice("failed", "email") },
		"Decision":       func() { m.Decision(metrics.Deny, time.Microsecond) },
		"SMTPSend":       func() { m.SMTPSend(metrics.SMTPRejected, time.Millisecond) },
		"FHIRRequest":    func() { m.FHIRRequest("POST", metrics.FHIRServerError, time.Millisecond) },
		"SlotWaited":     func() { m.SlotWaited(metrics.SlotAdmitted) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}

func TestSampledMetrics(t *testing.T) {
	m := metrics.New()
	var fail bool
	m.SampleQueues([]string{"default", "workflow"}, func(context.Context) ([]metrics.QueueStat, error) {
		if fail {
			return nil, errors.New("redis down")
		}
		return []metrics.QueueStat{
			{Queue: "default", Pending: 4, Active: 1, Retry: 2, Latency: 3 * time.Second},
			{Queue: "unlisted-queue", Pending: 9}, // not a known name: left out
		}, nil
	})
	lag := int64(7)
	m.SampleAuditLag(func(context.Context) (int64, error) {
		if fail {
			return 0, errors.New("postgres down")
		}
		return lag, nil
	})
	e := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tidings_queue_tasks", []string{"queue", "default", "state", "pending"}, 4},
		{"tidings_queue_tasks", []string{"queue", "default", "state", "retry"}, 2},
		{"tidings_queue_tasks", []string{"queue", "workflow", "state", "pending"}, 0}, // known, never used
		{"tidings_queue_latency_seconds", []string{"queue", "default"}, 3},
		{"tidings_audit_unchained_rows", nil, 7},
	} {
		if got := e.Get(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := e.Value("tidings_queue_tasks", "queue", "unlisted-queue"); ok {
		t.Error("a queue outside the known names became a label value")
	}

	// Sampling fails: those series are left out, the scrape still answers
	// and says what failed.
	fail = true
	e = scrape(t, m)
	if _, ok := e.Value("tidings_audit_unchained_rows"); ok {
		t.Error("audit lag reported although it could not be read")
	}
	if got := e.Get(t, "tidings_metrics_collect_errors_total", "metric", "queue"); got != 1 {
		t.Errorf("queue sampling errors = %v, want 1", got)
	}
	if got := e.Get(t, "tidings_metrics_collect_errors_total", "metric", "audit_lag"); got != 1 {
		t.Errorf("audit lag sampling errors = %v, want 1", got)
	}
}

// BenchmarkHotPath is what a decided and sent notice costs in metrics: a
// decision with its latency, the notice's outcome and the SMTP send.
func BenchmarkHotPath(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Decision(metrics.Allow, 300*time.Microsecond)
			m.SMTPSend(metrics.SMTPSent, 5*time.Millisecond)
			m.Notice("sent", "email")
		}
	})
}
