package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/audit"
)

// The signature is the Standard Webhooks one: the specification's own
// example (secret, id, timestamp and body) gives its published signature.
func TestSignatureMatchesTheSpecificationsExample(t *testing.T) {
	secret, err := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		body, _ := io.ReadAll(r.Body)
		if string(body) != `{"test": 2432232314}` {
			t.Errorf("body %q", body)
		}
	}))
	defer srv.Close()
	d := &Dispatcher{Client: srv.Client(), Now: func() time.Time { return time.Unix(1614265330, 0) }}
	r := d.attempt(context.Background(), Message{URL: srv.URL, Secret: secret, MsgID: "msg_p5jXN8AQM9LWM0D4loKWxJek", Payload: []byte(`{"test": 2432232314}`)})
	if !r.Delivered || r.Status != 200 {
		t.Fatalf("result %+v", r)
	}
	for h, want := range map[string]string{
		"webhook-id":        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		"webhook-timestamp": "1614265330",
		"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		"content-type":      "application/json",
	} {
		if got.Get(h) != want {
			t.Errorf("%s: %q, want %q", h, got.Get(h), want)
		}
	}
}

// A failed attempt waits the schedule's next delay; after the last the
// message is dead. The error names the status, never the response body.
func TestFailedAttemptsFollowTheSchedule(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "secret internal detail", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	d := &Dispatcher{Client: srv.Client(), Schedule: []time.Duration{time.Second, time.Minute}, Now: func() time.Time { return now }}
	for attempts, want := range []time.Time{now.Add(time.Second), now.Add(time.Minute), {}} {
		r := d.attempt(context.Background(), Message{URL: srv.URL, Secret: []byte("k"), MsgID: "m", Payload: []byte(`{}`), Attempts: attempts})
		if r.Delivered || r.Status != 503 || !r.Next.Equal(want) || strings.Contains(r.Err, "secret") || !strings.Contains(r.Err, "503") {
			t.Errorf("attempt %d: %+v, want next %v", attempts+1, r, want)
		}
	}
	r := d.attempt(context.Background(), Message{URL: "http://127.0.0.1:1/x?token=abc", Secret: []byte("k"), MsgID: "m", Payload: []byte(`{}`)})
	if r.Delivered || r.Status != 0 || strings.Contains(r.Err, "token=abc") {
		t.Errorf("unreachable endpoint: %+v", r)
	}
}

// Events carry the subject's id and allow-listed detail keys only: an
// error text or reasons in the audit detail never leave.
func TestEventsCarryIDsAndStatusesOnly(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		row  audit.Row
		want string // the event's JSON, "" for none
	}{
		{audit.Row{Action: "delivery.failed", SubjectType: "delivery", SubjectID: "12", At: at,
			Detail: json.RawMessage(`{"notice_id": 7, "channel": "email", "tls": true, "attempt": 1, "error": "550 no such user canary@example.org"}`)},
			`{"type":"delivery.failed","timestamp":"2026-12-07T10:00:00Z","data":{"attempt":1,"channel":"email","delivery_id":"12","notice_id":7,"tls":true}}`},
		{audit.Row{Action: "notice.denied", SubjectType: "notice", SubjectID: "7", At: at,
			Detail: json.RawMessage(`{"event_id": 3, "reasons": ["preauthorization"]}`)},
			`{"type":"notice.denied","timestamp":"2026-12-07T10:00:00Z","data":{"event_id":3,"notice_id":"7"}}`},
		{audit.Row{Action: "engagement.recorded", SubjectType: "engagement", SubjectID: "4", At: at,
			Detail: json.RawMessage(`{"type": "portal.viewed", "runs_woken": 1}`)},
			`{"type":"engagement.recorded","timestamp":"2026-12-07T10:00:00Z","data":{"engagement_id":"4","runs_woken":1,"type":"portal.viewed"}}`},
		{audit.Row{Action: "contact.upsert", SubjectType: "contact", SubjectID: "x", At: at}, ""},
		{audit.Row{Action: "policy.decision", SubjectType: "notice", SubjectID: "7", At: at}, ""},
	} {
		e, ok := Of(tc.row)
		if !ok {
			if tc.want != "" {
				t.Errorf("%s: no event", tc.row.Action)
			}
			continue
		}
		b, _ := json.Marshal(e)
		if string(b) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.row.Action, b, tc.want)
		}
	}
	if err := CheckTypes([]string{"delivery.sent", "contact.upsert"}); err == nil {
		t.Error("contact.upsert accepted as an event type")
	}
}
