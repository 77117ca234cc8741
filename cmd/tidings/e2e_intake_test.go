package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/testenv"
)

func doRequest(h http.Handler, method, path, ctype, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Every bad request is a 4xx with a FHIR OperationOutcome, and stores nothing.
func TestNotifyRejectsBadInputWithOperationOutcome(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	good := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))
	big := append([]byte(`{"resourceType":"Bundle","type":"history","entry":[],"pad":"`), bytes.Repeat([]byte("x"), 1<<20)...)
	big = append(big, `"}`...)
	cases := []struct {
		name, method, path, ctype, secret string
		body                              []byte
		want                              int
	}{
		{"malformed JSON", "", "", "application/fhir+json", ts.Secret, []byte(`{"resourceType": "Bundle",`), 400},
		{"empty rest-hook ping (fetching comes later)", "", "", "application/fhir+json", ts.Secret, nil, 422},
		{"a Bundle of resources", "", "", "application/fhir+json", ts.Secret, fixture(t, "synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"), 422},
		{"not a notification (searchset)", "", "", "application/fhir+json", ts.Secret, fixture(t, "subscriptions-backport-ig/subscription_status_example.json"), 422},
		{"id-only content not yet supported", "", "", "application/fhir+json", ts.Secret, fixture(t, "subscriptions-backport-ig/id_only_notification_bundle_example.json"), 422},
		{"wrong content type", "", "", "text/plain", ts.Secret, good, 415},
		{"no content type", "", "", "", ts.Secret, good, 415},
		{"body over 1 MiB", "", "", "application/fhir+json", ts.Secret, big, 413},
		{"unknown subscription (answered as a wrong secret)", "", "/fhir/r4/notify/nobody", "application/fhir+json", ts.Secret, good, 401},
		{"a subscription id Postgres cannot hold: NUL", "", "/fhir/r4/notify/no%00body", "application/fhir+json", ts.Secret, good, 401},
		{"a subscription id Postgres cannot hold: invalid UTF-8", "", "/fhir/r4/notify/" + devTenant + "/no%ffbody", "application/fhir+json", ts.Secret, good, 401},
		{"missing secret", "", "", "application/fhir+json", "", good, 401},
		{"wrong secret", "", "", "application/fhir+json", "not-the-secret", good, 401},
		{"no such FHIR endpoint", "", "/fhir/r4/Patient", "application/fhir+json", ts.Secret, good, 404},
		{"GET on the notify endpoint", "GET", "", "", ts.Secret, nil, 405},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, method := c.path, c.method
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/fhir/r4/notify/" + devSubscription
			}
			req, _ := http.NewRequest(method, ts.BaseURL+path, bytes.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			if c.secret != "" {
				req.Header.Set("Authorization", "Bearer "+c.secret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var oo struct {
				ResourceType string
				Issue        []struct{ Severity, Code, Diagnostics string }
			}
			if err := json.NewDecoder(resp.Body).Decode(&oo); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type %q", ct)
			}
			if resp.StatusCode != c.want || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Severity != "error" || oo.Issue[0].Diagnostics == "" {
				t.Fatalf("got %d %+v, want %d with an error OperationOutcome", resp.StatusCode, oo, c.want)
			}
		})
	}
	c, _ := ts.app.store.CountAll(context.Background(), devTenant)
	if c.Events != 0 {
		t.Errorf("bad requests stored %d events", c.Events)
	}
	// Handshake and heartbeat are recorded against the subscription, 200.
	for _, f := range []string{"handshake_bundle_example.json", "heartbeat_bundle_example.json"} {
		if r := ts.notify(t, fixture(t, "subscriptions-backport-ig/"+f)); r.Status != 200 {
			t.Errorf("%s: %d %s", f, r.Status, r.Body)
		}
	}
	sub, err := ts.app.store.Report(context.Background(), devTenant, devSubscription)
	if err != nil || sub.LastHandshakeAt == nil || sub.LastHeartbeatAt == nil || sub.Heartbeats != 1 {
		t.Errorf("subscription status not recorded: %+v %v", sub, err)
	}
}

func TestNotifyRateLimit(t *testing.T) {
	ts := newTestStack(t, testOpts{RatePerSecond: 1, RateBurst: 2})
	body := fixture(t, "subscriptions-backport-ig/heartbeat_bundle_example.json")
	codes := map[int]int{}
	for i := 0; i < 5; i++ {
		r := ts.notify(t, body)
		codes[r.Status]++
		if r.Status == 429 && (r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.Body), "OperationOutcome")) {
			t.Errorf("429 without Retry-After or OperationOutcome: %s", r.Body)
		}
	}
	if codes[429] == 0 || codes[200] == 0 {
		t.Fatalf("status counts %v: want some 200 then 429", codes)
	}
}

// Redis holds no patient name, diagnosis code or member id in clear: task
// payloads are sealed. Events never go to Redis; the run's reminder
// wake-up does (the horizon is stretched so the 7-day wait sits there).
func TestRedisHoldsNoPHI(t *testing.T) {
	ts := newTestStack(t, testOpts{WakeHorizon: 30 * 24 * time.Hour})
	patient := fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	collection := withPatient2(patient, eob)
	if r := ts.notify(t, ts.wrap(t, collection)); r.Status != 202 {
		t.Fatalf("status %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 1)
	canaries := phiCanaries(t, patient, eob)
	if len(canaries) < 3 {
		t.Fatalf("too few canaries read from the fixtures: %v", canaries)
	}
	var dump string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if dump = redisDump(t, ts); strings.Contains(dump, "run:wake") {
			break
		}
	}
	if !strings.Contains(dump, "run:wake") {
		t.Fatalf("no run wake-up found in the Redis dump")
	}
	// The payload is sealed: not even its non-PHI JSON keys are readable.
	for _, plain := range append(canaries, `"event_id"`, `"tenant_id"`) {
		if strings.Contains(dump, plain) {
			t.Errorf("Redis holds %q in clear", plain)
		}
	}
}

// redisDump returns every key and value in the test's Redis database as text.
func redisDump(t *testing.T, ts *testStack) string {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: ts.app.redis.Addr, DB: ts.app.redis.DB})
	defer rc.Close()
	dump, keys := dumpRedisDB(t, rc)
	if keys == 0 {
		t.Fatal("no keys in Redis: nothing was enqueued, so a scan would prove nothing")
	}
	return dump
}

// dumpRedisDB returns every key and value of rc's database as text, each
// value read as its type requires, and how many keys there were.
func dumpRedisDB(t *testing.T, rc *redis.Client) (string, int) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	iter := rc.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	for _, k := range keys {
		dump.WriteString(k + "\n")
		switch typ := rc.Type(ctx, k).Val(); typ {
		case "string":
			dump.WriteString(rc.Get(ctx, k).Val())
		case "hash":
			for f, v := range rc.HGetAll(ctx, k).Val() {
				dump.WriteString(f + "=" + v + "\n")
			}
		case "list":
			dump.WriteString(strings.Join(rc.LRange(ctx, k, 0, -1).Val(), "\n"))
		case "set":
			dump.WriteString(strings.Join(rc.SMembers(ctx, k).Val(), "\n"))
		case "zset":
			dump.WriteString(strings.Join(rc.ZRange(ctx, k, 0, -1).Val(), "\n"))
		case "stream":
			for _, m := range rc.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprintf(&dump, "%s %v\n", m.ID, m.Values)
			}
		case "none": // expired between SCAN and TYPE
		default:
			t.Fatalf("key %q has type %s, which the dump cannot read", k, typ)
		}
		dump.WriteString("\n")
	}
	return dump.String(), len(keys)
}

// phiCanaries reads names, member ids and diagnosis codes from the fixtures.
func phiCanaries(t *testing.T, patient, eob []byte) []string {
	var p struct {
		Name []struct {
			Family string
			Given  []string
		}
		Identifier []struct{ Value string }
		Telecom    []struct{ Value string }
		Address    []struct {
			Line       []string
			PostalCode string
		}
		BirthDate string
	}
	if err := json.Unmarshal(patient, &p); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range p.Name {
		out = append(out, n.Family)
		out = append(out, n.Given...)
	}
	for _, id := range p.Identifier {
		if len(id.Value) >= 4 {
			out = append(out, id.Value)
		}
	}
	for _, tc := range p.Telecom {
		out = append(out, tc.Value)
	}
	for _, a := range p.Address {
		out = append(out, a.Line...)
		if a.PostalCode != "" {
			out = append(out, a.PostalCode)
		}
	}
	if p.BirthDate != "" {
		out = append(out, p.BirthDate)
	}
	var e struct {
		Diagnosis []struct {
			DiagnosisCodeableConcept struct{ Coding []struct{ Code string } }
		}
	}
	json.Unmarshal(eob, &e)
	for _, d := range e.Diagnosis {
		for _, c := range d.DiagnosisCodeableConcept.Coding {
			out = append(out, c.Code)
		}
	}
	return out
}

// Events never wait for Redis: with Redis down a notification is stored,
// answered 202, claimed from Postgres by the worker and delivered while
// Redis is still down; bringing it back changes nothing.
func TestRedisDownEventsStillDeliver(t *testing.T) {
	r, err := testenv.StartRedis(context.Background(), "", testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ts := newTestStack(t, testOpts{RedisAddr: r.Addr, ReconcileEvery: 200 * time.Millisecond})
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	res := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")))
	if res.Status != 202 {
		t.Fatalf("with Redis down: status %d %s", res.Status, res.Body)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 40*time.Second), 1); err != nil {
		c, _ := ts.app.store.CountAll(context.Background(), devTenant)
		t.Fatalf("with Redis down no message arrived: %v; counts %+v", err, c)
	}
	c := ts.waitNotices(t, 1)
	if c.Events != 1 || c.ByStatus[delivery.NoticeSent] != 1 {
		t.Fatalf("with Redis down: %+v", c)
	}
	if err := r.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(ts.Mail.Messages()); n != 1 {
		t.Fatalf("%d messages after Redis came back, want the one", n)
	}
}

// The service's logs never carry the patient's name, email or codes.
func TestLogsCarryNoPHI(t *testing.T) {
	ts := newTestStack(t, testOpts{NoSTARTTLS: true}) // failures log more
	patient := fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	collection := withPatient2(patient, eob)
	ts.notify(t, ts.wrap(t, collection))
	ts.notify(t, []byte(`{"resourceType":`))
	ts.waitNotices(t, 1)
	logs := ts.Logs.String()
	if !strings.Contains(logs, `"route":"/fhir/r4/notify/:subscription"`) {
		t.Fatalf("expected request logs, got:\n%s", logs)
	}
	for _, c := range phiCanaries(t, patient, eob) {
		if strings.Contains(logs, c) {
			t.Errorf("logs contain %q", c)
		}
	}
	if regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`).MatchString(logs) {
		t.Errorf("logs contain something shaped like an email address:\n%s", logs)
	}
}

// Classic R4 rest-hook: the resource itself, PUT to {endpoint}/{type}/{id}
// (as HAPI sends it) or POSTed; deduplicated like any event.
func TestClassicRestHook(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")
	put := func(path string, body []byte) postResult {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, ts.BaseURL+"/fhir/r4/notify/"+devSubscription+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+ts.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return postResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}
	if r := put("/ExplanationOfBenefit/EOBOral1", eob); r.Status != 202 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	if r := put("/ExplanationOfBenefit/EOBOral1", eob); r.Status != 200 || r.Header.Get("X-Tidings-Duplicates") != "1" {
		t.Fatalf("repeat PUT: %d duplicates %q", r.Status, r.Header.Get("X-Tidings-Duplicates"))
	}
	if r := put("/ExplanationOfBenefit/another-id", eob); r.Status != 400 || !strings.Contains(string(r.Body), "OperationOutcome") {
		t.Fatalf("mismatched path: %d %s", r.Status, r.Body)
	}
	if r := ts.notify(t, fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")); r.Status != 200 || r.Header.Get("X-Tidings-Ignored") != "1" {
		t.Fatalf("POSTed Patient: %d ignored %q", r.Status, r.Header.Get("X-Tidings-Ignored"))
	}
	if r := ts.notify(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")); r.Status != 202 {
		t.Fatalf("POSTed EOB: %d %s", r.Status, r.Body)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 2); err != nil {
		t.Fatal(err)
	}
	c := ts.waitNotices(t, 2)
	if c.Events != 2 || c.ByStatus[delivery.NoticeSent] != 2 {
		t.Fatalf("counts %+v", c)
	}
	var withNumber int
	ts.app.store.RawScan(context.Background(), &withNumber, `SELECT count(*) FROM events WHERE event_number IS NOT NULL`)
	if withNumber != 0 {
		t.Errorf("%d rest-hook events carry an event number; classic rest-hook has none", withNumber)
	}
}

// A subscription whose source signs: unsigned, wrongly signed, untimed,
// stale and replayed notifications are refused; a good signature over a
// fresh timestamp is accepted, and the same body signed afresh (a retry) is
// a duplicate.
func TestSignedNotifications(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	key := []byte("source-signing-key-0123456789abcdef")
	if err := ts.app.store.SetSubscriptionHMACKey(context.Background(), devTenant, devSubscription, key); err != nil {
		t.Fatal(err)
	}
	body := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))
	now := strconv.FormatInt(time.Now().Unix(), 10)
	later := strconv.FormatInt(time.Now().Unix()+1, 10)
	old := strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10)
	tampered := bytes.Replace(body, []byte(`"EOBOral1"`), []byte(`"EOBOral2"`), 1)
	for _, c := range []struct {
		name      string
		body      []byte
		sig, when string
		want      int
		says      string // in the OperationOutcome's diagnostics
	}{
		{"unsigned", body, "", now, 401, "signature"},
		{"not hex", body, "zz", now, 401, "signature"},
		{"signature of another body", tampered, signBody(key, now, body), now, 401, "signature"},
		{"no timestamp (body-only signature)", body, signBody(key, "", body), "", 401, "X-Signature-Timestamp"},
		{"timestamp too old", body, signBody(key, old, body), old, 401, "replay window"},
		{"timestamp not signed", body, signBody(key, "", body), now, 401, "signature"},
		{"good, with a fresh timestamp", body, signBody(key, now, body), now, 202, ""},
		{"the same request again (replay)", body, signBody(key, now, body), now, 409, "already received"},
		{"the same body signed afresh (a retry)", body, signBody(key, later, body), later, 200, ""},
	} {
		r := ts.postSigned(t, devSubscription, c.body, c.sig, c.when)
		if r.Status != c.want {
			t.Errorf("%s: %d, want %d: %s", c.name, r.Status, c.want, r.Body)
			continue
		}
		if c.says != "" && !outcomeSays(t, r.Body, c.says) {
			t.Errorf("%s: %s does not say %q", c.name, r.Body, c.says)
		}
	}
}

// A signed status change replayed within the window does not take effect
// again: the source reported "error", then "active"; the captured "error"
// posted again is refused and the subscription stays active.
func TestReplayedSignedStatusChangeIsRefused(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	key := []byte("source-signing-key-0123456789abcdef")
	if err := ts.app.store.SetSubscriptionHMACKey(context.Background(), devTenant, devSubscription, key); err != nil {
		t.Fatal(err)
	}
	heartbeat := fixture(t, "subscriptions-backport-ig/heartbeat_bundle_example.json")
	errored := bytes.Replace(heartbeat, []byte(`"valueCode": "active"`), []byte(`"valueCode": "error"`), 1)
	if bytes.Equal(errored, heartbeat) {
		t.Fatal("the heartbeat fixture has no active status to change")
	}
	when := strconv.FormatInt(time.Now().Unix(), 10)
	sig := signBody(key, when, errored)
	status := func() string {
		t.Helper()
		sub, err := ts.app.store.SubscriptionByID(context.Background(), devTenant, devSubscription)
		if err != nil {
			t.Fatal(err)
		}
		return sub.Status
	}
	if r := ts.postSigned(t, devSubscription, errored, sig, when); r.Status != 200 || status() != "error" {
		t.Fatalf("signed error status: %d %s; subscription %s", r.Status, r.Body, status())
	}
	next := strconv.FormatInt(time.Now().Unix()+1, 10)
	if r := ts.postSigned(t, devSubscription, heartbeat, signBody(key, next, heartbeat), next); r.Status != 200 || status() != "active" {
		t.Fatalf("signed active status: %d %s; subscription %s", r.Status, r.Body, status())
	}
	r := ts.postSigned(t, devSubscription, errored, sig, when)
	if r.Status != 409 || !outcomeSays(t, r.Body, "already received") {
		t.Errorf("replayed error status: %d %s, want 409", r.Status, r.Body)
	}
	if got := status(); got != "active" {
		t.Errorf("the replayed status took effect: subscription %s", got)
	}
}

// signBody is X-Signature: the hex HMAC-SHA256 of "<timestamp>.<body>", or
// of the body alone when timestamp is "".
func signBody(key []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	if timestamp != "" {
		m.Write([]byte(timestamp + "."))
	}
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// postSigned posts a notification with the subscription's secret and the
// given signature headers (each omitted when "").
func (ts *testStack) postSigned(t testing.TB, sub string, body []byte, sig, timestamp string) postResult {
	t.Helper()
	h := http.Header{}
	if sig != "" {
		h.Set("X-Signature", sig)
	}
	if timestamp != "" {
		h.Set("X-Signature-Timestamp", timestamp)
	}
	return ts.postTo(t, sub, body, "application/fhir+json", ts.Secret, h)
}

// outcomeSays reports whether body is an error OperationOutcome whose
// diagnostics contain want.
func outcomeSays(t testing.TB, body []byte, want string) bool {
	t.Helper()
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code, Diagnostics string }
	}
	if err := json.Unmarshal(body, &oo); err != nil {
		return false
	}
	return oo.ResourceType == "OperationOutcome" && len(oo.Issue) == 1 && oo.Issue[0].Severity == "error" &&
		strings.Contains(oo.Issue[0].Diagnostics, want)
}

// Behind a trusted reverse proxy every FHIR server is its own client: one
// that floods is throttled, another on the same proxy connection is not.
// A client that is not a trusted proxy cannot dodge its limit by naming
// other clients in X-Forwarded-For.
func TestRateLimitsBehindATrustedProxy(t *testing.T) {
	ts := newTestStack(t, testOpts{RatePerSecond: 0.01, RateBurst: 3})
	ctx := context.Background()
	other := "dev-eob-2"
	otherSecret := "second-subscription-secret-0123456789"
	if err := ts.app.store.CreateSubscription(ctx, intake.Subscription{ID: other, TenantID: devTenant}, otherSecret); err != nil {
		t.Fatal(err)
	}
	heartbeat := fixture(t, "subscriptions-backport-ig/heartbeat_bundle_example.json")
	send := func(h http.Handler, sub, secret, forwardedFor string) int {
		req := httptest.NewRequest("POST", "/fhir/r4/notify/"+sub, bytes.NewReader(heartbeat))
		req.RemoteAddr = "10.1.2.3:40000" // the proxy
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("X-Forwarded-For", forwardedFor)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}

	ts.app.cfg.TrustedProxies = []string{"10.1.2.0/24"}
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	for range 6 {
		codes[send(h, devSubscription, ts.Secret, "198.51.100.7")]++
	}
	if codes[200] != 3 || codes[429] != 3 {
		t.Fatalf("the flooding server: %v, want 3 × 200 then 429", codes)
	}
	if c := send(h, other, otherSecret, "203.0.113.9"); c != 200 {
		t.Errorf("another FHIR server behind the same proxy: %d, want 200", c)
	}

	// The same proxy, not configured as trusted: X-Forwarded-For is ignored,
	// so naming new clients does not reset the limit.
	ts.app.cfg.TrustedProxies = nil
	h, err = ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	codes = map[int]int{}
	for i := range 6 {
		codes[send(h, other, otherSecret, fmt.Sprintf("192.0.2.%d", i+1))]++
	}
	if codes[429] != 3 {
		t.Errorf("spoofed X-Forwarded-For from an untrusted address: %v, want 3 × 429", codes)
	}
}

// Each API key has its own limit, whatever address it calls from.
func TestRateLimitPerAPIKey(t *testing.T) {
	ts := newTestStack(t, testOpts{RatePerSecond: 0.01, RateBurst: 3, DeferWorker: true})
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	busy, quiet := ts.apiKey(t, devTenant, access.Operator), ts.apiKey(t, devTenant, access.Operator)
	get := func(token, addr string) int {
		req := httptest.NewRequest("GET", "/v1/workflows", nil)
		req.RemoteAddr = addr
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	codes := map[int]int{}
	for i := range 6 { // two requests from each of three addresses: under each address's limit
		codes[get(busy, fmt.Sprintf("192.0.2.%d:1000", i%3+1))]++
	}
	if codes[200] != 3 || codes[429] != 3 {
		t.Fatalf("one key from three addresses: %v, want 3 × 200 then 429", codes)
	}
	if c := get(quiet, "192.0.2.9:1000"); c != 200 {
		t.Errorf("another key: %d, want 200", c)
	}
}
