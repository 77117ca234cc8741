package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/portal"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)

// world is a tenant with notices whose portal views are sealed in a real
// database, and a portal in front of it.
type world struct {
	st  *store.Store
	cfg portal.Config
	h   http.Handler
}

func newWorld(t *testing.T, cfg portal.Config) *world {
	t.Helper()
	kr, err := seal.NewKeyring(map[string][]byte{"k1": bytes.Repeat([]byte{1}, 32)}, "", bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), testenv.NewDB(t), kr, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.EnsureTenant(ctx, "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSubscription(ctx, intake.Subscription{ID: "sub1", TenantID: "t1"}, "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
	cfg.Store = st
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	portal.New(cfg).Mount(r)
	return &world{st: st, cfg: cfg, h: r}
}

// notice makes a sent notice with a portal view and returns its link path.
func (w *world) notice(t *testing.T, id string, v delivery.PortalView) string {
	t.Helper()
	ctx := context.Background()
	ev, err := w.st.InsertEvents(ctx, []intake.NewEvent{{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit",
		ResourceID: id, VersionID: "1", DedupeKey: "sub1|ExplanationOfBenefit|" + id + "|v:1", Record: fhir.Event{Focus: json.RawMessage(`{}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.st.EnsureNotice(ctx, "t1", ev[0].EventID, "eob")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(v)
	if err := w.st.SealNoticePayload(ctx, n.ID, []byte(`{}`), raw, nil); err != nil {
		t.Fatal(err)
	}
	return "/portal/t1/notices/" + n.PortalToken
}

var view = delivery.PortalView{NoticeType: "eob", Payload: json.RawMessage(`{"payer_name":"Canary Plan","portal_url":"u"}`),
	Email: "canary@example.org", BirthDate: "1974-12-25", Patient: "Patient/7", Subject: "ExplanationOfBenefit/e1"}

func (w *world) do(method, path, body string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, req)
	return rec
}

func cookieOf(rec *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// A client that asks too often, or tries too many links that lead
// nowhere, is refused for a while; so is a link asked for too often.
func TestPortalRateLimits(t *testing.T) {
	w := newWorld(t, portal.Config{PerClientPerMinute: 1, PerClientBurst: 4, MissesPerHour: 2, PerTokenPerMinute: 1})
	link := w.notice(t, "e1", view)
	codes := func(paths ...string) []int {
		var out []int
		for _, p := range paths {
			out = append(out, w.do("GET", p, "").Code)
		}
		return out
	}
	guess := "/portal/t1/notices/" + seal.NewToken()
	if got := codes(guess, guess, guess); got[0] != 404 || got[1] != 404 || got[2] != 429 {
		t.Errorf("guesses: %v, want 404 404 429", got)
	}
	w = newWorld(t, portal.Config{PerClientPerMinute: 1, PerClientBurst: 3, MissesPerHour: 100, PerTokenPerMinute: 1})
	link = w.notice(t, "e1", view)
	if got := codes(link, link, link, link); got[0] != 200 || got[1] != 429 || got[3] != 429 {
		t.Errorf("one link asked for 4 times: %v, want 200 then 429 (the link's limit), then 429 (the client's)", got)
	}
}

// The page speaks the notice's language, marks its cookies Secure when
// the public URL is https, and every input has a label.
func TestPortalPageLanguageAndCookies(t *testing.T) {
	w := newWorld(t, portal.Config{SecureCookies: true})
	es := view
	es.Language = "es-MX"
	rec := w.do("GET", w.notice(t, "e1", es), "")
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, `<html lang="es">`) || !strings.Contains(body, "Enviarme un código") {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
	if !strings.Contains(body, `<label for="code">`) || !strings.Contains(body, `id="code"`) {
		t.Errorf("the code input has no label:\n%s", body)
	}
	c := cookieOf(rec, "tidings_portal_csrf")
	if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("csrf cookie %+v", c)
	}
	for _, h := range []string{"Cache-Control", "Referrer-Policy", "Content-Security-Policy"} {
		if rec.Header().Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if strings.Contains(body, "Canary Plan") || strings.Contains(body, "canary@example.org") {
		t.Errorf("the page shows the notice or the address before the patient proves who they are:\n%s", body)
	}
}

// A session opens its own notice only.
func TestPortalSessionOpensItsNoticeOnly(t *testing.T) {
	w := newWorld(t, portal.Config{})
	if err := w.st.SetPortalVerification(context.Background(), "t1", portal.VerifyBirthDate, "test"); err != nil {
		t.Fatal(err)
	}
	a, b := w.notice(t, "e1", view), w.notice(t, "e2", view)
	rec := w.do("GET", a, "")
	csrf := cookieOf(rec, "tidings_portal_csrf")
	m := csrfField.FindStringSubmatch(rec.Body.String())
	if csrf == nil || m == nil {
		t.Fatalf("no CSRF token:\n%s", rec.Body)
	}
	rec = w.do("POST", a+"/verify", url.Values{"csrf": {m[1]}, "birth_date": {"1974-12-25"}}.Encode(), csrf)
	session := cookieOf(rec, "tidings_portal_session")
	if rec.Code != http.StatusSeeOther || session == nil || session.Path != a {
		t.Fatalf("verify: %d, session %+v", rec.Code, session)
	}
	if rec := w.do("GET", a, "", session); !strings.Contains(rec.Body.String(), "Canary Plan") {
		t.Errorf("the session does not open its notice:\n%s", rec.Body)
	}
	if rec := w.do("GET", b, "", session); rec.Code != 200 || strings.Contains(rec.Body.String(), "Canary Plan") {
		t.Errorf("the session of one notice opened another: %d\n%s", rec.Code, rec.Body)
	}
	// The CSRF token must match its cookie.
	if rec := w.do("POST", a+"/verify", url.Values{"csrf": {seal.NewToken()}, "birth_date": {"1974-12-25"}}.Encode(), csrf); rec.Code != http.StatusForbidden {
		t.Errorf("a form with another CSRF token: %d", rec.Code)
	}
	// Without a mailer, a code cannot be sent: the page says so.
	if err := w.st.SetPortalVerification(context.Background(), "t1", portal.VerifyCode, "test"); err != nil {
		t.Fatal(err)
	}
	if rec := w.do("POST", b+"/code", url.Values{"csrf": {m[1]}}.Encode(), &http.Cookie{Name: csrf.Name, Value: csrf.Value}); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a code without a mailer: %d", rec.Code)
	}
}

// A language the page has no words in (the notices may have more) gives
// an English page that says so in its lang attribute.
func TestPortalPageFallsBackToEnglish(t *testing.T) {
	w := newWorld(t, portal.Config{})
	fr := view
	fr.Language = "fr"
	rec := w.do("GET", w.notice(t, "e1", fr), "")
	if body := rec.Body.String(); rec.Code != 200 || !strings.Contains(body, `<html lang="en">`) || !strings.Contains(body, "Email me a code") {
		t.Errorf("%d\n%s", rec.Code, body)
	}
	// Vietnamese, like the notices.
	vi := view
	vi.Language = "vi"
	rec = w.do("GET", w.notice(t, "e2", vi), "")
	if body := rec.Body.String(); rec.Code != 200 || !strings.Contains(body, `<html lang="vi">`) || !strings.Contains(body, "Gửi mã cho tôi qua email") {
		t.Errorf("%d\n%s", rec.Code, body)
	}
}
