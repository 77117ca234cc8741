package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewValidatesBaseURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://ehr.example.org/fhir/r4", true},
		{"https://ehr.example.org/fhir/r4/", true},
		{"http://127.0.0.1:8080/fhir", true},
		{"http://localhost/fhir", true},
		{"http://[::1]:9/fhir", true},
		{"http://ehr.example.org/fhir", false}, // plain http off loopback
		{"ftp://ehr.example.org/fhir", false},
		{"/fhir/r4", false},
		{"ehr.example.org/fhir", false},
		{"https://user:pw@ehr.example.org/fhir", false},
		{"https://ehr.example.org/fhir?x=1", false},
		{"https://ehr.example.org/fhir#frag", false},
		{"https:opaque", false},
		{"", false},
	} {
		_, err := New(Options{BaseURL: tc.url})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err=%v, want ok=%v", tc.url, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("error quotes the URL's credentials: %v", err)
		}
	}
	// A SMART configuration that cannot work fails at New, not at the first fetch.
	_, err := New(Options{BaseURL: "https://ehr.example.org/fhir", Auth: &SMARTBackend{TokenURL: "http://auth.example.org/token"}})
	if err == nil || !strings.Contains(err.Error(), "TokenURL") || !strings.Contains(err.Error(), "KeyID") {
		t.Fatalf("want every SMART configuration problem reported, got %v", err)
	}
}

func TestReadStaticBearerServesPublishedExamples(t *testing.T) {
	f := newFake(t)
	f.staticToken = "static-token-1"
	c, _ := f.client(t, Options{Auth: StaticBearer{Token: "static-token-1"}})
	ctx := context.Background()
	for _, tc := range []struct{ typ, id, file string }{
		{"Appointment", "example", "hl7-fhir-r4-spec/appointment-example.json"},
		{"Patient", "example", "hl7-fhir-r4-spec/patient-example.json"},
		{"ExplanationOfBenefit", "EOBInpatient1", "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"},
		{"ExplanationOfBenefit", "EOBProfessionalTransportation1", "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json"},
	} {
		got, err := c.Read(ctx, tc.typ, tc.id)
		if err != nil {
			t.Fatalf("Read %s/%s: %v", tc.typ, tc.id, err)
		}
		if !bytes.Equal(got, readTestdata(t, tc.file)) {
			t.Fatalf("Read %s/%s: body differs from the published example", tc.typ, tc.id)
		}
	}
	// The SIU-converted Appointment, served as the entry of its Bundle.
	got, err := c.Read(ctx, "Appointment", strings.TrimPrefix(siuAppointment, "Appointment/"))
	if err != nil {
		t.Fatal(err)
	}
	if want := bundleResources(t, readTestdata(t, siuVersions[2]), "Appointment")[0]; !bytes.Equal(got, want) {
		t.Fatal("SIU Appointment differs from the S26 bundle entry")
	}
	for _, r := range f.seen() {
		if r.Authorization != "Bearer static-token-1" || r.Accept != "application/fhir+json" {
			t.Fatalf("request %s: wrong Authorization (set=%v) or Accept %q", r.Path, r.Authorization != "", r.Accept)
		}
	}
	if _, err := c.Read(ctx, "Appointment", "../Patient/example"); !errors.Is(err, ErrInvalidReference) {
		t.Fatalf("path traversal id: %v", err)
	}
	if _, err := c.Read(ctx, "appointment", "example"); !errors.Is(err, ErrInvalidReference) {
		t.Fatalf("lower-case type: %v", err)
	}
}

func TestReadReference(t *testing.T) {
	f := newFake(t)
	c, _ := f.client(t, Options{})
	ctx := context.Background()
	s12 := bundleResources(t, readTestdata(t, siuVersions[0]), "Appointment")[0]
	s15 := bundleResources(t, readTestdata(t, siuVersions[1]), "Appointment")[0]
	for _, tc := range []struct {
		ref  string
		want []byte
	}{
		{"Patient/example", readTestdata(t, "hl7-fhir-r4-spec/patient-example.json")},
		{f.base + "/Appointment/examplereq", readTestdata(t, "hl7-fhir-r4-spec/appointment-example-request.json")},
		{siuAppointment + "/_history/1", s12},
		{f.base + "/" + siuAppointment + "/_history/2", s15},
		{f.base + "/Patient/Patient2", readTestdata(t, "carin-bb-2.0.0/Patient-Patient2.json")},
	} {
		got, err := c.ReadReference(ctx, tc.ref)
		if err != nil {
			t.Fatalf("ReadReference(%q): %v", tc.ref, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("ReadReference(%q): wrong body", tc.ref)
		}
	}

	// The focus of the published id-only notification lives on another server.
	var n struct {
		Entry []struct {
			Resource struct {
				Parameter []struct {
					Name string `json:"name"`
					Part []struct {
						Name           string `json:"name"`
						ValueReference *struct {
							Reference string `json:"reference"`
						} `json:"valueReference"`
					} `json:"part"`
				} `json:"parameter"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(readTestdata(t, "subscriptions-backport-ig/id_only_notification_bundle_example.json"), &n); err != nil {
		t.Fatal(err)
	}
	var focus string
	for _, p := range n.Entry[0].Resource.Parameter {
		for _, part := range p.Part {
			if part.Name == "focus" && part.ValueReference != nil {
				focus = part.ValueReference.Reference
			}
		}
	}
	if focus == "" {
		t.Fatal("fixture has no focus reference")
	}
	// Same origin spelled differently.
	if _, _, _, err := parseReference(mustURL(t, "https://ehr.example.org/fhir"), "HTTPS://EHR.example.org:443/fhir/Patient/example"); err != nil {
		t.Fatalf("same origin with explicit default port and upper case: %v", err)
	}
	u, _ := url.Parse(f.base)
	for _, ref := range []string{
		focus,
		"https://" + u.Host + "/fhir/Patient/example", // scheme differs
		u.Scheme + "://" + u.Host + "/other/Patient/example",
		f.base + "X/Patient/example", // prefix of the base path, not under it
		"http://localhost:" + u.Port() + "/fhir/Patient/example",
		"ftp://" + u.Host + "/fhir/Patient/example",
	} {
		if _, err := c.ReadReference(ctx, ref); !errors.Is(err, ErrForeignReference) {
			t.Errorf("ReadReference(%q): %v, want ErrForeignReference", ref, err)
		}
	}
	for _, ref := range []string{
		"", "#contained", "urn:uuid:b7121f46-cf50-5cec-7cfb-5de8e42b82d2", "Patient?identifier=x|1",
		"Patient", "Patient/example/extra", "Patient/example/_history", "Patient/ex ample", "patient/example",
		"/Patient/example", "Patient/example/_history/1/x", f.base + "/Patient/%2e%2e",
	} {
		if _, err := c.ReadReference(ctx, ref); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ReadReference(%q): %v, want ErrInvalidReference", ref, err)
		}
	}
	if len(f.seen()) != 5 {
		t.Fatalf("server saw %d requests, want only the 5 valid reads", len(f.seen()))
	}
}

func TestReadGone(t *testing.T) {
	f := newFake(t)
	c, rec := f.client(t, Options{})
	for id, code := range map[string]int{"deleted-404": 404, "deleted-410": 410, "never-existed": 404} {
		_, err := c.Read(context.Background(), "Appointment", id)
		if !errors.Is(err, ErrGone) {
			t.Fatalf("%s: %v, want ErrGone", id, err)
		}
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != code || !strings.Contains(err.Error(), fmt.Sprint(code)) {
			t.Fatalf("%s: %v, want status %d in the error", id, err, code)
		}
	}
	if _, err := c.ReadReference(context.Background(), siuAppointment+"/_history/9"); !errors.Is(err, ErrGone) {
		t.Fatalf("vread of a missing version: %v", err)
	}
	if len(rec.got()) != 0 {
		t.Fatal("a 404/410 must not be retried")
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter func(now time.Time) string
		want       time.Duration
	}{
		{"seconds", func(time.Time) string { return "1" }, time.Second},
		{"HTTP-date", func(now time.Time) string { return now.Add(7 * time.Second).Format(http.TimeFormat) }, 7 * time.Second},
		{"capped", func(time.Time) string { return "3600" }, 60 * time.Second},
		{"date in the past", func(now time.Time) string { return now.Add(-time.Hour).Format(http.TimeFormat) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			var n atomic.Int32
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if n.Add(1) > 1 {
					return false
				}
				w.Header().Set("Retry-After", tc.retryAfter(f.clock.Now()))
				writeJSON(w, http.StatusTooManyRequests, outcome("throttled", "slow down"))
				return true
			})
			c, rec := f.client(t, Options{})
			got, err := c.Read(context.Background(), "Patient", "example")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, readTestdata(t, "hl7-fhir-r4-spec/patient-example.json")) {
				t.Fatal("wrong body after retry")
			}
			if s := rec.got(); len(s) != 1 || s[0] != tc.want {
				t.Fatalf("slept %v, want [%v]", s, tc.want)
			}
			if len(f.seen()) != 2 {
				t.Fatalf("%d requests, want 2", len(f.seen()))
			}
		})
	}
}

func TestGivesUpAfterRepeated503(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusServiceUnavailable, outcome("transient", "down"))
		return true
	})
	c, rec := f.client(t, Options{})
	_, err := c.Read(context.Background(), "Appointment", "example")
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("err = %v, want StatusError 503", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "503") || !strings.Contains(msg, "GET /fhir/Appointment/{id}") {
		t.Fatalf("error %q should name method, path and status", msg)
	}
	if errors.Is(err, ErrGone) || errors.Is(err, ErrUnauthorized) {
		t.Fatal("503 must not look like a deletion or an auth failure")
	}
	if n := len(f.seen()); n != 1+defaultMaxRetries {
		t.Fatalf("%d requests, want %d", n, 1+defaultMaxRetries)
	}
	sleeps := rec.got()
	if len(sleeps) != defaultMaxRetries {
		t.Fatalf("slept %v", sleeps)
	}
	for i, d := range sleeps {
		full := backoffBase << i
		if d < full/2 || d > full {
			t.Fatalf("backoff %d = %v, want within [%v, %v]", i, d, full/2, full)
		}
	}

	// MaxRetries < 0: one try only. 400: never retried.
	c, rec = f.client(t, Options{MaxRetries: -1})
	if _, err := c.Read(context.Background(), "Appointment", "example"); err == nil || len(rec.got()) != 0 {
		t.Fatalf("MaxRetries -1: err=%v sleeps=%v", err, rec.got())
	}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusBadRequest, outcome("invalid", "no"))
		return true
	})
	c, rec = f.client(t, Options{})
	before := len(f.seen())
	if _, err := c.Read(context.Background(), "Appointment", "example"); err == nil || len(f.seen())-before != 1 || len(rec.got()) != 0 {
		t.Fatalf("400 was retried: err=%v", err)
	}
}

func TestNetworkErrorIsRetried(t *testing.T) {
	f := newFake(t)
	var n atomic.Int32
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if n.Add(1) > 1 {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return true
		}
		_ = conn.Close() // the connection drops before any response
		return true
	})
	c, rec := f.client(t, Options{})
	if _, err := c.Read(context.Background(), "Patient", "example"); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 || len(rec.got()) != 1 {
		t.Fatalf("attempts %d, sleeps %v; want 2 attempts, 1 sleep", n.Load(), rec.got())
	}

	// A server that is not there at all: retried, then a clean error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	c, rec = f.client(t, Options{BaseURL: "http://" + addr + "/fhir"})
	_, err = c.Read(context.Background(), "Patient", "example")
	if err == nil || !strings.Contains(err.Error(), "GET /fhir/Patient/{id}") || len(rec.got()) != defaultMaxRetries {
		t.Fatalf("err=%v sleeps=%v", err, rec.got())
	}
}

func TestContextCancelStopsWaiting(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusTooManyRequests, outcome("throttled", "later"))
		return true
	})
	c, err := New(Options{BaseURL: f.base}) // the real Sleep
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Read(ctx, "Patient", "example")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("did not stop waiting when the context ended")
	}
}

func TestRedirects(t *testing.T) {
	f := newFake(t)
	var otherHits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		writeJSON(w, http.StatusOK, readTestdata(t, "hl7-fhir-r4-spec/patient-example.json"))
	}))
	defer other.Close()
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/fhir/Patient/moved":
			http.Redirect(w, r, "/fhir/Patient/example", http.StatusFound)
		case "/fhir/Patient/away":
			http.Redirect(w, r, other.URL+"/fhir/Patient/example", http.StatusTemporaryRedirect)
		case "/fhir/Patient/loop":
			http.Redirect(w, r, "/fhir/Patient/loop", http.StatusFound)
		default:
			return false
		}
		return true
	})
	f.staticToken = "tok-redirect"
	c, rec := f.client(t, Options{Auth: StaticBearer{Token: "tok-redirect"}})
	got, err := c.Read(context.Background(), "Patient", "moved")
	if err != nil || !bytes.Equal(got, readTestdata(t, "hl7-fhir-r4-spec/patient-example.json")) {
		t.Fatalf("same-host redirect: %v", err)
	}
	_, err = c.Read(context.Background(), "Patient", "away")
	if !errors.Is(err, ErrRedirectRefused) || otherHits.Load() != 0 {
		t.Fatalf("cross-host redirect: err=%v, other host hit %d times", err, otherHits.Load())
	}
	if _, err = c.Read(context.Background(), "Patient", "loop"); !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("redirect loop: %v", err)
	}
	if len(rec.got()) != 0 {
		t.Fatal("refused redirects must not be retried")
	}
}

func TestResponseBodyChecks(t *testing.T) {
	f := newFake(t)
	big := readTestdata(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/fhir/ExplanationOfBenefit/chunked":
			w.Header().Set("Content-Type", "application/fhir+json")
			for i := 0; i < len(big); i += 1000 { // no Content-Length
				_, _ = w.Write(big[i:min(i+1000, len(big))])
				w.(http.Flusher).Flush()
			}
		case "/fhir/Patient/html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>login</html>"))
		case "/fhir/Patient/outcome":
			writeJSON(w, http.StatusOK, outcome("informational", "all ok"))
		case "/fhir/Patient/array":
			writeJSON(w, http.StatusOK, []byte(`[{"resourceType":"Patient"}]`))
		case "/fhir/Patient/broken":
			writeJSON(w, http.StatusOK, []byte(`{"resourceType":"Patient",`))
		default:
			return false
		}
		return true
	})
	c, _ := f.client(t, Options{MaxBodyBytes: 4096})
	ctx := context.Background()
	for _, id := range []string{"EOBInpatient1", "chunked"} {
		if _, err := c.Read(ctx, "ExplanationOfBenefit", id); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: %v, want ErrTooLarge", id, err)
		}
	}
	if _, err := c.Read(ctx, "Patient", "example"); err != nil {
		t.Fatalf("a body under the limit: %v", err)
	}
	for _, id := range []string{"html", "outcome", "array", "broken"} {
		if _, err := c.Read(ctx, "Patient", id); !errors.Is(err, ErrInvalidResponse) {
			t.Fatalf("%s: %v, want ErrInvalidResponse", id, err)
		}
	}
}

func TestEvents(t *testing.T) {
	f := newFake(t)
	c, _ := f.client(t, Options{})
	ctx := context.Background()
	got, err := c.Events(ctx, "123", 5, 9)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, readTestdata(t, "subscriptions-backport-ig/full_resource_notification_bundle_example.json")) {
		t.Fatal("$events bundle differs from what the server sent")
	}
	last := f.seen()[len(f.seen())-1]
	q, _ := url.ParseQuery(last.RawQuery)
	if last.Path != "/fhir/Subscription/123/$events" || q.Get("eventsSinceNumber") != "5" || q.Get("eventsUntilNumber") != "9" || q.Get("content") != "full-resource" {
		t.Fatalf("request was %s?%s", last.Path, last.RawQuery)
	}
	for _, id := range []string{"legacy", "hapi", "teapot", "unknown"} {
		if _, err := c.Events(ctx, id, 1, 2); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", id, err)
		}
	}
	if _, err := c.Events(ctx, "123", 5, 4); err == nil {
		t.Fatal("from > to accepted")
	}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusBadRequest, outcome("invalid", "eventsSinceNumber too old"))
		return true
	})
	if _, err := c.Events(ctx, "123", 1, 2); err == nil || errors.Is(err, ErrUnsupported) {
		t.Fatalf("a plain 400 is not 'unsupported': %v", err)
	}
}

func TestSearchPaging(t *testing.T) {
	f := newFake(t)
	ctx := context.Background()
	var allEOBs []json.RawMessage
	for _, rel := range plainResources {
		if strings.Contains(rel, "xplanationofbenefit") || strings.Contains(rel, "ExplanationOfBenefit") {
			allEOBs = append(allEOBs, readTestdata(t, rel))
		}
	}
	if len(allEOBs) != 7 {
		t.Fatalf("fixture set has %d EOBs", len(allEOBs))
	}

	c, _ := f.client(t, Options{})
	got, err := c.Search(ctx, "ExplanationOfBenefit", url.Values{"_count": {"2"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := sortedStrings(allEOBs); !equalStrings(sortedStrings(got), want) {
		t.Fatalf("got %d resources, want the 7 published EOBs byte for byte", len(got))
	}
	if n := len(f.seen()); n != 4 {
		t.Fatalf("%d page requests, want 4", n)
	}

	// _lastUpdated reaches the server and filters.
	since := time.Date(2024, 1, 5, 0, 0, 0, 0, time.UTC)
	var want int
	for k, at := range f.lastUpdated {
		if strings.HasPrefix(k, "ExplanationOfBenefit/") && at.After(since) {
			want++
		}
	}
	got, err = c.Search(ctx, "ExplanationOfBenefit", url.Values{"_lastUpdated": {"gt" + since.Format(time.RFC3339)}, "_count": {"2"}})
	if err != nil || len(got) != want || want == 0 || want == 7 {
		t.Fatalf("_lastUpdated search: %d resources (want %d), err %v", len(got), want, err)
	}

	// _include: matches and included Patients both come back (Patient/example
	// twice: each page repeats what its matches include).
	got, err = c.Search(ctx, "Appointment", url.Values{"_include": {"Appointment:patient"}, "_count": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, r := range got {
		var x struct{ ResourceType string }
		_ = json.Unmarshal(r, &x)
		types[x.ResourceType]++
	}
	if types["Appointment"] != 3 || types["Patient"] != 3 {
		t.Fatalf("include search returned %v", types)
	}

	// Caps.
	c, _ = f.client(t, Options{MaxPages: 2})
	got, err = c.Search(ctx, "ExplanationOfBenefit", url.Values{"_count": {"2"}})
	if !errors.Is(err, ErrTruncated) || len(got) != 4 {
		t.Fatalf("MaxPages 2: %d resources, err %v", len(got), err)
	}
	c, _ = f.client(t, Options{MaxEntries: 3})
	got, err = c.Search(ctx, "ExplanationOfBenefit", url.Values{"_count": {"2"}})
	if !errors.Is(err, ErrTruncated) || len(got) != 3 {
		t.Fatalf("MaxEntries 3: %d resources, err %v", len(got), err)
	}
	c, _ = f.client(t, Options{})
	if got, err := c.Search(ctx, "ExplanationOfBenefit", url.Values{"_count": {"10"}}); err != nil || len(got) != 7 {
		t.Fatalf("exactly the last page: %d, %v", len(got), err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSearchRefusesBadNextLinks(t *testing.T) {
	f := newFake(t)
	page := func(next string) []byte {
		b, _ := json.Marshal(map[string]any{
			"resourceType": "Bundle", "type": "searchset",
			"link":  []any{map[string]string{"relation": "next", "url": next}},
			"entry": []any{map[string]any{"resource": json.RawMessage(readTestdata(t, "hl7-fhir-r4-spec/patient-example.json"))}},
		})
		return b
	}
	var next string
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusOK, page(next))
		return true
	})
	c, _ := f.client(t, Options{})
	for _, tc := range []struct {
		next string
		want error
	}{
		{"https://elsewhere.example/fhir?page=2", ErrForeignReference},
		{strings.Replace(f.base, "http://", "http://user:pw@", 1) + "?page=2", ErrForeignReference},
		{f.base + "/Patient", ErrInvalidResponse}, // the first page again: a loop
		{"javascript:alert(1)", ErrInvalidResponse},
	} {
		next = tc.next
		got, err := c.Search(context.Background(), "Patient", nil)
		if !errors.Is(err, tc.want) || len(got) != 1 {
			t.Errorf("next %q: %d resources, err %v; want the first page and %v", tc.next, len(got), err, tc.want)
		}
	}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusOK, readTestdata(t, "subscriptions-backport-ig/full_resource_notification_bundle_example.json"))
		return true
	})
	if _, err := c.Search(context.Background(), "Patient", nil); !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("a history bundle is not a search result: %v", err)
	}
}
