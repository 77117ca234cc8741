package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file is a small FHIR server for the tests: it serves the published
// examples in testdata/ by type and id, version reads, paged search with
// _lastUpdated and _include, the Backport $events operation, and a SMART
// Backend Services token endpoint that verifies client assertions for real.
// Its verification code is written independently of the client's signing.

// testClock is the one clock the client, its SMART auth and the fake server
// share, so token lifetimes can be walked through without waiting.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// sleepRecorder stands in for Options.Sleep: it records and returns at once.
type sleepRecorder struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRecorder) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

type registeredClient struct {
	kid string
	pub crypto.PublicKey
}

type seenRequest struct {
	Method, Path, RawQuery, Authorization, Accept string
}

type fakeFHIR struct {
	t        *testing.T
	srv      *httptest.Server
	clock    *testClock
	base     string // srv.URL + "/fhir"
	tokenURL string

	resources   map[string][]byte // "Type/id" -> bytes as published
	versions    map[string][]byte // "Type/id/_history/v"
	gone        map[string]int    // "Type/id" -> 404 or 410
	lastUpdated map[string]time.Time
	eventsBody  []byte

	staticToken   string
	clients       map[string]registeredClient
	tokenLifetime time.Duration
	tokenDelay    time.Duration

	mu            sync.Mutex
	hook          func(w http.ResponseWriter, r *http.Request) bool
	tokens        map[string]time.Time // access token -> expiry
	jtis          map[string]bool
	tokenRequests int
	assertions    []string
	issued        []string
	rejections    []string
	scopes        []string
	requests      []seenRequest
}

func readTestdata(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resourceKey is "Type/id" of a resource.
func resourceKey(t testing.TB, raw []byte) string {
	t.Helper()
	var r struct{ ResourceType, ID string }
	if err := json.Unmarshal(raw, &r); err != nil || r.ResourceType == "" || r.ID == "" {
		t.Fatalf("fixture without resourceType/id: %v", err)
	}
	return r.ResourceType + "/" + r.ID
}

// bundleResources returns the entries of a fixture Bundle with the given
// resource types, as the bytes they have in the file.
func bundleResources(t testing.TB, raw []byte, types ...string) [][]byte {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range b.Entry {
		var r struct{ ResourceType string }
		if json.Unmarshal(e.Resource, &r) == nil && slices.Contains(types, r.ResourceType) {
			out = append(out, e.Resource)
		}
	}
	return out
}

const siuAppointment = "Appointment/b7121f46-cf50-5cec-7cfb-5de8e42b82d2"

var plainResources = []string{
	"hl7-fhir-r4-spec/appointment-example.json",
	"hl7-fhir-r4-spec/appointment-example-request.json",
	"hl7-fhir-r4-spec/patient-example.json",
	"hl7-fhir-r4-spec/explanationofbenefit-example.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json",
	"carin-bb-2.0.0/Patient-Patient2.json",
}

var siuVersions = []string{
	"fhir-converter-hl7v2-siu/SIU-S12-01-expected.json", // _history/1 booked
	"fhir-converter-hl7v2-siu/SIU-S15-01-expected.json", // _history/2 cancelled
	"fhir-converter-hl7v2-siu/SIU-S26-01-expected.json", // _history/3 noshow (current)
}

func newFake(t *testing.T) *fakeFHIR {
	t.Helper()
	f := &fakeFHIR{
		t:             t,
		clock:         newClock(),
		resources:     map[string][]byte{},
		versions:      map[string][]byte{},
		gone:          map[string]int{"Appointment/deleted-404": 404, "Appointment/deleted-410": 410},
		lastUpdated:   map[string]time.Time{},
		clients:       map[string]registeredClient{},
		tokenLifetime: 300 * time.Second,
		tokens:        map[string]time.Time{},
		jtis:          map[string]bool{},
	}
	for _, rel := range plainResources {
		raw := readTestdata(t, rel)
		f.resources[resourceKey(t, raw)] = raw
	}
	for i, rel := range siuVersions {
		raw := readTestdata(t, rel)
		for _, r := range bundleResources(t, raw, "Appointment", "Patient") {
			key := resourceKey(t, r)
			f.resources[key] = r
			if key == siuAppointment {
				f.versions[fmt.Sprintf("%s/_history/%d", key, i+1)] = r
			}
		}
	}
	// Server-side metadata for _lastUpdated: one day apart, in key order.
	keys := slices.Sorted(mapsKeys(f.resources))
	for i, k := range keys {
		f.lastUpdated[k] = time.Date(2024, 1, 1+i, 12, 0, 0, 0, time.UTC)
	}
	f.eventsBody = readTestdata(t, "subscriptions-backport-ig/full_resource_notification_bundle_example.json")

	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("/fhir", f.serveFHIR)
	mux.HandleFunc("/fhir/", f.serveFHIR)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.base = f.srv.URL + "/fhir"
	f.tokenURL = f.srv.URL + "/token"
	return f
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// setHook installs a handler that runs before the FHIR routes; it returns
// true when it has answered the request.
func (f *fakeFHIR) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

func (f *fakeFHIR) register(clientID, kid string, pub crypto.PublicKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clients[clientID] = registeredClient{kid: kid, pub: pub}
}

func (f *fakeFHIR) revokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

func (f *fakeFHIR) seen() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeFHIR) tokenCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenRequests
}

func (f *fakeFHIR) rejected() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rejections)
}

// client builds a Client against the fake with its clock and a recording
// Sleep unless o sets them.
func (f *fakeFHIR) client(t *testing.T, o Options) (*Client, *sleepRecorder) {
	t.Helper()
	rec := &sleepRecorder{}
	if o.BaseURL == "" {
		o.BaseURL = f.base
	}
	if o.Now == nil {
		o.Now = f.clock.Now
	}
	if o.Sleep == nil {
		o.Sleep = rec.Sleep
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func outcome(code, diagnostics string) []byte {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "OperationOutcome",
		"issue":        []any{map[string]any{"severity": "error", "code": code, "diagnostics": diagnostics}},
	})
	return b
}

func (f *fakeFHIR) authorized(r *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.staticToken == "" && len(f.clients) == 0 {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	if f.staticToken != "" && tok == f.staticToken {
		return true
	}
	exp, ok := f.tokens[tok]
	return ok && f.clock.Now().Before(exp)
}

func (f *fakeFHIR) serveFHIR(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Accept")})
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if !f.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, outcome("login", "token missing, unknown or expired"))
		return
	}
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, outcome("not-supported", "only GET"))
		return
	}
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/fhir"), "/")
	segs := strings.Split(rest, "/")
	q := r.URL.Query()
	switch {
	case rest == "" && q.Get("_getpages") != "":
		f.serveSearch(w, r, q.Get("_getpages"), q)
	case len(segs) == 1 && rest != "":
		f.serveSearch(w, r, segs[0], q)
	case len(segs) == 2:
		key := segs[0] + "/" + segs[1]
		if code, ok := f.gone[key]; ok {
			writeJSON(w, code, outcome("deleted", "resource deleted"))
			return
		}
		body, ok := f.resources[key]
		if !ok {
			writeJSON(w, http.StatusNotFound, outcome("not-found", "unknown resource"))
			return
		}
		writeJSON(w, http.StatusOK, body)
	case len(segs) == 4 && segs[2] == "_history":
		body, ok := f.versions[rest]
		if !ok {
			writeJSON(w, http.StatusNotFound, outcome("not-found", "unknown version"))
			return
		}
		writeJSON(w, http.StatusOK, body)
	case len(segs) == 3 && segs[0] == "Subscription" && segs[2] == "$events":
		f.serveEvents(w, r, segs[1], q)
	default:
		writeJSON(w, http.StatusBadRequest, outcome("not-supported", "unknown route"))
	}
}

// serveEvents answers $events for Subscription 123 (the one the backport
// fixtures name); "legacy" plays a server without the operation.
func (f *fakeFHIR) serveEvents(w http.ResponseWriter, _ *http.Request, id string, q url.Values) {
	switch id {
	case "legacy":
		writeJSON(w, http.StatusBadRequest, outcome("not-supported", "Operation $events is not supported"))
		return
	case "hapi":
		writeJSON(w, http.StatusBadRequest, outcome("processing", "Invalid request: The FHIR endpoint on this server does not know how to handle GET operation[Subscription/hapi/$events] with parameters [[eventsSinceNumber]]"))
		return
	case "teapot":
		writeJSON(w, http.StatusNotImplemented, outcome("not-supported", "not implemented"))
		return
	case "123":
	default:
		writeJSON(w, http.StatusNotFound, outcome("not-found", "unknown subscription"))
		return
	}
	since, err1 := strconv.ParseInt(q.Get("eventsSinceNumber"), 10, 64)
	until, err2 := strconv.ParseInt(q.Get("eventsUntilNumber"), 10, 64)
	if err1 != nil || err2 != nil || since > until || q.Get("content") != "full-resource" {
		writeJSON(w, http.StatusBadRequest, outcome("invalid", "bad $events parameters"))
		return
	}
	writeJSON(w, http.StatusOK, f.eventsBody)
}

// serveSearch pages through the resources of one type in key order.
// Parameters: _count (default 3), _getpagesoffset, _lastUpdated (gt/ge/lt/le
// with a date or instant), _include=Appointment:patient.
func (f *fakeFHIR) serveSearch(w http.ResponseWriter, _ *http.Request, typ string, q url.Values) {
	count, offset := 3, 0
	if v := q.Get("_count"); v != "" {
		count, _ = strconv.Atoi(v)
	}
	if v := q.Get("_getpagesoffset"); v != "" {
		offset, _ = strconv.Atoi(v)
	}
	filter := func(time.Time) bool { return true }
	if v := q.Get("_lastUpdated"); v != "" {
		prefix, val := v[:2], v[2:]
		at, err := time.Parse("2006-01-02", val)
		if err != nil {
			at, err = time.Parse(time.RFC3339, val)
		}
		if err != nil || count <= 0 {
			writeJSON(w, http.StatusBadRequest, outcome("invalid", "bad _lastUpdated"))
			return
		}
		switch prefix {
		case "gt":
			filter = func(t time.Time) bool { return t.After(at) }
		case "ge":
			filter = func(t time.Time) bool { return !t.Before(at) }
		case "lt":
			filter = func(t time.Time) bool { return t.Before(at) }
		case "le":
			filter = func(t time.Time) bool { return !t.After(at) }
		default:
			writeJSON(w, http.StatusBadRequest, outcome("invalid", "bad _lastUpdated prefix"))
			return
		}
	}
	var matches []string
	for _, k := range slices.Sorted(mapsKeys(f.resources)) {
		if strings.HasPrefix(k, typ+"/") && filter(f.lastUpdated[k]) {
			matches = append(matches, k)
		}
	}
	type entry struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Search   map[string]any  `json:"search"`
	}
	type link struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	}
	end := min(offset+count, len(matches))
	var entries []entry
	for _, k := range matches[min(offset, end):end] {
		entries = append(entries, entry{f.base + "/" + k, f.resources[k], map[string]any{"mode": "match"}})
		if q.Get("_include") == "Appointment:patient" {
			var a struct {
				Participant []struct {
					Actor struct{ Reference string } `json:"actor"`
				} `json:"participant"`
			}
			_ = json.Unmarshal(f.resources[k], &a)
			for _, p := range a.Participant {
				if ref := p.Actor.Reference; strings.HasPrefix(ref, "Patient/") && f.resources[ref] != nil {
					entries = append(entries, entry{f.base + "/" + ref, f.resources[ref], map[string]any{"mode": "include"}})
				}
			}
		}
	}
	links := []link{{"self", f.base + "/" + typ}}
	if end < len(matches) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("_getpages", typ)
		nq.Set("_getpagesoffset", strconv.Itoa(end))
		links = append(links, link{"next", f.base + "?" + nq.Encode()})
	}
	// Written by hand: json.Marshal would compact the embedded resources,
	// and the point is to serve them byte for byte as published.
	var buf bytes.Buffer
	head, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links})
	if err != nil {
		f.t.Error(err)
	}
	buf.Write(head[:len(head)-1])
	buf.WriteString(`,"entry":[`)
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"fullUrl":%q,"search":{"mode":%q},"resource":`, e.FullURL, e.Search["mode"])
		buf.Write(e.Resource)
		buf.WriteByte('}')
	}
	buf.WriteString("]}")
	body := buf.Bytes()
	writeJSON(w, http.StatusOK, body)
}

// serveToken is a SMART Backend Services token endpoint.
func (f *fakeFHIR) serveToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.tokenRequests++
	delay := f.tokenDelay
	f.mu.Unlock()
	time.Sleep(delay)
	oauthErr := func(code, why string) {
		f.mu.Lock()
		f.rejections = append(f.rejections, why)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, why)
	}
	if err := r.ParseForm(); err != nil {
		oauthErr("invalid_request", "form")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		oauthErr("invalid_request", "content type")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthErr("unsupported_grant_type", "grant_type")
		return
	}
	if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		oauthErr("invalid_request", "client_assertion_type")
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		oauthErr("invalid_scope", "scope missing")
		return
	}
	assertion := r.PostForm.Get("client_assertion")
	f.mu.Lock()
	f.assertions = append(f.assertions, assertion)
	f.scopes = append(f.scopes, scope)
	f.mu.Unlock()
	if err := f.verifyAssertion(assertion); err != nil {
		oauthErr("invalid_client", err.Error())
		return
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	f.mu.Lock()
	f.tokens[tok] = f.clock.Now().Add(f.tokenLifetime)
	f.issued = append(f.issued, tok)
	lifetime := int64(f.tokenLifetime / time.Second)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":%d,"scope":%q}`, tok, lifetime, scope)
}

// verifyAssertion checks a private_key_jwt the way a SMART server must:
// structure, alg against the registered key, signature, iss/sub/aud,
// exp (in the future, at most 5 minutes ahead) and jti never seen before.
func (f *fakeFHIR) verifyAssertion(a string) error {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return errors.New("not a compact JWS")
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return errors.New("bad base64url")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	var c struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Iat int64  `json:"iat"`
		Jti string `json:"jti"`
	}
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return errors.New("header or claims not JSON")
	}
	f.mu.Lock()
	reg, ok := f.clients[c.Iss]
	f.mu.Unlock()
	if !ok {
		return errors.New("unknown client")
	}
	if h.Kid != reg.kid {
		return errors.New("kid does not match the registered key")
	}
	digest := sha512.Sum384([]byte(parts[0] + "." + parts[1]))
	switch pub := reg.pub.(type) {
	case *rsa.PublicKey:
		if h.Alg != "RS384" {
			return errors.New("alg must be RS384 for this key")
		}
		if rsa.VerifyPKCS1v15(pub, crypto.SHA384, digest[:], sig) != nil {
			return errors.New("bad RS384 signature")
		}
	case *ecdsa.PublicKey:
		if h.Alg != "ES384" {
			return errors.New("alg must be ES384 for this key")
		}
		if len(sig) != 96 {
			return errors.New("ES384 signature must be 96 bytes r||s")
		}
		r, s := new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:])
		if !ecdsa.Verify(pub, digest[:], r, s) {
			return errors.New("bad ES384 signature")
		}
	default:
		return errors.New("registered key type")
	}
	now := f.clock.Now().Unix()
	switch {
	case c.Sub != c.Iss:
		return errors.New("sub must equal iss")
	case c.Aud != f.tokenURL:
		return errors.New("aud must be the token URL")
	case c.Exp <= now:
		return errors.New("assertion expired")
	case c.Exp > now+300:
		return errors.New("exp more than 5 minutes ahead")
	case c.Jti == "":
		return errors.New("jti missing")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jtis[c.Jti] {
		return errors.New("jti reused")
	}
	f.jtis[c.Jti] = true
	return nil
}

// sortedStrings turns resources into a sorted list, to compare as sets.
func sortedStrings(bs []json.RawMessage) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	sort.Strings(out)
	return out
}
