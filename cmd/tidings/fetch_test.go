package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
)

// fakeFHIR serves the published example resources the way a FHIR server
// would: reads by type/id, a search, and (optionally) Subscription/$events.
type fakeFHIR struct {
	*httptest.Server
	t         *testing.T
	mu        sync.Mutex
	resources map[string]json.RawMessage  // "Type/id" → resource
	search    []json.RawMessage           // what any search returns
	changed   []time.Time                 // when each search resource changed on this server
	events    func(from, to int64) []byte // nil: $events is not supported (404)
	requests  []string                    // method + path (+ query keys)
}

const fakeToken = "fake-fhir-bearer-token-0123456789"

func newFakeFHIR(t *testing.T, files ...string) *fakeFHIR {
	f := &fakeFHIR{t: t, resources: map[string]json.RawMessage{}}
	for _, file := range files {
		raw := fixture(t, file)
		var head struct{ ResourceType, ID string }
		if err := json.Unmarshal(raw, &head); err != nil {
			t.Fatal(err)
		}
		f.resources[head.ResourceType+"/"+head.ID] = raw
	}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeFHIR) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	keys := make([]string, 0)
	for k := range r.URL.Query() {
		keys = append(keys, k)
	}
	f.requests = append(f.requests, r.Method+" "+r.URL.Path+" "+strings.Join(keys, ","))
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+fakeToken {
		http.Error(w, `{"resourceType":"OperationOutcome"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	path := strings.TrimPrefix(r.URL.Path, "/fhir/")
	parts := strings.Split(path, "/")
	switch {
	case len(parts) == 3 && parts[0] == "Subscription" && parts[2] == "$events":
		if f.events == nil {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported"}]}`))
			return
		}
		from, _ := strconv.ParseInt(r.URL.Query().Get("eventsSinceNumber"), 10, 64)
		to, _ := strconv.ParseInt(r.URL.Query().Get("eventsUntilNumber"), 10, 64)
		w.Write(f.events(from, to))
	case len(parts) == 1 && parts[0] == "Subscription" && r.Method == http.MethodPost:
		var sub map[string]any
		if err := json.NewDecoder(r.Body).Decode(&sub); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		sub["id"] = "remote-7"
		b, _ := json.Marshal(sub)
		f.mu.Lock()
		f.resources["Subscription/remote-7"] = b
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		w.Write(b)
	case len(parts) == 1 && r.URL.Query().Get("_lastUpdated") != "":
		var entries []string
		since, _ := time.Parse(time.RFC3339, strings.TrimPrefix(r.URL.Query().Get("_lastUpdated"), "ge"))
		f.mu.Lock()
		for i, res := range f.search {
			// _lastUpdated is honoured against when the fake "changed" each
			// resource (when the test added it), not the examples' old meta.
			if f.changed[i].Before(since) {
				continue
			}
			entries = append(entries, `{"resource":`+string(res)+`,"search":{"mode":"match"}}`)
		}
		f.mu.Unlock()
		fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset","total":%d,"entry":[%s]}`, len(entries), strings.Join(entries, ","))
	case len(parts) == 2:
		res, ok := f.resources[parts[0]+"/"+parts[1]]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}`))
			return
		}
		w.Write(res)
	default:
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`))
	}
}

func (f *fakeFHIR) saw(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// attachFake registers the fake server as the dev subscription's source.
func (ts *testStack) attachFake(t *testing.T, f *fakeFHIR, heartbeat time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := ts.app.store.CreateSource(ctx, intake.Source{ID: "fake-ehr", TenantID: devTenant, BaseURL: f.URL + "/fhir", AuthType: "bearer"}, []byte(fakeToken)); err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.AttachSource(ctx, devTenant, devSubscription, "fake-ehr", "ExplanationOfBenefit", heartbeat); err != nil {
		t.Fatal(err)
	}
}

// notification builds a Backport notification bundle for the published EOBs
// with the given event numbers; idOnly leaves the resources out and points
// the focus at base.
func (ts *testStack) notification(t *testing.T, base string, idOnly bool, numbered map[int64]string) []byte {
	t.Helper()
	var events, entries []string
	for num, file := range numbered {
		raw := fixture(t, file)
		var head struct{ ResourceType, ID string }
		json.Unmarshal(raw, &head)
		ref := base + "/" + head.ResourceType + "/" + head.ID
		events = append(events, fmt.Sprintf(`{"name":"notification-event","part":[{"name":"event-number","valueString":"%d"},{"name":"focus","valueReference":{"reference":%q}}]}`, num, ref))
		entry := fmt.Sprintf(`{"fullUrl":%q,"request":{"method":"PUT","url":%q},"response":{"status":"200"}`, ref, head.ResourceType+"/"+head.ID)
		if !idOnly {
			entry += `,"resource":` + string(raw)
		}
		entries = append(entries, entry+"}")
	}
	status := fmt.Sprintf(`{"fullUrl":"urn:uuid:9e41ff6d-5be6-4e6a-8b85-abd4e7f58400","resource":{"resourceType":"Parameters","meta":{"profile":["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]},"parameter":[{"name":"subscription","valueReference":{"reference":%q}},{"name":"topic","valueCanonical":"http://example.org/topic/eob"},{"name":"status","valueCode":"active"},{"name":"type","valueCode":"event-notification"},%s]},"request":{"method":"GET","url":"Subscription/remote-7/$status"},"response":{"status":"200"}}`,
		base+"/Subscription/remote-7", strings.Join(events, ","))
	return []byte(`{"resourceType":"Bundle","type":"history","timestamp":"2026-11-27T10:00:00Z","entry":[` + status + "," + strings.Join(entries, ",") + `]}`)
}

// id-only: Tidings reads the focus and the patient it references from the
// source, then notifies as usual — to the patient's address from the source.
func TestIDOnlyNotificationIsFetched(t *testing.T) {
	f := newFakeFHIR(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json", "carin-bb-2.0.0/Patient-Patient2.json",
		"carin-bb-2.0.0/Organization-Payer1.json", "carin-bb-2.0.0/Organization-ProviderOrganization1.json")
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ts.attachFake(t, f, 0)
	body := ts.notification(t, f.URL+"/fhir", true, map[int64]string{1: "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"})
	r := ts.notify(t, body)
	if r.Status != 202 || r.Header.Get("X-Tidings-Fetches") != "1" {
		t.Fatalf("status %d fetches %q: %s", r.Status, r.Header.Get("X-Tidings-Fetches"), r.Body)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatalf("no mail: %v; fake saw %v", err, f.requests)
	}
	var p struct {
		Telecom []struct{ System, Value string }
	}
	json.Unmarshal(fixture(t, "carin-bb-2.0.0/Patient-Patient2.json"), &p)
	found := false
	for _, tc := range p.Telecom {
		if tc.System == "email" && len(msgs[0].To) == 1 && strings.EqualFold(msgs[0].To[0], tc.Value) {
			found = true
		}
	}
	if !found {
		t.Errorf("sent to %v, not to the fetched Patient's email", msgs[0].To)
	}
	if f.saw("GET /fhir/ExplanationOfBenefit/EOBInpatient1") != 1 || f.saw("GET /fhir/Patient/Patient2") != 1 {
		t.Errorf("fake saw %v", f.requests)
	}
	// The same id-only notification again is a duplicate: no second fetch, no second notice.
	if r := ts.notify(t, body); r.Status != 200 {
		t.Fatalf("repeat: %d %s", r.Status, r.Body)
	}
	time.Sleep(300 * time.Millisecond)
	if len(ts.Mail.Messages()) != 1 {
		t.Errorf("%d messages after a repeated notification", len(ts.Mail.Messages()))
	}
}

// A focus the source no longer has (404) ends the fetch without an event.
func TestIDOnlyFetchOfDeletedResource(t *testing.T) {
	f := newFakeFHIR(t)
	ts := newTestStack(t, testOpts{})
	ts.attachFake(t, f, 0)
	body := ts.notification(t, f.URL+"/fhir", true, map[int64]string{1: "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"})
	if r := ts.notify(t, body); r.Status != 202 {
		t.Fatalf("status %d %s", r.Status, r.Body)
	}
	var status, lastError string
	deadline := time.Now().Add(20 * time.Second)
	for status != intake.FetchDone && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		ts.app.store.RawScan(context.Background(), &status, `SELECT status FROM fetches`)
	}
	ts.app.store.RawScan(context.Background(), &lastError, `SELECT last_error FROM fetches`)
	if status != intake.FetchDone || !strings.Contains(lastError, "gone") {
		t.Fatalf("fetch %q %q", status, lastError)
	}
	c, _ := ts.app.store.CountAll(context.Background(), devTenant)
	if c.Events != 0 {
		t.Errorf("%d events for a deleted resource", c.Events)
	}
}

// An empty notification (the published example, as is) and a classic
// rest-hook ping both search the source for what changed since the last event.
func TestEmptyNotificationAndPingSearchTheSource(t *testing.T) {
	f := newFakeFHIR(t, "carin-bb-2.0.0/Patient-Patient2.json")
	f.change(fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))
	ts := newTestStack(t, testOpts{})
	ts.attachFake(t, f, 0)
	if r := ts.notify(t, fixture(t, "subscriptions-backport-ig/empty_notification_bundle_example.json")); r.Status != 202 {
		t.Fatalf("empty notification: %d %s", r.Status, r.Body)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1); err != nil {
		t.Fatalf("no mail: %v; fake saw %v", err, f.requests)
	}
	if f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated") != 1 {
		t.Errorf("fake saw %v; want one _lastUpdated search", f.requests)
	}
	// A ping: the search finds the same EOB again, which is a duplicate.
	if r := ts.post(t, nil, "", ts.Secret); r.Status != 202 {
		t.Fatalf("ping: %d %s", r.Status, r.Body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// Once that search is done, the next ping searches again (pings coalesce
	// only while a search is pending).
	var done int
	for done < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		ts.app.store.RawScan(context.Background(), &done, `SELECT count(*) FROM fetches WHERE status = 'done'`)
	}
	if r := ts.post(t, nil, "", ts.Secret); r.Status != 202 {
		t.Fatalf("second ping: %d %s", r.Status, r.Body)
	}
	for f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated") < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	c, _ := ts.app.store.CountAll(context.Background(), devTenant)
	if f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated") != 3 || c.Events != 1 || len(ts.Mail.Messages()) != 1 {
		t.Fatalf("after the pings: searches %d, events %d, messages %d", f.saw("GET /fhir/ExplanationOfBenefit _lastUpdated"), c.Events, len(ts.Mail.Messages()))
	}
}

// A fetch that fails for good gives its event number back: the monitor sees
// the gap and recovers the event another way ($events here).
func TestFailedFetchReopensTheGap(t *testing.T) {
	f := newFakeFHIR(t)
	ts := newTestStack(t, testOpts{MonitorEvery: 200 * time.Millisecond, GapSettle: time.Nanosecond})
	f.events = func(from, to int64) []byte {
		return ts.notification(t, f.URL+"/fhir", false, map[int64]string{2: "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"})
	}
	ts.attachFake(t, f, 0)
	// Event 1 is complete; event 2 is id-only and points at another server: its fetch fails for good.
	ts.notify(t, ts.notification(t, f.URL+"/fhir", false, map[int64]string{1: "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"}))
	if r := ts.notify(t, ts.notification(t, "https://elsewhere.example.org/fhir", true, map[int64]string{2: "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"})); r.Status != 202 {
		t.Fatalf("id-only: %d %s", r.Status, r.Body)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 2); err != nil {
		var fetch store.Fetch
		ts.app.store.RawScan(context.Background(), &fetch, `SELECT * FROM fetches`)
		t.Fatalf("event 2 was not recovered: %v; fetch %+v", err, fetch)
	}
	gap := ts.recoveredGap()
	var status string
	ts.app.store.RawScan(context.Background(), &status, `SELECT status FROM fetches`)
	if status != intake.FetchFailed || gap.FromNumber != 2 || gap.Method != "$events" || gap.RecoveredAt == nil {
		t.Fatalf("fetch %q, gap %+v", status, gap)
	}
}

// recoveredGap is the subscription's gap once recorded as recovered (or
// as it is after 10 s): a recovered event's mail can arrive before the
// fetch that recovered it has recorded the gap closed.
func (ts *testStack) recoveredGap() store.Gap {
	var gap store.Gap
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		gap = store.Gap{}
		ts.app.store.RawScan(context.Background(), &gap, `SELECT * FROM subscription_gaps`)
		if gap.RecoveredAt != nil || time.Now().After(deadline) {
			return gap
		}
	}
}

// Event numbers 1 and 3 arrive; 2 never does. The monitor finds the gap and
// recovers it with $events where the source supports it, else by search.
func TestGapRecovery(t *testing.T) {
	for _, mode := range []string{"$events", "search"} {
		t.Run(mode, func(t *testing.T) {
			f := newFakeFHIR(t)
			missing := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json")
			ts := newTestStack(t, testOpts{MonitorEvery: 200 * time.Millisecond, GapSettle: time.Nanosecond})
			if mode == "$events" {
				f.events = func(from, to int64) []byte {
					if from != 2 || to != 2 {
						t.Errorf("$events asked for %d..%d, want 2..2", from, to)
					}
					return ts.notification(t, f.URL+"/fhir", false, map[int64]string{2: "carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json"})
				}
			} else {
				f.change(missing)
			}
			ts.attachFake(t, f, 0)
			for num, file := range map[int64]string{1: "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json", 3: "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"} {
				if r := ts.notify(t, ts.notification(t, f.URL+"/fhir", false, map[int64]string{num: file})); r.Status != 202 {
					t.Fatalf("event %d: %d %s", num, r.Status, r.Body)
				}
			}
			if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 3); err != nil {
				t.Fatalf("the missed event was not recovered: %v; fake saw %v", err, f.requests)
			}
			gap := ts.recoveredGap()
			if gap.FromNumber != 2 || gap.ToNumber != 2 || gap.RecoveredAt == nil || gap.Method != mode || gap.RecoveredEvents != 1 {
				t.Fatalf("gap %+v", gap)
			}
		})
	}
}

// A subscription with a heartbeat period that goes quiet for twice that
// period is marked silent; a heartbeat clears it.
func TestSilentSubscription(t *testing.T) {
	f := newFakeFHIR(t)
	ts := newTestStack(t, testOpts{MonitorEvery: 100 * time.Millisecond})
	ts.attachFake(t, f, time.Second)
	var silent *time.Time
	deadline := time.Now().Add(15 * time.Second)
	for silent == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		sub, _ := ts.app.store.Report(context.Background(), devTenant, devSubscription)
		silent = sub.SilentSince
	}
	if silent == nil {
		t.Fatalf("never marked silent; logs:\n%s", ts.Logs.String())
	}
	var out bytes.Buffer
	t.Setenv("TIDINGS_DATABASE_URL", ts.app.cfg.DatabaseURL)
	if err := realMain(context.Background(), []string{"subscription", "list"}, &out, &out); err != nil || !strings.Contains(out.String(), "fake-ehr") {
		t.Fatalf("list: %v\n%s", err, out.String())
	}
	if r := ts.notify(t, fixture(t, "subscriptions-backport-ig/heartbeat_bundle_example.json")); r.Status != 200 {
		t.Fatalf("heartbeat: %d", r.Status)
	}
	sub, _ := ts.app.store.Report(context.Background(), devTenant, devSubscription)
	if sub.SilentSince != nil {
		t.Error("a heartbeat did not clear silent")
	}
}

// The HL7v2-converted SIU messages for one appointment (booked S12, cancelled
// S15, no-show S26) give the right event kinds, each judged against the
// previous version Tidings saw; the same message again is a duplicate.
func TestAppointmentLifecycleFromSIU(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	steps := []struct {
		file, kind string
		runs       string // the appointment's runs after the event, workflow:status:outcome
	}{
		{"fhir-converter-hl7v2-siu/SIU-S12-01-expected.json", "booked",
			// 2021: both reminders' moments have passed, the visit too: the run ends after the confirmation.
			"appointment-reminders:ended:completed"},
		{"fhir-converter-hl7v2-siu/SIU-S15-01-expected.json", "cancelled",
			"appointment-reminders:ended:completed appointment-cancelled:ended:completed"},
		{"fhir-converter-hl7v2-siu/SIU-S26-01-expected.json", "noshow",
			// The re-engagement notice waits for the next business day.
			"appointment-reminders:ended:completed appointment-cancelled:ended:completed appointment-noshow:waiting:"},
	}
	for _, s := range steps {
		if r := ts.notify(t, ts.wrap(t, fixture(t, s.file))); r.Status != 202 {
			t.Fatalf("%s: %d %s", s.file, r.Status, r.Body)
		}
		deadline := time.Now().Add(20 * time.Second)
		for { // processed in order, so each sees the one before
			var got []string
			for _, r := range ts.runsOf(t, siuAppointment) {
				got = append(got, r.WorkflowID+":"+r.Status+":"+r.Outcome)
			}
			if strings.Join(got, " ") == s.runs {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: runs %v, want %s", s.kind, got, s.runs)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	if r := ts.notify(t, ts.wrap(t, fixture(t, steps[0].file))); r.Status != 200 || r.Header.Get("X-Tidings-Duplicates") != "1" {
		t.Fatalf("S12 again: %d duplicates %q", r.Status, r.Header.Get("X-Tidings-Duplicates"))
	}
	var kinds []string
	ts.app.store.RawScan(context.Background(), &kinds, `SELECT kind FROM events ORDER BY id`)
	if strings.Join(kinds, ",") != "booked,cancelled,noshow" {
		t.Fatalf("kinds %v", kinds)
	}
	ts.waitNotices(t, 2)
	want := []string{"Your appointment is confirmed", "Your appointment was cancelled"}
	if got := ts.subjects(t); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", got, want)
	}
	// The published patient's only "email" telecom is 89898989, no address:
	// in dev the notice goes to a placeholder on a reserved domain.
	if to := ts.Mail.Messages()[0].To; len(to) != 1 || to[0] != siuPatient+"@"+devPlaceholderDomain {
		t.Errorf("sent to %v", to)
	}
}

// An appointment that disappears from its source (404 on an id-only fetch)
// is a cancellation of the last version Tidings saw.
func TestDeletedAppointmentIsCancelled(t *testing.T) {
	f := newFakeFHIR(t) // serves nothing: every read is a 404
	ts := newTestStack(t, testOpts{})
	ts.attachFake(t, f, 0)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	var apptID string
	ts.app.store.RawScan(context.Background(), &apptID, `SELECT resource_id FROM events`)
	idOnly := fmt.Sprintf(`{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"urn:uuid:1d0b5a4c-1d7e-4f5e-9a43-7f0c4f6a2b11","resource":{"resourceType":"Parameters","parameter":[{"name":"subscription","valueReference":{"reference":"%s/fhir/Subscription/remote-7"}},{"name":"status","valueCode":"active"},{"name":"type","valueCode":"event-notification"},{"name":"notification-event","part":[{"name":"event-number","valueString":"2"},{"name":"focus","valueReference":{"reference":"%s/fhir/Appointment/%s"}}]}]},"request":{"method":"GET","url":"Subscription/remote-7/$status"},"response":{"status":"200"}},{"fullUrl":"%s/fhir/Appointment/%s","request":{"method":"PUT","url":"Appointment/%s"},"response":{"status":"200"}}]}`,
		f.URL, f.URL, apptID, f.URL, apptID, apptID)
	if r := ts.notify(t, []byte(idOnly)); r.Status != 202 {
		t.Fatalf("id-only: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 2)
	var kinds []string
	ts.app.store.RawScan(context.Background(), &kinds, `SELECT kind FROM events ORDER BY id`)
	if strings.Join(kinds, ",") != "booked,cancelled" {
		t.Fatalf("kinds %v; fake saw %v", kinds, f.requests)
	}
}

// The management API: register a source (credential sealed, never echoed),
// create a subscription on it (a Backport rest-hook Subscription whose
// channel points at Tidings with the secret in channel.header), see it go
// from requested to active on the server's handshake, and read its status.
func TestSourcesAndSubscriptionsAPI(t *testing.T) {
	f := newFakeFHIR(t)
	ts := newTestStack(t, testOpts{DeferWorker: true})
	token := ts.apiKey(t, "dev", access.Integration)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) *httptest.ResponseRecorder {
		return doRequest(h, method, path, "application/json", token, body)
	}
	src := fmt.Sprintf(`{"id":"ehr","base_url":%q,"auth":{"type":"bearer","token":%q}}`, f.URL+"/fhir", fakeToken)
	if r := call("POST", "/v1/sources", src); r.Code != 201 || strings.Contains(r.Body.String(), fakeToken) {
		t.Fatalf("POST source: %d %s", r.Code, r.Body)
	}
	var sealed []byte
	ts.app.store.RawScan(context.Background(), &sealed, `SELECT credential_sealed FROM fhir_sources WHERE id = 'ehr'`)
	if len(sealed) == 0 || bytes.Contains(sealed, []byte(fakeToken)) {
		t.Fatal("the source credential is not sealed at rest")
	}
	for _, bad := range []struct{ body, want string }{
		{src, "exists"},
		{`{"id":"x","base_url":"http://ehr.example.org/fhir","auth":{"type":"bearer","token":"t"}}`, "base_url"},
		{`{"id":"y","base_url":"https://ehr.example.org/fhir","auth":{"type":"smart-backend","private_key_pem":"nope"}}`, "private key"},
		{`{"id":"z","base_url":"https://ehr.example.org/fhir","auth":{"type":"magic"},"extra":1}`, "unknown fields"},
	} {
		if r := call("POST", "/v1/sources", bad.body); r.Code < 400 || r.Code >= 500 || !strings.Contains(r.Body.String(), bad.want) {
			t.Errorf("POST source %s: %d %s, want a 4xx naming %q", bad.body, r.Code, r.Body, bad.want)
		}
	}
	sub := `{"id":"eob-feed","source_id":"ehr","topic":"http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob","criteria":"ExplanationOfBenefit?type=professional","payload":"id-only","heartbeat_period_s":60}`
	r := call("POST", "/v1/subscriptions", sub)
	if r.Code != 201 || !strings.Contains(r.Body.String(), "/Subscription/remote-7") {
		t.Fatalf("POST subscription: %d %s", r.Code, r.Body)
	}
	// What the FHIR server received: a Backport rest-hook Subscription pointing at Tidings.
	var created struct {
		Status, Criteria string
		Channel          struct {
			Type, Endpoint string
			Header         []string
			Payload_       struct{ Extension []struct{ ValueCode string } } `json:"_payload"`
		}
	}
	json.Unmarshal(f.resources["Subscription/remote-7"], &created)
	if created.Status != "requested" || created.Channel.Type != "rest-hook" || created.Channel.Endpoint != ts.BaseURL+"/fhir/r4/notify/dev/eob-feed" ||
		len(created.Channel.Header) != 1 || !strings.HasPrefix(created.Channel.Header[0], "Authorization: Bearer ") ||
		len(created.Channel.Payload_.Extension) != 1 || created.Channel.Payload_.Extension[0].ValueCode != "id-only" {
		t.Fatalf("created on the server: %s", f.resources["Subscription/remote-7"])
	}
	if strings.Contains(r.Body.String(), strings.TrimPrefix(created.Channel.Header[0], "Authorization: Bearer ")) {
		t.Error("the API response echoes the subscription secret")
	}
	// The server's handshake, with the secret it was given, activates it.
	secret := strings.TrimPrefix(created.Channel.Header[0], "Authorization: Bearer ")
	req := httptest.NewRequest("POST", "/fhir/r4/notify/dev/eob-feed", bytes.NewReader(fixture(t, "subscriptions-backport-ig/handshake_bundle_example.json")))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+secret)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("handshake: %d %s", rec.Code, rec.Body)
	}
	r = call("GET", "/v1/subscriptions/eob-feed", "")
	var rep api.SubscriptionReport
	json.Unmarshal(r.Body.Bytes(), &rep)
	if r.Code != 200 || rep.Status != "active" || rep.LastHandshakeAt == nil || rep.HeartbeatPeriodS != 60 || rep.RemoteRef == "" {
		t.Fatalf("GET subscription: %d %s", r.Code, r.Body)
	}
	// The server reports its Subscription "off" (the published heartbeat with
	// its status value changed in memory): Tidings takes it over and refuses
	// further notifications for it.
	off := bytes.Replace(fixture(t, "subscriptions-backport-ig/heartbeat_bundle_example.json"), []byte(`"valueCode": "active"`), []byte(`"valueCode": "off"`), 1)
	for i, want := range []int{200, 403} {
		req := httptest.NewRequest("POST", "/fhir/r4/notify/dev/eob-feed", bytes.NewReader(off))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("notification %d after off: %d, want %d: %s", i, rec.Code, want, rec.Body)
		}
	}
	if r := call("GET", "/v1/subscriptions/eob-feed", ""); !strings.Contains(r.Body.String(), `"status":"off"`) {
		t.Fatalf("status after off: %s", r.Body)
	}
	if r := call("GET", "/v1/subscriptions/"+devSubscription+"-nope", ""); r.Code != 404 {
		t.Errorf("unknown subscription: %d", r.Code)
	}
	if r := call("POST", "/v1/subscriptions", `{"id":"x","source_id":"missing","topic":"http://t"}`); r.Code != 400 {
		t.Errorf("unknown source: %d %s", r.Code, r.Body)
	}
	// Another tenant sees neither this tenant's source nor its subscription.
	ts.app.store.EnsureTenant(context.Background(), "other", "Other")
	other := ts.apiKey(t, "other", access.Integration)
	h2, _ := ts.app.handler(nil)
	if r := doRequest(h2, "POST", "/v1/subscriptions", "application/json", other, `{"id":"steal","source_id":"ehr","topic":"http://t"}`); r.Code != 400 {
		t.Errorf("another tenant's source: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h2, "GET", "/v1/subscriptions/eob-feed", "application/json", other, ""); r.Code != 404 {
		t.Errorf("another tenant's subscription: %d %s", r.Code, r.Body)
	}

	// Ids are per tenant: the other tenant registers a source and a
	// subscription with the ids this one uses (no 409 telling it they are
	// taken), and each tenant sees its own.
	if r := doRequest(h2, "POST", "/v1/sources", "application/json", other, src); r.Code != 201 {
		t.Fatalf("the other tenant's source with a taken id: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h2, "POST", "/v1/subscriptions", "application/json", other, sub); r.Code != 201 {
		t.Fatalf("the other tenant's subscription with a taken id: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h2, "POST", "/v1/sources", "application/json", other, src); r.Code != 409 || !strings.Contains(r.Body.String(), "exists") {
		t.Errorf("the other tenant's own source id again: %d %s", r.Code, r.Body)
	}
	json.Unmarshal(f.resources["Subscription/remote-7"], &created)
	secret2 := strings.TrimPrefix(created.Channel.Header[0], "Authorization: Bearer ")
	if created.Channel.Endpoint != ts.BaseURL+"/fhir/r4/notify/other/eob-feed" || secret2 == secret {
		t.Fatalf("the other tenant's Subscription on the server: %s", f.resources["Subscription/remote-7"])
	}
	notifyAt := func(path, secret string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", path, bytes.NewReader(fixture(t, "subscriptions-backport-ig/handshake_bundle_example.json")))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// The URL without the tenant names no subscription once two tenants
	// share its id: it answers as a wrong secret does, for either secret.
	wrong := notifyAt("/fhir/r4/notify/other/eob-feed", "not-the-secret")
	for _, s := range []string{secret, secret2} {
		if r := notifyAt("/fhir/r4/notify/eob-feed", s); r.Code != 401 || r.Body.String() != wrong.Body.String() || wrong.Code != 401 {
			t.Errorf("an id two tenants share, without the tenant: %d %s; a wrong secret: %d %s", r.Code, r.Body, wrong.Code, wrong.Body)
		}
	}
	// One tenant's secret does not open the other's subscription.
	if r := notifyAt("/fhir/r4/notify/other/eob-feed", secret); r.Code != 401 || r.Body.String() != wrong.Body.String() {
		t.Errorf("dev's secret at the other tenant's URL: %d %s", r.Code, r.Body)
	}
	if r := notifyAt("/fhir/r4/notify/other/eob-feed", secret2); r.Code != 200 {
		t.Fatalf("the other tenant's handshake: %d %s", r.Code, r.Body)
	}
	var mine, theirs api.SubscriptionReport
	json.Unmarshal(call("GET", "/v1/subscriptions/eob-feed", "").Body.Bytes(), &mine)
	json.Unmarshal(doRequest(h2, "GET", "/v1/subscriptions/eob-feed", "application/json", other, "").Body.Bytes(), &theirs)
	if mine.Status != "off" || theirs.Status != "active" || theirs.HeartbeatPeriodS != 60 {
		t.Errorf("after the other tenant's handshake: dev's %+v, other's %+v", mine, theirs)
	}
	var sources []string
	ts.app.store.RawScan(context.Background(), &sources, `SELECT tenant_id || '/' || id FROM fhir_sources ORDER BY 1`)
	if strings.Join(sources, ",") != "dev/ehr,other/ehr" {
		t.Errorf("sources %v", sources)
	}
}

// A full-resource notification without the Patient: the worker reads the
// patient from the source to find the address.
func TestPatientFetchedForFullResourceNotification(t *testing.T) {
	f := newFakeFHIR(t, "carin-bb-2.0.0/Patient-Patient2.json")
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ts.attachFake(t, f, 0)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"))); r.Status != 202 {
		t.Fatalf("status %d", r.Status)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatalf("no mail: %v; fake saw %v", err, f.requests)
	}
	if f.saw("GET /fhir/Patient/Patient2") != 1 || len(msgs[0].To) != 1 || !strings.Contains(strings.ToLower(msgs[0].To[0]), "@") || strings.HasSuffix(msgs[0].To[0], ".invalid") {
		t.Fatalf("sent to %v; fake saw %v", msgs[0].To, f.requests)
	}
}

// A rescheduled appointment: the booked SIU S12 message, then the same
// appointment with its start an hour later (S12 changed in memory: no
// published S13/S14 example exists in our fixtures).
func TestRescheduledAppointment(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	s12 := fixture(t, "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json")
	if r := ts.notify(t, ts.wrap(t, s12)); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	var bundle map[string]any
	if err := json.Unmarshal(s12, &bundle); err != nil {
		t.Fatal(err)
	}
	moved := false
	for _, e := range bundle["entry"].([]any) {
		res := e.(map[string]any)["resource"].(map[string]any)
		if res["resourceType"] == "Appointment" {
			start, err := time.Parse(time.RFC3339, res["start"].(string))
			if err != nil {
				t.Fatal(err)
			}
			res["start"] = start.Add(time.Hour).Format(time.RFC3339)
			if end, err := time.Parse(time.RFC3339, fmt.Sprint(res["end"])); err == nil {
				res["end"] = end.Add(time.Hour).Format(time.RFC3339)
			}
			moved = true
		}
	}
	if !moved {
		t.Fatal("no Appointment in S12")
	}
	s13, _ := json.Marshal(bundle)
	if r := ts.notify(t, ts.wrap(t, s13)); r.Status != 202 {
		t.Fatalf("rescheduled: %d %s", r.Status, r.Body)
	}
	var kinds []string
	for deadline := time.Now().Add(20 * time.Second); strings.Join(kinds, ",") != "booked,rescheduled"; time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("kinds %v", kinds)
		}
		kinds = nil
		ts.app.store.RawScan(context.Background(), &kinds, `SELECT kind FROM events WHERE kind <> '' ORDER BY id`)
	}
}

// change makes a resource appear changed on the server now (found by searches).
func (f *fakeFHIR) change(res json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.search = append(f.search, res)
	f.changed = append(f.changed, time.Now())
}

// A full-resource EOB whose insurer and provider carry no name: the worker
// asks the source for them (here the source has neither: the notice still
// goes, without those names).
func TestNamelessPartiesAreFetched(t *testing.T) {
	f := newFakeFHIR(t)
	ts := newTestStack(t, testOpts{})
	ts.attachFake(t, f, 0)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "hl7-fhir-r4-spec/explanationofbenefit-example.json"))); r.Status != 202 {
		t.Fatalf("status %d", r.Status)
	}
	if _, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1); err != nil {
		t.Fatalf("no mail: %v; fake saw %v", err, f.requests)
	}
	if f.saw("GET /fhir/Organization/3") != 1 || f.saw("GET /fhir/Practitioner/1") != 1 {
		t.Fatalf("fake saw %v; want reads of the insurer and the provider", f.requests)
	}
}
