package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/portal"
)

var portalLimits = portal.Limits{CodeTTL: 10 * time.Minute, CodeAttempts: 3, CodeInterval: 30 * time.Second, CodesPerLock: 4, Failures: 5, LockFor: 15 * time.Minute}

// portalNotice makes a sent notice of tenant with a sealed portal view and
// returns it with its token.
func portalNotice(t *testing.T, s *Store, tenant, resourceID string) (delivery.Notice, string) {
	t.Helper()
	ctx := context.Background()
	n, err := s.EnsureNotice(ctx, tenant, mustEvent(t, s, tenant, "sub-"+tenant, "ExplanationOfBenefit", resourceID, "1"), "eob")
	if err != nil {
		t.Fatal(err)
	}
	view, _ := json.Marshal(delivery.PortalView{NoticeType: "eob", Payload: json.RawMessage(`{"payer_name":"Canary Plan","portal_url":"u"}`),
		Email: "canary@example.org", BirthDate: "1974-12-25", Patient: "Patient/7", Subject: "ExplanationOfBenefit/" + resourceID})
	if err := s.SealNoticePayload(ctx, n.ID, []byte(`{}`), view, nil); err != nil {
		t.Fatal(err)
	}
	return n, n.PortalToken
}

func portalAccessRow(t *testing.T, s *Store, noticeID int64) (codeHash *string, failures int, lockedUntil *time.Time) {
	t.Helper()
	var rows []struct {
		CodeHash    *string
		Failures    int
		LockedUntil *time.Time
	}
	if err := s.RawScan(context.Background(), &rows, `SELECT code_hash, failures, locked_until FROM portal_access WHERE notice_id = ?`, noticeID); err != nil || len(rows) != 1 {
		t.Fatalf("portal_access of %d: %v %v", noticeID, rows, err)
	}
	return rows[0].CodeHash, rows[0].Failures, rows[0].LockedUntil
}

// A token finds its notice in its own tenant only, with the view opened
// and the tenant's method (code unless set otherwise).
func TestPortalNoticeIsFoundInItsTenantOnly(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "tA", "sub-tA")
	mustTenant(t, s, "tB", "sub-tB")
	n, token := portalNotice(t, s, "tA", "e1")
	got, err := s.PortalNotice(ctx, "tA", token)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != n.ID || got.Verification != portal.VerifyCode || got.View == nil || got.View.Email != "canary@example.org" || got.View.BirthDate != "1974-12-25" {
		t.Errorf("PortalNotice = %+v", got)
	}
	if _, err := s.PortalNotice(ctx, "tB", token); !errors.Is(err, fault.NotFound) {
		t.Errorf("tenant B found tenant A's token: %v", err)
	}
	guess := token[:len(token)-1] + "x" // another last character
	if strings.HasSuffix(token, "x") {
		guess = token[:len(token)-1] + "y"
	}
	if _, err := s.PortalNotice(ctx, "tA", guess); !errors.Is(err, fault.NotFound) {
		t.Errorf("a guessed token: %v", err)
	}
	if err := s.SetPortalVerification(ctx, "tA", portal.VerifyCodeBirthDate, "admin:test"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPortalVerification(ctx, "tA", "sms", "admin:test"); !errors.Is(err, fault.Invalid) {
		t.Errorf("an unknown method was stored: %v", err)
	}
	if got, _ := s.PortalNotice(ctx, "tA", token); got.Verification != portal.VerifyCodeBirthDate {
		t.Errorf("verification = %q", got.Verification)
	}
}

// A code is stored only as a keyed hash, works once, within its life and
// its tries, and only for its notice.
func TestPortalCodeIsHashedSingleUseAndShortLived(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "tA", "sub-tA")
	n, _ := portalNotice(t, s, "tA", "e1")
	other, _ := portalNotice(t, s, "tA", "e2")
	now := time.Now()
	session := func(v string) portal.Attempt {
		return portal.Attempt{NeedCode: true, BirthDateOK: true, Session: v, SessionUntil: now.Add(15 * time.Minute)}
	}
	if res, err := s.IssuePortalCode(ctx, "tA", n.ID, "123456", now, portalLimits); err != nil || res != portal.CodeSent {
		t.Fatalf("issue: %v %v", res, err)
	}
	hash, _, _ := portalAccessRow(t, s, n.ID)
	if hash == nil || *hash == "123456" || len(*hash) < 40 {
		t.Fatalf("the code is not stored hashed: %v", hash)
	}
	if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "654321", now.Add(time.Second), portalLimits); res != portal.TooSoon {
		t.Errorf("a second code at once: %v", res)
	}
	// The code of one notice does not open another, even with its hash
	// copied there: the hash is bound to its notice.
	if err := s.q(ctx).Exec(`INSERT INTO portal_access (notice_id, tenant_id, code_hash, code_expires_at) VALUES (?, 'tA', ?, ?)`,
		other.ID, *hash, now.Add(time.Hour)).Error; err != nil {
		t.Fatal(err)
	}
	a := session("h-other")
	a.Code = "123456"
	if res, _ := s.VerifyPortal(ctx, "tA", other.ID, a, now, portalLimits); res != portal.Wrong {
		t.Errorf("another notice's code: %v", res)
	}
	a = session("h1")
	a.Code = "123456"
	if res, err := s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(time.Minute), portalLimits); err != nil || res != portal.Verified {
		t.Fatalf("the right code: %v %v", res, err)
	}
	if id, err := s.PortalSession(ctx, "tA", "h1", now.Add(2*time.Minute)); err != nil || id != n.ID {
		t.Errorf("session: %d %v", id, err)
	}
	if _, err := s.PortalSession(ctx, "tA", "h1", now.Add(16*time.Minute)); !errors.Is(err, fault.NotFound) {
		t.Errorf("an ended session still works: %v", err)
	}
	if _, err := s.PortalSession(ctx, "tB", "h1", now); !errors.Is(err, fault.NotFound) {
		t.Errorf("a session works in another tenant: %v", err)
	}
	a.Session = "h2"
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(time.Minute), portalLimits); res != portal.Wrong {
		t.Errorf("a used code worked again: %v", res)
	}
	// An expired code.
	if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "111111", now.Add(time.Hour), portalLimits); res != portal.CodeSent {
		t.Fatalf("issue: %v", res)
	}
	a.Code, a.Session = "111111", "h3"
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(time.Hour+11*time.Minute), portalLimits); res != portal.Wrong {
		t.Errorf("an expired code worked: %v", res)
	}
	// A code has three tries, then is spent even when the right one follows.
	if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "222222", now.Add(2*time.Hour), portalLimits); res != portal.CodeSent {
		t.Fatalf("issue: %v", res)
	}
	for i, code := range []string{"000000", "000001"} {
		a.Code, a.Session = code, "h-wrong"
		if res, _ := s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(2*time.Hour), portalLimits); res != portal.Wrong {
			t.Errorf("wrong code %d: %v", i, res)
		}
	}
	a.Code = "000002"
	s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(2*time.Hour), portalLimits)
	a.Code, a.Session = "222222", "h4"
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, a, now.Add(2*time.Hour), portalLimits); res == portal.Verified {
		t.Error("the right code worked after its tries were spent")
	}
	if n := len(auditRows(t, s, "tA", "portal.verified")); n != 1 {
		t.Errorf("%d portal.verified audit rows, want 1", n)
	}
}

// Wrong proofs lock the notice for a while, whatever is typed then; after
// the lock the right proof works again. A date of birth alone counts the
// same way.
func TestPortalWrongProofsLockTheNotice(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "tA", "sub-tA")
	n, _ := portalNotice(t, s, "tA", "e1")
	now := time.Now()
	dob := func(ok bool, session string) portal.Attempt {
		return portal.Attempt{BirthDateOK: ok, Session: session, SessionUntil: now.Add(time.Hour)}
	}
	for i := range portalLimits.Failures - 1 {
		if res, _ := s.VerifyPortal(ctx, "tA", n.ID, dob(false, "x"), now, portalLimits); res != portal.Wrong {
			t.Fatalf("failure %d: %v", i, res)
		}
	}
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, dob(false, "x"), now, portalLimits); res != portal.Locked {
		t.Fatalf("the last failure did not lock: %v", res)
	}
	_, _, locked := portalAccessRow(t, s, n.ID)
	if locked == nil || locked.Before(now.Add(14*time.Minute)) {
		t.Errorf("locked until %v", locked)
	}
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, dob(true, "s1"), now.Add(time.Minute), portalLimits); res != portal.Locked {
		t.Errorf("the right date worked while locked: %v", res)
	}
	if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "123456", now.Add(time.Minute), portalLimits); res != portal.Locked {
		t.Errorf("a code was issued while locked: %v", res)
	}
	if res, _ := s.VerifyPortal(ctx, "tA", n.ID, dob(true, "s2"), now.Add(16*time.Minute), portalLimits); res != portal.Verified {
		t.Errorf("the right date after the lock: %v", res)
	}
	if len(auditRows(t, s, "tA", "portal.locked")) != 1 || len(auditRows(t, s, "tA", "portal.refused")) != portalLimits.Failures-1 {
		t.Error("the refusals and the lock are not audited")
	}
}

// Asking for codes without end locks the notice too.
func TestPortalTooManyCodesLock(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "tA", "sub-tA")
	n, _ := portalNotice(t, s, "tA", "e1")
	now := time.Now()
	for i := range portalLimits.CodesPerLock {
		if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "123456", now.Add(time.Duration(i)*time.Minute), portalLimits); res != portal.CodeSent {
			t.Fatalf("code %d: %v", i, res)
		}
	}
	if res, _ := s.IssuePortalCode(ctx, "tA", n.ID, "123456", now.Add(time.Hour), portalLimits); res != portal.Locked {
		t.Errorf("code %d: %v", portalLimits.CodesPerLock+1, res)
	}
}

// A session ends when its time is up (HIPAA 164.312(a)(2)(iii), automatic
// logoff): the cookie's session opens the notice until then, never after.
func TestPortalSessionExpires(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "tA", "sub-tA")
	n, _ := portalNotice(t, s, "tA", "e1")
	now := time.Now()
	at := portal.Attempt{BirthDateOK: true, Session: "session-hash", SessionUntil: now.Add(15 * time.Minute)}
	if res, err := s.VerifyPortal(ctx, "tA", n.ID, at, now, portalLimits); err != nil || res != portal.Verified {
		t.Fatalf("verify: %v %v", res, err)
	}
	if id, err := s.PortalSession(ctx, "tA", "session-hash", now.Add(14*time.Minute)); err != nil || id != n.ID {
		t.Fatalf("within its time the session opens notice %d (%v), want %d", id, err, n.ID)
	}
	if id, err := s.PortalSession(ctx, "tA", "session-hash", now.Add(15*time.Minute)); err == nil || id != 0 {
		t.Fatalf("an expired session opened notice %d", id)
	}
	if id, err := s.PortalSession(ctx, "tB", "session-hash", now); err == nil || id != 0 {
		t.Fatalf("another tenant's session lookup opened notice %d", id)
	}
}
