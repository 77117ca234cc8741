package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}

func mustStore(t testing.TB) *Store {
	t.Helper()
	s, _, _ := mustStoreAt(t)
	return s
}

// mustStoreAt is mustStore with its database's URL (the owner's) and keys.
func mustStoreAt(t testing.TB) (*Store, string, *seal.Keyring) {
	t.Helper()
	keys, _ := seal.ParseKeys("k1:" + seal.NewRandomKey())
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testenv.NewDB(t)
	s, err := Open(context.Background(), dbURL, kr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSubscription(ctx, intake.Subscription{ID: "sub1", TenantID: "t1"}, "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
	return s, dbURL, kr
}

// Concurrent requests with the same event store it once; each learns the
// one event id, and only one of them that it is new. Their events are
// committed together (group commit), with one audit row per new event.
func TestInsertEventsDedupesConcurrently(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	e := intake.NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: "x",
		VersionID: "1", DedupeKey: "sub1|ExplanationOfBenefit|x|v:1", Record: fhir.Event{Focus: json.RawMessage(`{"patient":"Canary Person"}`)}}
	other := e
	other.ResourceID, other.DedupeKey = "y", "sub1|ExplanationOfBenefit|y|v:1"
	var wg sync.WaitGroup
	results := make([][]intake.StoredEvent, 16)
	errs := make([]error, len(results))
	for i := range results {
		wg.Add(1)
		batch := []intake.NewEvent{e}
		if i%2 == 1 {
			batch = []intake.NewEvent{other, e} // and a key twice in one transaction
		}
		go func() { defer wg.Done(); results[i], errs[i] = s.InsertEvents(ctx, batch) }()
	}
	wg.Wait()
	fresh, ids := 0, map[string]map[int64]bool{"x": {}, "y": {}}
	for i := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for j, r := range results[i] {
			if !r.Duplicate {
				fresh++
			}
			id := "x"
			if i%2 == 1 && j == 0 {
				id = "y"
			}
			ids[id][r.EventID] = true
		}
	}
	c, _ := s.CountAll(ctx, "t1")
	if fresh != 2 || c.Events != 2 || c.Audit != 2 || len(ids["x"]) != 1 || len(ids["y"]) != 1 {
		t.Fatalf("fresh %d, events %d, audit rows %d, ids %v; want 2 new events, each with one id and one audit row", fresh, c.Events, c.Audit, ids)
	}
	// The resource is sealed in its column and opens again.
	var raw []byte
	s.db.Raw(`SELECT resource_sealed FROM events LIMIT 1`).Scan(&raw)
	if bytes.Contains(raw, []byte("Canary")) {
		t.Fatal("resource stored in clear")
	}
	ev, err := s.LoadEvent(ctx, results[0][0].EventID)
	if err != nil || !bytes.Contains(ev.Record.Focus, []byte("Canary Person")) || ev.ResourceID != "x" {
		t.Fatalf("LoadEvent: %v", err)
	}
}

// One request's bad row fails that request alone, not the others committed
// with it.
func TestInsertEventsFailsOnlyTheBadRequest(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	good := intake.NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: "ok",
		DedupeKey: "sub1|ExplanationOfBenefit|ok|v:1", Record: fhir.Event{Focus: json.RawMessage(`{}`)}}
	bad := good
	bad.SubscriptionID, bad.ResourceID, bad.DedupeKey = "no-such-subscription", "bad", "sub1|ExplanationOfBenefit|bad|v:1"
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		e := good
		if i == 3 {
			e = bad
		}
		e.DedupeKey += fmt.Sprint(i)
		go func() { defer wg.Done(); _, errs[i] = s.InsertEvents(ctx, []intake.NewEvent{e}) }()
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 3) {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if c, _ := s.CountAll(ctx, "t1"); c.Events != 7 {
		t.Fatalf("events %d, want the 7 good ones", c.Events)
	}
}

// Claims are exclusive until their lease passes; a failed attempt is
// claimed again when it is due; processed events are never claimed.
func TestClaimEvents(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	var batch []intake.NewEvent
	for i := range 5 {
		id := fmt.Sprint("e", i)
		batch = append(batch, intake.NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: id,
			DedupeKey: "sub1|ExplanationOfBenefit|" + id, Record: fhir.Event{Focus: json.RawMessage(`{"id":"` + id + `"}`)}})
	}
	if _, err := s.InsertEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	first, err := s.ClaimEvents(ctx, 3, time.Minute)
	if err != nil || len(first) != 3 || first[0].ResourceID != "e0" || first[2].ResourceID != "e2" || string(first[1].Record.Focus) != `{"id":"e1"}` {
		t.Fatalf("first claim: %d events (%v)", len(first), err)
	}
	second, err := s.ClaimEvents(ctx, 10, time.Minute)
	if err != nil || len(second) != 2 || second[0].ResourceID != "e3" {
		t.Fatalf("second claim: %d events (%v); want the 2 unclaimed", len(second), err)
	}
	if none, _ := s.ClaimEvents(ctx, 10, time.Minute); len(none) != 0 {
		t.Fatalf("claimed %d events already claimed", len(none))
	}
	// e0 is done; e1 failed and is due again now; e2's worker died (its lease passed).
	if err := s.MarkEventsProcessed(ctx, []int64{first[0].ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryEvent(ctx, first[1].ID, time.Now().Add(-time.Second), "relay down"); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Exec(`UPDATE events SET claimed_until = now() - interval '1 second' WHERE id = ?`, first[2].ID).Error; err != nil {
		t.Fatal(err)
	}
	again, err := s.ClaimEvents(ctx, 10, time.Minute)
	if err != nil || len(again) != 2 || again[0].ID != first[1].ID || again[0].Attempts != 1 || again[1].ID != first[2].ID || again[1].Attempts != 0 {
		t.Fatalf("claimed again: %+v (%v); want e1 (1 attempt) and e2", again, err)
	}
}

func TestSubscriptionSecret(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	sub, hash, err := s.SubscriptionSecret(ctx, "t1", "sub1")
	if err != nil || sub.ID != "sub1" || sub.TenantID != "t1" || !bytes.Equal(hash, intake.SecretHash("s3cret-s3cret")) {
		t.Fatalf("subscription %+v, hash matches %v, %v", sub, bytes.Equal(hash, intake.SecretHash("s3cret-s3cret")), err)
	}
	if _, _, err := s.SubscriptionSecret(ctx, "t1", "nobody"); !errors.Is(err, intake.ErrUnknownSubscription) || !errors.Is(err, fault.NotFound) {
		t.Fatalf("unknown subscription: %v", err)
	}
}

// A signature is claimed once; a released one can be claimed again; those
// signed before the horizon are dropped; only a subscription that exists
// can claim.
func TestClaimSignature(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	now := time.Now()
	sigA, sigB := bytes.Repeat([]byte{0xa}, 32), bytes.Repeat([]byte{0xb}, 32)
	claim := func(sub string, sig []byte, at time.Time) bool {
		t.Helper()
		fresh, err := s.ClaimSignature(ctx, "t1", sub, sig, at, now.Add(-10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return fresh
	}
	if !claim("sub1", sigA, now) || claim("sub1", sigA, now) || !claim("sub1", sigB, now) {
		t.Fatal("a signature was not claimed exactly once")
	}
	if err := s.ReleaseSignature(ctx, "t1", "sub1", sigA); err != nil {
		t.Fatal(err)
	}
	if !claim("sub1", sigA, now) {
		t.Fatal("a released signature could not be claimed again")
	}
	old := bytes.Repeat([]byte{0xc}, 32)
	if !claim("sub1", old, now.Add(-time.Hour)) {
		t.Fatal("first claim of an old signature")
	}
	claim("sub1", bytes.Repeat([]byte{0xd}, 32), now) // drops what was signed before the horizon
	var n int
	if err := s.RawScan(ctx, &n, `SELECT count(*) FROM signed_notifications WHERE signature = ?`, old); err != nil || n != 0 {
		t.Fatalf("%d rows of a signature signed before the horizon (%v)", n, err)
	}
	if _, err := s.ClaimSignature(ctx, "t1", "nobody", sigA, now, now); err == nil {
		t.Fatal("a signature was claimed for an unknown subscription")
	}
}

func TestContactsAreSealedAndAPIContactsWin(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: "api@example.org", Source: "api", Language: "es"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: "bundle@example.org", Source: "fhir", FHIRSource: "ehr-a"}); err != nil {
		t.Fatal(err)
	}
	for _, source := range []string{"", "ehr-a", "ehr-b"} {
		c, err := s.ContactFor(ctx, "t1", source, "Patient/p1")
		if err != nil || c.Email != "api@example.org" || c.Language != "es" || c.Source != "api" {
			t.Fatalf("contact for source %q: %v %v", source, c.Email, err)
		}
	}
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: "unsourced@example.org", Source: "fhir"}); err == nil {
		t.Fatal("a bundle's contact without its source was stored")
	}
	var raw []byte
	s.db.Raw(`SELECT email_sealed FROM contacts`).Scan(&raw)
	if bytes.Contains(raw, []byte("example.org")) {
		t.Fatal("email stored in clear")
	}
	if _, err := s.ContactFor(ctx, "t2", "", "Patient/p1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other tenant sees the contact: %v", err)
	}
}

// Two sources' Patient/p1 are different patients: each source's bundles
// give its own contact, which neither overwrites the other's nor is used
// for the other's patient.
func TestBundleContactsArePerSource(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	for _, c := range []struct{ source, email string }{{"ehr-a", "a@example.org"}, {"subscription/s2", "b@example.org"}} {
		if err := s.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: c.email, Language: "es", Source: "fhir", FHIRSource: c.source}); err != nil {
			t.Fatal(err)
		}
	}
	for source, want := range map[string]string{"ehr-a": "a@example.org", "subscription/s2": "b@example.org"} {
		c, err := s.ContactFor(ctx, "t1", source, "Patient/p1")
		if err != nil || c.Email != want || c.FHIRSource != source {
			t.Errorf("source %s: %q from %q (%v), want %q", source, c.Email, c.FHIRSource, err, want)
		}
		got, err := s.ContactsOf(ctx, "t1", source, []string{"Patient/p1"})
		if err != nil || got["Patient/p1"].Email != want {
			t.Errorf("ContactsOf, source %s: %q (%v), want %q", source, got["Patient/p1"].Email, err, want)
		}
	}
	for _, source := range []string{"", "ehr-c"} {
		if c, err := s.ContactFor(ctx, "t1", source, "Patient/p1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("source %q finds another source's contact %q (%v)", source, c.Email, err)
		}
		if prefs, err := s.ContactPreferences(ctx, "t1", source, "Patient/p1"); err != nil || prefs.Language != "" {
			t.Errorf("source %q reads another source's preferences %+v (%v)", source, prefs, err)
		}
	}
	// The API's contact wins over both, in the batch read too.
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: "api@example.org", Source: "api"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ContactsOf(ctx, "t1", "ehr-a", []string{"Patient/p1"})
	if err != nil || got["Patient/p1"].Email != "api@example.org" {
		t.Errorf("ContactsOf after the API's: %q (%v)", got["Patient/p1"].Email, err)
	}
}

func TestContactPreferencesRoundTripSealed(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	in := delivery.Contact{Email: "home@example.org", Source: "api", OptedOutChannels: []string{"sms", "push"},
		ConfidentialEmail: "private-Canary@example.org", Restrictions: []string{"eob"}, MarketingAuthorized: true, AlternateFormat: "large-print",
		EncryptionKey: "-----BEGIN CERTIFICATE-----\nKeyCanary\n-----END CERTIFICATE-----\n"}
	if err := s.UpsertContact(ctx, "t1", "Patient/p9", in); err != nil {
		t.Fatal(err)
	}
	got, err := s.ContactFor(ctx, "t1", "", "Patient/p9")
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfidentialEmail != in.ConfidentialEmail || strings.Join(got.OptedOutChannels, ",") != "sms,push" ||
		strings.Join(got.Restrictions, ",") != "eob" || !got.MarketingAuthorized || got.AlternateFormat != "large-print" || got.EncryptionKey != in.EncryptionKey {
		t.Fatalf("got %+v", got)
	}
	var raw []byte
	s.db.Raw(`SELECT confidential_email_sealed FROM contacts`).Scan(&raw)
	if len(raw) == 0 || bytes.Contains(raw, []byte("Canary")) {
		t.Fatal("the confidential address is not sealed")
	}
	var kind string
	s.db.Raw(`SELECT encryption_key_sealed, encryption_key_kind FROM contacts`).Row().Scan(&raw, &kind)
	if len(raw) == 0 || bytes.Contains(raw, []byte("KeyCanary")) || kind != "smime" {
		t.Fatalf("the encryption key is not sealed, or its kind %q is not smime", kind)
	}
}

// A value Postgres refuses (class 22) is named by code only, and is the
// caller's fault: a NUL byte or invalid UTF-8 in an id from a URL answered
// 500 before.
func TestDatabaseErrorsCarryNoValues(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	var n int64
	_, rawErr := s.execPlanned(ctx, `SELECT $1::bigint`, "Canary-Jane-Doe")
	for name, tc := range map[string]struct {
		err   error
		state string
	}{
		"exec":  {s.q(ctx).Exec(`SELECT ?::bigint`, "Canary-Jane-Doe").Error, "22P02"},
		"scan":  {s.q(ctx).Raw(`SELECT ?::bigint`, "Canary-Jane-Doe").Scan(&n).Error, "22P02"},
		"query": {s.q(ctx).Where("id = ?::bigint", "Canary-Jane-Doe").Find(&[]Event{}).Error, "22P02"},
		"raw":   {rawErr, "22P02"},
		"nul":   {s.q(ctx).Where("tenant_id = ? AND id = ?", "t1", "Canary\x00Jane").Find(&[]Subscription{}).Error, "22021"},
		"utf-8": {s.q(ctx).Where("tenant_id = ? AND id = ?", "t1", "Canary\xffJane").Find(&[]Subscription{}).Error, "22021"},
	} {
		if tc.err == nil || strings.Contains(tc.err.Error(), "Canary") || !strings.Contains(tc.err.Error(), tc.state) {
			t.Errorf("%s: %v", name, tc.err)
		}
		if !errors.Is(tc.err, fault.Invalid) {
			t.Errorf("%s: %v is not fault.Invalid", name, tc.err)
		}
	}
}

// A record written without encoding/json reads back as encoding/json
// reads it: focus, related resources and their URLs.
func TestEncodeRecordRoundTrip(t *testing.T) {
	for _, r := range []fhir.Event{
		{Focus: json.RawMessage(`{"resourceType":"ExplanationOfBenefit","id":"x"}`)},
		{Focus: json.RawMessage("{\n  \"id\": \"y\"\n}"), Related: []json.RawMessage{json.RawMessage(`{"resourceType":"Patient"}`), json.RawMessage(`{"a":[1,2]}`)},
			RelatedURLs: []string{"urn:uuid:1", "https://ehr.example/Patient/\"quoted\""}},
	} {
		stored, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := decompressRecord(stored)
		if err != nil || len(stored) == 0 || stored[0] != recordZstd {
			t.Fatalf("stored %q (%v)", stored, err)
		}
		var got eventRecord
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want, _ := json.Marshal(eventRecord{Focus: r.Focus, Related: r.Related, RelatedURLs: r.RelatedURLs})
		again, _ := json.Marshal(got)
		if !bytes.Equal(again, want) {
			t.Fatalf("round trip\n%s\nwant\n%s", again, want)
		}
	}
	if _, err := encodeRecord(fhir.Event{Focus: json.RawMessage(`{}`), Related: []json.RawMessage{json.RawMessage(`{"a":`)}}); err == nil {
		t.Fatal("a related resource that is not JSON was stored")
	}
}

// A record whose focus passed fhir's guard says so when it is read back;
// one written without the mark (and records from before it) does not.
func TestRecordKeepsItsGuardMark(t *testing.T) {
	focus := json.RawMessage(`{"resourceType":"ExplanationOfBenefit","id":"x"}`)
	for _, guarded := range []bool{true, false} {
		stored, err := encodeRecord(fhir.Event{Focus: focus, Guarded: guarded})
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := decompressRecord(stored)
		if err != nil || got != guarded {
			t.Errorf("written guarded=%v, read guarded=%v (%v)", guarded, got, err)
		}
	}
	if _, got, err := decompressRecord([]byte(focus)); err != nil || got {
		t.Errorf("a plain JSON record from before compression reads guarded=%v (%v)", got, err)
	}
}

// Subscription and source ids are per tenant: a second tenant may register
// the ids the first uses, every lookup finds the asking tenant's row, and
// what hangs off a subscription (events and their dedupe keys, event
// numbers, gaps, signatures) is kept apart per tenant.
func TestIDsPerTenant(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, "t2", "Other"); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"t1", "t2"} {
		if err := s.CreateSource(ctx, intake.Source{ID: "ehr", TenantID: tenant, BaseURL: "https://" + tenant + ".example.org/fhir", AuthType: "bearer"},
			[]byte("token-"+tenant)); err != nil {
			t.Fatalf("source ehr of %s: %v", tenant, err)
		}
	}
	if err := s.CreateSubscription(ctx, intake.Subscription{ID: "sub1", TenantID: "t2", SourceID: "ehr"}, "other-secret-other-secret"); err != nil {
		t.Fatalf("t2's sub1: %v", err)
	}
	if err := s.CreateSubscription(ctx, intake.Subscription{ID: "sub1", TenantID: "t1"}, "x"); !errors.Is(err, ErrDuplicate) || !errors.Is(err, fault.Conflict) {
		t.Fatalf("t1's sub1 again: %v", err)
	}
	if err := s.CreateSource(ctx, intake.Source{ID: "ehr", TenantID: "t2", BaseURL: "https://x.example.org", AuthType: "none"}, nil); !errors.Is(err, fault.Conflict) {
		t.Fatalf("t2's ehr again: %v", err)
	}
	for tenant, secret := range map[string]string{"t1": "s3cret-s3cret", "t2": "other-secret-other-secret"} {
		sub, hash, err := s.SubscriptionSecret(ctx, tenant, "sub1")
		if err != nil || sub.TenantID != tenant || !bytes.Equal(hash, intake.SecretHash(secret)) {
			t.Errorf("%s's sub1: %+v, %v", tenant, sub, err)
		}
		src, cred, err := s.SourceWithCredential(ctx, tenant, "ehr")
		if err != nil || src.TenantID != tenant || string(cred) != "token-"+tenant || !strings.HasPrefix(src.BaseURL, "https://"+tenant+".") {
			t.Errorf("%s's ehr: %+v %q, %v", tenant, src, cred, err)
		}
	}
	// Without a tenant an id two tenants share is unknown.
	if _, _, err := s.SubscriptionSecret(ctx, "", "sub1"); !errors.Is(err, intake.ErrUnknownSubscription) {
		t.Errorf("sub1 without a tenant: %v", err)
	}
	if err := s.AttachSource(ctx, "t1", "sub1", "ehr", "", 0); err != nil {
		t.Fatal(err)
	}
	if sub, err := s.SubscriptionByID(ctx, "t1", "sub1"); err != nil || sub.SourceID != "ehr" || sub.TenantID != "t1" {
		t.Errorf("t1's sub1 after AttachSource: %+v, %v", sub, err)
	}

	// One dedupe key in both tenants: two events.
	ev := func(tenant string, n int64) intake.NewEvent {
		return intake.NewEvent{TenantID: tenant, SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: "x",
			VersionID: "1", EventNumber: &n, DedupeKey: "source:ehr|ExplanationOfBenefit|x|v:1", Record: fhir.Event{Focus: json.RawMessage(`{}`)}}
	}
	got, err := s.InsertEvents(ctx, []intake.NewEvent{ev("t1", 1), ev("t2", 1)})
	if err != nil || got[0].Duplicate || got[1].Duplicate || got[0].EventID == got[1].EventID {
		t.Fatalf("one key in two tenants: %+v, %v", got, err)
	}
	again, err := s.InsertEvents(ctx, []intake.NewEvent{ev("t2", 1)})
	if err != nil || !again[0].Duplicate || again[0].EventID != got[1].EventID {
		t.Fatalf("t2's event again: %+v (first %+v), %v", again, got, err)
	}
	// Event numbers 1 and 3 seen by t1's sub1, 1 and 2 by t2's: a gap in t1's only.
	if err := s.RecordEventNumbers(ctx, "t1", "sub1", "", []int64{3}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEventNumbers(ctx, "t2", "sub1", "", []int64{2}); err != nil {
		t.Fatal(err)
	}
	if at, err := s.SeenAt(ctx, "t2", "sub1", 3); err != nil || !at.IsZero() {
		t.Errorf("t2 saw t1's number 3: %v, %v", at, err)
	}
	if n, err := s.DetectGaps(ctx, -time.Minute); err != nil || n != 1 {
		t.Fatalf("gaps found: %d, %v; want 1", n, err)
	}
	gaps, err := s.OpenGaps(ctx, 10)
	if err != nil || len(gaps) != 1 || gaps[0].TenantID != "t1" || gaps[0].SubscriptionID != "sub1" || gaps[0].FromNumber != 2 || gaps[0].ToNumber != 2 {
		t.Fatalf("open gaps: %+v, %v", gaps, err)
	}
	if err := s.FinishGap(ctx, gaps[0], true, "search", 0, ""); err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]int64{"t1": 1, "t2": 0} {
		r, err := s.Report(ctx, tenant, "sub1")
		if err != nil || r.Events != 1 || r.GapsRecovered != want || r.LastEventNumber == nil || *r.LastEventNumber != 3-(1-want) {
			t.Errorf("%s's report: %+v, %v", tenant, r, err)
		}
	}
	// A signature claimed under one tenant's sub1 is fresh under the other's.
	sig := bytes.Repeat([]byte{0xe}, 32)
	for _, tenant := range []string{"t1", "t2"} {
		if fresh, err := s.ClaimSignature(ctx, tenant, "sub1", sig, time.Now(), time.Now().Add(-time.Hour)); err != nil || !fresh {
			t.Errorf("%s's claim: %v, %v", tenant, fresh, err)
		}
	}
	// Rows name a subscription of their own tenant only.
	var n int64
	if err := s.RawScan(ctx, &n, `SELECT count(*) FROM subscriptions WHERE id = 'sub1'`); err != nil || n != 2 {
		t.Fatalf("%d rows of sub1, %v", n, err)
	}
	if err := s.EnsureTenant(ctx, "t3", "Third"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEventNumbers(ctx, "t3", "sub1", "", []int64{1}); !errors.Is(translate(err), ErrUnknownReference) {
		t.Errorf("an event number for t3's (missing) sub1: %v", err)
	}
}
