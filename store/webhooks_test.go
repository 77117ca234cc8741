package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/webhook"
)

func chainAll(t *testing.T, s *Store) {
	t.Helper()
	keys, err := audit.ParseKeys("c1:"+seal.NewRandomKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.ParseSigningKey("s1:" + seal.NewRandomKey())
	if err != nil {
		t.Fatal(err)
	}
	ch := &audit.Chainer{Store: s, Keys: keys, Signer: signer, CheckpointDir: t.TempDir()}
	if _, err := ch.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func payloadOf(r audit.Row) (string, []byte, bool) {
	e, ok := webhook.Of(r)
	if !ok {
		return "", nil, false
	}
	b, _ := json.Marshal(e)
	return e.Type, b, true
}

// The audit chain fans out to each endpoint that takes the event's type,
// once, from the endpoint's creation on; a claimed message opens its
// endpoint's secret; a dead one is listed and can be replayed.
func TestWebhookFanOutClaimAndReplay(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	delivered := func(id string) AuditRecord {
		return AuditRecord{TenantID: "t1", Actor: "worker", Action: "delivery.sent", SubjectType: "delivery", SubjectID: id,
			Detail: map[string]any{"notice_id": 1, "channel": "email", "error": "not for webhooks"}}
	}
	if err := s.Audit(ctx, delivered("before")); err != nil {
		t.Fatal(err)
	}
	chainAll(t, s)
	if err := s.CreateWebhookEndpoint(ctx, webhook.Endpoint{TenantID: "t1", ID: "all", URL: "https://hooks.example/a"}, []byte("secret-a")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateWebhookEndpoint(ctx, webhook.Endpoint{TenantID: "t1", ID: "denials", URL: "https://hooks.example/d", EventTypes: []string{"notice.denied"}}, []byte("secret-d")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateWebhookEndpoint(ctx, webhook.Endpoint{TenantID: "t1", ID: "all", URL: "https://x.example"}, []byte("x")); err == nil {
		t.Fatal("a second endpoint with the same id was created")
	}
	time.Sleep(10 * time.Millisecond) // rows after the endpoints' creation
	for _, r := range []AuditRecord{delivered("d1"), {TenantID: "t1", Actor: "worker", Action: "notice.denied", SubjectType: "notice", SubjectID: "9"},
		{TenantID: "t1", Actor: "api", Action: "contact.upsert", SubjectType: "contact", SubjectID: "c"}} {
		if err := s.Audit(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	chainAll(t, s)
	for range 2 { // the second pass finds nothing new
		if _, err := s.FanOut(ctx, "t1", 100, payloadOf); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	msgs, err := s.ClaimMessages(ctx, now, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range msgs {
		var e webhook.Event
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatal(err)
		}
		got[m.EndpointID+" "+e.Type] = string(m.Secret)
	}
	want := map[string]string{"all delivery.sent": "secret-a", "all notice.denied": "secret-a", "denials notice.denied": "secret-d"}
	if len(got) != len(want) || len(msgs) != 3 {
		t.Fatalf("messages %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: secret %q, want %q", k, got[k], v)
		}
	}
	if again, _ := s.ClaimMessages(ctx, now, time.Minute, 10); len(again) != 0 {
		t.Fatalf("claimed messages were claimed again: %d", len(again))
	}
	// One dies, one is retried later, one is delivered.
	if err := s.RecordAttempt(ctx, msgs[0].ID, webhook.Result{Status: 500, Err: "the endpoint answered 500"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, msgs[1].ID, webhook.Result{Status: 503, Err: "the endpoint answered 503", Next: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, msgs[2].ID, webhook.Result{Delivered: true, Status: 204}); err != nil {
		t.Fatal(err)
	}
	dead, err := s.WebhookMessages(ctx, "t1", "dead", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != msgs[0].ID || dead[0].LastStatus != 500 || dead[0].Attempts != 1 || dead[0].MessageID != msgs[0].MsgID {
		t.Fatalf("dead letters %+v", dead)
	}
	if err := s.ReplayWebhookMessage(ctx, "other", msgs[0].ID); err == nil {
		t.Fatal("another tenant replayed the message")
	}
	if err := s.ReplayWebhookMessage(ctx, "t1", msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	again, err := s.ClaimMessages(ctx, time.Now(), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].ID != msgs[0].ID || again[0].Attempts != 0 || again[0].MsgID != msgs[0].MsgID {
		t.Fatalf("after replay claimed %+v", again)
	}
}
