package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/workflow"
)

// noEOBByEmail is a health plan's own policy: no EOB notice by email,
// everything else allowed; with its own tests.
var noEOBByEmail = map[string]string{
	"plan/notice.rego": `package tidings.notice

decision := {"allow": count(deny) == 0, "deny": sort(deny), "redact": [], "obligations": {}}

deny contains "this plan sends no EOB notice by email" if {
	input.notice_type == "eob"
	input.channel.type == "email"
}
`,
	"plan/notice_test.rego": `package tidings.notice_test

import data.tidings.notice

test_eob_email_denied if not notice.decision.allow with input as {"notice_type": "eob", "channel": {"type": "email"}}

test_appointment_allowed if notice.decision.allow with input as {"notice_type": "appointment", "channel": {"type": "email"}}
`,
}

// opaBundle packs files as `opa build` would: a gzipped tar of the files.
func opaBundle(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Tenant "dev" uploads its own policy (an OPA bundle) through another
// serve process; the stack's running worker picks it up from the database
// without a restart, and then denies dev's EOB notice (no mail, the
// decision recorded with dev's revision) while tenant "b", on the default
// rules, gets its mail. A policy whose own tests fail is refused with 422
// and dev keeps its revision; b neither sees nor changes dev's policy.
func TestTenantPolicies(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	ctx := context.Background()
	const tenantB, subB = "b", "b-eob"
	secretB := seal.NewToken()
	if err := ts.app.store.EnsureTenant(ctx, tenantB, "Plan B"); err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.InstallWorkflows(ctx, tenantB, workflow.Builtins()); err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.CreateSubscription(ctx, intake.Subscription{ID: subB, TenantID: tenantB,
		Topic: "http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob"}, secretB); err != nil {
		t.Fatal(err)
	}

	// A second serve process on the same database takes the uploads: the
	// stack's worker can only learn of them through the database.
	other, err := openApp(ctx, ts.app.cfg, ts.Log, "tidings")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	otherPolicies, err := other.tenantPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := other.handler(otherPolicies)
	if err != nil {
		t.Fatal(err)
	}
	tokA, tokB := ts.apiKey(t, devTenant, access.Compliance), ts.apiKey(t, tenantB, access.Compliance)
	actorA := "key:" + tokA[4:20]
	mapFS := fstest.MapFS{}
	for name, content := range noEOBByEmail {
		mapFS[name] = &fstest.MapFile{Data: []byte(content)}
	}
	probe, err := policy.New(ctx, mapFS)
	if err != nil {
		t.Fatal(err)
	}
	ownRev, defaultRev := probe.Revision(), ts.app.pol.Revision()

	r := doRequest(h, "PUT", "/v1/policy", "application/gzip", tokA, string(opaBundle(t, noEOBByEmail)))
	var st policy.TenantStatus
	if r.Code != 200 || json.Unmarshal(r.Body.Bytes(), &st) != nil || st.Revision != ownRev || st.Default || st.ActivatedBy != actorA {
		t.Fatalf("PUT /v1/policy (bundle): %d %s", r.Code, r.Body)
	}
	uploaded := time.Now()
	worker := ts.app.tenants // what the stack's worker decides with
	for worker.Status(devTenant).Revision != ownRev {
		if time.Since(uploaded) > 10*time.Second {
			t.Fatalf("the worker still has %+v", worker.Status(devTenant))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the worker took %s to pick up the new revision", time.Since(uploaded).Round(time.Millisecond))

	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	if res := ts.notify(t, ts.wrap(t, eob)); res.Status != http.StatusAccepted {
		t.Fatalf("notify dev: %d %s", res.Status, res.Body)
	}
	wrapped, err := fhir.WrapResources(eob, ts.BaseURL+"/fhir/r4/Subscription/"+subB, "eob", time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.BaseURL+"/fhir/r4/notify/"+subB, bytes.NewReader(wrapped))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+secretB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notify b: %d", resp.StatusCode)
	}
	ts.waitTenantNotices(t, devTenant, 1)
	ts.waitTenantNotices(t, tenantB, 1)
	outA, _ := ts.app.store.NoticeOutcomes(ctx, devTenant)
	outB, _ := ts.app.store.NoticeOutcomes(ctx, tenantB)
	if len(outA) != 1 || outA[0].Status != delivery.NoticeDenied || !strings.Contains(strings.Join(outA[0].Reasons, ";"), "no EOB notice by email") {
		t.Errorf("dev's notices: %+v", outA)
	}
	if len(outB) != 1 || outB[0].Status != delivery.NoticeSent {
		t.Errorf("b's notices: %+v", outB)
	}
	if msgs := ts.Mail.Messages(); len(msgs) != 1 {
		t.Errorf("%d mails, want b's one", len(msgs))
	}
	var decisions []struct {
		TenantID       string
		PolicyRevision string
		Allow          bool
	}
	ts.app.store.RawScan(ctx, &decisions, `SELECT tenant_id, policy_revision, allow FROM policy_decisions WHERE channel = 'email' ORDER BY tenant_id`)
	if len(decisions) != 2 || decisions[0].TenantID != tenantB || decisions[0].PolicyRevision != defaultRev || !decisions[0].Allow ||
		decisions[1].TenantID != devTenant || decisions[1].PolicyRevision != ownRev || decisions[1].Allow {
		t.Errorf("decision log %+v; want b's allow by %s and dev's denial by %s", decisions, defaultRev, ownRev)
	}

	// A revision whose own tests fail is refused; dev keeps its revision.
	failing := map[string]string{"plan/notice.rego": noEOBByEmail["plan/notice.rego"],
		"plan/notice_test.rego": "package tidings.notice_test\n\nimport data.tidings.notice\n\ntest_eob_email_allowed if notice.decision.allow with input as {\"notice_type\": \"eob\", \"channel\": {\"type\": \"email\"}}\n"}
	body, _ := json.Marshal(map[string]any{"policy": failing})
	if r = doRequest(h, "PUT", "/v1/policy", "application/json", tokA, string(body)); r.Code != 422 || !strings.Contains(r.Body.String(), "test_eob_email_allowed") {
		t.Fatalf("a policy whose tests fail: %d %s", r.Code, r.Body)
	}
	// So is one with a field this version does not read.
	body, _ = json.Marshal(map[string]any{"policy": noEOBByEmail, "activate": false})
	if r = doRequest(h, "PUT", "/v1/policy", "application/json", tokA, string(body)); r.Code != 400 || !strings.Contains(r.Body.String(), "unknown fields") {
		t.Fatalf("a policy upload with an unknown field: %d %s", r.Code, r.Body)
	}
	for name, hh := range map[string]http.Handler{"other": h, "stack": mustHandler(t, ts)} {
		if r = doRequest(hh, "GET", "/v1/policy", "", tokA, ""); r.Code != 200 || !strings.Contains(r.Body.String(), ownRev) {
			t.Errorf("dev's policy after a refused upload (%s process): %d %s", name, r.Code, r.Body)
		}
	}

	// Tenant b sees only its own (the default), and its DELETE is its own.
	if r = doRequest(h, "GET", "/v1/policy", "", tokB, ""); r.Code != 200 || strings.Contains(r.Body.String(), ownRev) ||
		!strings.Contains(r.Body.String(), `"default":true`) || strings.Contains(r.Body.String(), "plan/") {
		t.Errorf("b's GET /v1/policy: %d %s", r.Code, r.Body)
	}
	if r = doRequest(h, "DELETE", "/v1/policy", "", tokB, ""); r.Code != 200 {
		t.Errorf("b's DELETE /v1/policy: %d %s", r.Code, r.Body)
	}
	if st := otherPolicies.Status(devTenant); st.Revision != ownRev || st.Default {
		t.Errorf("dev's policy after b's DELETE: %+v", st)
	}

	var audited []string
	ts.app.store.RawScan(ctx, &audited, `SELECT action || ' ' || actor FROM audit_log WHERE tenant_id = ? AND action IN ('policy.activated', 'policy.rejected', 'policy.reset') ORDER BY id`, devTenant)
	if want := []string{"policy.activated " + actorA, "policy.rejected " + actorA}; strings.Join(audited, ",") != strings.Join(want, ",") {
		t.Errorf("dev's policy audit: %q, want %q", audited, want)
	}
}

func mustHandler(t *testing.T, ts *testStack) http.Handler {
	t.Helper()
	h, err := ts.app.handler(ts.app.tenants)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// While one tenant's dry run runs (the bomb, until its limit), that
// tenant's next one gets 429, and another tenant's candidate dry run is
// answered in full.
func TestDryRunsAreLimitedPerTenant(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	if err := ts.app.store.EnsureTenant(ctx, "b", "Plan B"); err != nil {
		t.Fatal(err)
	}
	h := mustHandler(t, ts)
	tokA, tokB := ts.apiKey(t, devTenant, access.Compliance), ts.apiKey(t, "b", access.Compliance)
	input := map[string]any{"notice_type": "eob", "channel": map[string]any{"type": "email"}, "payload": map[string]any{}}
	bomb, _ := json.Marshal(map[string]any{"input": input, "policy": map[string]string{"bomb.rego": sprintfBomb}})
	allowAll, _ := json.Marshal(map[string]any{"input": input, "policy": map[string]string{
		"p.rego": "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": [], \"obligations\": {}}\n"}})

	bombDone := make(chan int, 1)
	go func() {
		bombDone <- doRequest(h, "POST", "/v1/policy/evaluate", "application/json", tokA, string(bomb)).Code
	}()
	time.Sleep(300 * time.Millisecond) // the bomb holds dev's slot
	if r := doRequest(h, "POST", "/v1/policy/evaluate", "application/json", tokA, string(allowAll)); r.Code != http.StatusTooManyRequests {
		t.Errorf("dev's second dry run: %d %s, want 429", r.Code, r.Body)
	}
	r := doRequest(h, "POST", "/v1/policy/evaluate", "application/json", tokB, string(allowAll))
	if r.Code != 200 || !strings.Contains(r.Body.String(), `"allow":true`) {
		t.Errorf("b's dry run while dev's runs: %d %s", r.Code, r.Body)
	}
	select {
	case code := <-bombDone:
		t.Fatalf("the bomb finished (%d) before b's dry run was checked: the test proves nothing", code)
	default:
	}
	if code := <-bombDone; code != 422 {
		t.Errorf("the bomb: %d, want 422", code)
	}
}

// A tenant's policy that writes a payload value (here the payer's name, in
// capitals, so that no exact match finds it) into a deny reason gets no
// decision: the notice fails closed, no mail goes, and the value is in no
// stored reason, decision or audit row, in any case.
func TestTenantPolicyQuotingPHIFailsClosed(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	ctx := context.Background()
	pols, err := ts.app.tenantPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ts.app.handler(pols)
	if err != nil {
		t.Fatal(err)
	}
	quoting := map[string]string{"plan/notice.rego": `package tidings.notice

decision := {"allow": count(deny) == 0, "deny": sort(deny), "redact": [], "obligations": {}}

deny contains sprintf("no notice about %s", [upper(input.payload.payer_name)]) if input.notice_type == "eob"
`}
	body, _ := json.Marshal(map[string]any{"policy": quoting})
	if r := doRequest(h, "PUT", "/v1/policy", "application/json", ts.apiKey(t, devTenant, access.Compliance), string(body)); r.Code != 200 {
		t.Fatalf("PUT /v1/policy: %d %s", r.Code, r.Body)
	}
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	var doc struct {
		Insurer struct{ Display string } `json:"insurer"`
	}
	if err := json.Unmarshal(eob, &doc); err != nil || doc.Insurer.Display == "" {
		t.Fatalf("the example names no insurer: %v", err)
	}
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	if res := ts.notify(t, ts.wrap(t, eob)); res.Status != http.StatusAccepted {
		t.Fatalf("notify: %d %s", res.Status, res.Body)
	}
	ts.waitNotices(t, 1)
	out, _ := ts.app.store.NoticeOutcomes(ctx, devTenant)
	if len(out) != 1 || out[0].Status == delivery.NoticeSent || out[0].Status == delivery.NoticePending {
		t.Fatalf("notices: %+v, want one neither sent nor pending", out)
	}
	if n := len(ts.Mail.Messages()); n != 0 {
		t.Errorf("%d mails sent under a policy that gave no decision", n)
	}
	var leaks int
	ts.app.store.RawScan(ctx, &leaks, `SELECT
		(SELECT count(*) FROM notices WHERE reasons::text ILIKE '%' || ? || '%') +
		(SELECT count(*) FROM policy_decisions WHERE reasons::text ILIKE '%' || ? || '%') +
		(SELECT count(*) FROM audit_log WHERE detail::text ILIKE '%' || ? || '%')`, doc.Insurer.Display, doc.Insurer.Display, doc.Insurer.Display)
	if leaks != 0 {
		t.Errorf("the payer's name is stored in %d reasons or audit rows", leaks)
	}
	if strings.Contains(strings.ToUpper(ts.Logs.String()), strings.ToUpper(doc.Insurer.Display)) {
		t.Error("the payer's name is in the logs")
	}
}
