package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}

func mustStore(t testing.TB) *Store {
	t.Helper()
	keys, _ := seal.ParseKeys("k1:" + seal.NewRandomKey())
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), testenv.NewDB(t), kr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSubscription(ctx, Subscription{ID: "sub1", TenantID: "t1"}, "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInsertEventDedupesConcurrently(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	e := NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: "x",
		VersionID: "1", DedupeKey: "sub1|ExplanationOfBenefit|x|v:1", Resource: []byte(`{"patient":"Canary Person"}`)}
	var wg sync.WaitGroup
	results := make([]Stored, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = s.InsertEvent(ctx, e) }()
	}
	wg.Wait()
	fresh := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !results[i].Duplicate {
			fresh++
		}
	}
	c, _ := s.CountAll(ctx, "t1")
	if fresh != 1 || c.Events != 1 || c.Outbox != 1 {
		t.Fatalf("fresh %d events %d outbox %d; want 1 each", fresh, c.Events, c.Outbox)
	}
	// The resource is sealed in its column and opens again.
	var raw []byte
	s.db.Raw(`SELECT resource_sealed FROM events`).Scan(&raw)
	if bytes.Contains(raw, []byte("Canary")) {
		t.Fatal("resource stored in clear")
	}
	ev, err := s.LoadEvent(ctx, results[0].EventID)
	if err != nil || !bytes.Contains(ev.Resource, []byte("Canary Person")) {
		t.Fatalf("LoadEvent: %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if _, err := s.Authenticate(ctx, "sub1", "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "sub1", "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := s.Authenticate(ctx, "nobody", "s3cret-s3cret"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown subscription: %v", err)
	}
}

func TestContactsAreSealedAndAPIContactsWin(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", ContactDetails{Email: "api@example.org", Source: "api", Language: "es"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertContact(ctx, "t1", "Patient/p1", ContactDetails{Email: "bundle@example.org", Source: "fhir"}); err != nil {
		t.Fatal(err)
	}
	c, err := s.ContactFor(ctx, "t1", "Patient/p1")
	if err != nil || c.Email != "api@example.org" || c.Language != "es" {
		t.Fatalf("contact %v %v", c.Email, err)
	}
	var raw []byte
	s.db.Raw(`SELECT email_sealed FROM contacts`).Scan(&raw)
	if bytes.Contains(raw, []byte("example.org")) {
		t.Fatal("email stored in clear")
	}
	if _, err := s.ContactFor(ctx, "t2", "Patient/p1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other tenant sees the contact: %v", err)
	}
}

func TestContactPreferencesRoundTripSealed(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	in := ContactDetails{Email: "home@example.org", Source: "api", OptedOutChannels: []string{"sms", "push"},
		ConfidentialEmail: "private-Canary@example.org", Restrictions: []string{"eob"}, MarketingAuthorized: true, AlternateFormat: "large-print"}
	if err := s.UpsertContact(ctx, "t1", "Patient/p9", in); err != nil {
		t.Fatal(err)
	}
	got, err := s.ContactFor(ctx, "t1", "Patient/p9")
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfidentialEmail != in.ConfidentialEmail || strings.Join(got.OptedOutChannels, ",") != "sms,push" ||
		strings.Join(got.Restrictions, ",") != "eob" || !got.MarketingAuthorized || got.AlternateFormat != "large-print" {
		t.Fatalf("got %+v", got)
	}
	var raw []byte
	s.db.Raw(`SELECT confidential_email_sealed FROM contacts`).Scan(&raw)
	if len(raw) == 0 || bytes.Contains(raw, []byte("Canary")) {
		t.Fatal("the confidential address is not sealed")
	}
}

func TestDatabaseErrorsCarryNoValues(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	var n int64
	for name, err := range map[string]error{
		"exec":  s.q(ctx).Exec(`SELECT ?::bigint`, "Canary-Jane-Doe").Error,
		"scan":  s.q(ctx).Raw(`SELECT ?::bigint`, "Canary-Jane-Doe").Scan(&n).Error,
		"query": s.q(ctx).Where("id = ?::bigint", "Canary-Jane-Doe").Find(&[]Event{}).Error,
	} {
		if err == nil || strings.Contains(err.Error(), "Canary") || !strings.Contains(err.Error(), "22P02") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
