package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/portal"
	"github.com/tidings-health/tidings/seal"
)

var (
	portalLinkRE = regexp.MustCompile(`https?://\S+/portal/dev/notices/[A-Za-z0-9_-]+`)
	portalCodeRE = regexp.MustCompile(`\b(\d{6})\b`)
	csrfFieldRE  = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)
)

// chromium finds Debian's chromium (scripts/ensure-deps.sh installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed and could not be: run scripts/ensure-deps.sh (apt-get install chromium) to run the portal's browser test")
	return ""
}

// portalStack is a stack with one EOB notice sent to Patient2 (whose
// Patient, with an address and a birth date, comes in the bundle), and
// that notice's link.
func portalStack(t *testing.T) (*testStack, string) {
	t.Helper()
	return portalStackWith(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), "")
}

// portalStackWith is portalStack with another EOB about Patient2 and, when
// contact is not "", Patient2's contact registered through the API first.
func portalStackWith(t *testing.T, eob []byte, contact string) (*testStack, string) {
	t.Helper()
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	if contact != "" {
		ts.putContact(t, "Patient2", contact)
	}
	patient := fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")
	collection := withPatient2(patient, eob)
	if r := ts.notify(t, ts.wrap(t, collection)); r.Status != 202 {
		t.Fatalf("status %d %s", r.Status, r.Body)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	link := portalLinkRE.FindString(decodedText(t, msgs[0].Data))
	if link == "" {
		t.Fatalf("no portal link in the notice:\n%s", decodedText(t, msgs[0].Data))
	}
	return ts, link
}

// The notice's link, opened in headless Chromium: the page asks for a
// code, the code arrives by mail (carrying nothing but the code), a wrong
// code is refused, the right one shows the notice as the policy allowed it
// on the portal, and the view ends the workflow's wait for portal.viewed.
func TestPortalPickupInChromium(t *testing.T) {
	exe := chromium(t)
	ts, link := portalStack(t)
	token := link[strings.LastIndexByte(link, '/')+1:]

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU)...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()

	err := chromedp.Do(browser,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("send-code")),
	)
	if err != nil {
		t.Fatalf("opening the link: %v", err)
	}
	lang, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.documentElement.lang`))
	if err != nil {
		t.Fatal(err)
	}
	labelled, err := chromedp.Run(browser, chromedp.Evaluate[bool](
		`[...document.querySelectorAll('input:not([type=hidden])')].every(i => i.id !== '' && document.querySelector('label[for="' + i.id + '"]') !== null)`))
	if err != nil {
		t.Fatal(err)
	}
	if lang != "en" || !labelled {
		t.Errorf(`<html lang=%q>, every input labelled: %v`, lang, labelled)
	}
	if err := chromedp.Do(browser, chromedp.Click(chromedp.ID("send-code")), chromedp.WaitVisible(chromedp.ID("info"))); err != nil {
		t.Fatalf("asking for a code: %v", err)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	codeMail := decodedText(t, msgs[1].Data)
	if strings.Join(msgs[1].To, ",") != strings.Join(msgs[0].To, ",") {
		t.Errorf("the code went to %v, the notice to %v", msgs[1].To, msgs[0].To)
	}
	for _, phi := range []string{"Health Plan", "Provider", "$", token, "Patient2", "1943"} {
		if strings.Contains(codeMail, phi) {
			t.Errorf("the code mail carries %q:\n%s", phi, codeMail)
		}
	}
	code := portalCodeRE.FindStringSubmatch(codeMail)
	if code == nil {
		t.Fatalf("no code in the mail:\n%s", codeMail)
	}
	wrong := "000000"
	if code[1] == wrong {
		wrong = "111111"
	}

	err = chromedp.Do(browser,
		chromedp.SendKeys(chromedp.ID("code"), wrong),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.CSS("#error, #notice")), // a notice shown here fails at once
	)
	if err != nil {
		t.Fatalf("entering a wrong code: %v", err)
	}
	refusal, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(refusal, "did not match") {
		t.Fatalf("the wrong code's page says %q", refusal)
	}
	err = chromedp.Do(browser,
		chromedp.SendKeys(chromedp.ID("code"), code[1]),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	if err != nil {
		t.Fatalf("entering the code: %v", err)
	}
	shown, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"Explanation of Benefits", "Health plan", "Your share"} {
		if !strings.Contains(shown, want) {
			t.Errorf("the notice page lacks %q:\n%s", want, shown)
		}
	}
	jar, err := chromedp.Call(browser, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	cookies := jar.Cookies
	var session *network.Cookie
	for _, c := range cookies {
		if c.Name == "tidings_portal_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || !strings.HasSuffix(session.Path, "/notices/"+token) {
		t.Errorf("session cookie %+v", session)
	}

	// The view: an audit row, and portal.viewed as a posted event, which
	// ends the EOB workflow's wait.
	var subject string
	ts.app.store.RawScan(context.Background(), &subject, `SELECT subject FROM runs WHERE workflow_id = 'eob-notice'`)
	ts.waitRun(t, subject, "eob-notice", "ended as viewed", ended("viewed"))
	var audited int
	ts.app.store.RawScan(context.Background(), &audited, `SELECT count(*) FROM audit_log WHERE tenant_id = 'dev' AND action = 'portal.viewed'`)
	if audited != 1 {
		t.Errorf("%d portal.viewed audit rows, want 1", audited)
	}
	// And an entry in the accounting of disclosures, beside the email's.
	var views []struct {
		Channel, Status, Detail, Purpose, NoticeType string
		DeliveryID                                   *int64
	}
	ts.app.store.RawScan(context.Background(), &views, `SELECT channel, status, detail, purpose, notice_type, delivery_id FROM disclosures
		WHERE tenant_id = 'dev' AND status = 'viewed'`)
	if len(views) != 1 || views[0].Channel != "portal" || views[0].Purpose != "payment" || views[0].NoticeType != "eob" || views[0].Detail == "" {
		t.Errorf("portal disclosures %+v, want one viewed eob for payment", views)
	}
	// Neither the token nor the code reaches a log.
	if logs := ts.Logs.String(); strings.Contains(logs, token) || strings.Contains(logs, code[1]) || !strings.Contains(logs, "/portal/:tenant/notices/:token") {
		t.Errorf("the logs name the token or the code, or no portal route:\n%s", logs)
	}
}

// What the portal refuses: a guessed token, a token of another tenant, a
// form without its CSRF token, and a link older than its life; and a
// tenant that asks for the date of birth gets it checked.
func TestPortalRefusals(t *testing.T) {
	ts, link := portalStack(t)
	token := link[strings.LastIndexByte(link, '/')+1:]
	base := strings.TrimSuffix(link, "/portal/dev/notices/"+token)
	ctx := context.Background()
	if err := ts.app.store.EnsureTenant(ctx, "other", "Another plan"); err != nil {
		t.Fatal(err)
	}
	get := func(c *http.Client, u string) (int, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for name, u := range map[string]string{
		"a guessed token":               base + "/portal/dev/notices/" + seal.NewToken(),
		"tenant A's token at B":         base + "/portal/other/notices/" + token,
		"a token of the wrong shape":    base + "/portal/dev/notices/" + token[:20],
		"a tenant Postgres cannot hold": base + "/portal/d%ffev/notices/" + token,
	} {
		if status, body := get(http.DefaultClient, u); status != http.StatusNotFound || !strings.Contains(body, "This link is not valid") {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	// A form posted without the page's CSRF token (as another site would).
	resp, err := http.PostForm(link+"/code", url.Values{"csrf": {seal.NewToken()}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a code asked for without the CSRF cookie: %d", resp.StatusCode)
	}

	// The date of birth, as a tenant may choose instead of a code.
	if err := ts.app.store.SetPortalVerification(ctx, "dev", portal.VerifyBirthDate, "test"); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	status, page := get(client, link)
	csrf := csrfFieldRE.FindStringSubmatch(page)
	if status != http.StatusOK || csrf == nil || !strings.Contains(page, `for="birth_date"`) || strings.Contains(page, `id="code"`) {
		t.Fatalf("the date-of-birth page: %d\n%s", status, page)
	}
	post := func(date string) *http.Response {
		t.Helper()
		resp, err := client.PostForm(link+"/verify", url.Values{"csrf": {csrf[1]}, "birth_date": {date}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post("1943-01-02"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong date: %d", r.StatusCode)
	}
	r := post("1943-01-01")
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right date: %d", r.StatusCode)
	}
	if sc := r.Header.Get("Set-Cookie"); !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") {
		t.Errorf("session cookie %q", sc)
	}
	if status, page := get(client, link); status != http.StatusOK || !strings.Contains(page, `id="notice"`) {
		t.Errorf("after the date: %d\n%s", status, page)
	}

	// Past its life (30 days by default) the link is refused, session or not.
	db, err := pgx.Connect(ctx, ts.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if tag, err := db.Exec(ctx, `UPDATE notices SET created_at = now() - interval '31 days' WHERE portal_token = $1`, token); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("age the notice: %v", err)
	}
	if status, body := get(client, link); status != http.StatusGone || !strings.Contains(body, "expired") {
		t.Errorf("an expired link: %d %s", status, body)
	}
}

// openByBirthDate opens a notice's link as Patient2 would where the tenant
// asks for the date of birth, and returns the page that follows (or the
// first page, when it asks for nothing).
func openByBirthDate(t *testing.T, ts *testStack, link string) (int, string) {
	t.Helper()
	if err := ts.app.store.SetPortalVerification(context.Background(), devTenant, portal.VerifyBirthDate, "test"); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	resp, err := client.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := csrfFieldRE.FindSubmatch(b)
	if csrf == nil {
		return resp.StatusCode, string(b) // nothing to prove identity for
	}
	resp, err = client.PostForm(link+"/verify", url.Values{"csrf": {string(csrf[1])}, "birth_date": {"1943-01-01"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// The portal shows a sensitive notice as the policy allows it there
// (rego rule 3's revealing fields): a provider whose name reveals the care
// is left out, while the payer and the amount stay. Through the worker:
// the published inpatient EOB, its provider named in memory for a
// behavioural-health clinic, once with its diagnosis and once with that
// changed to ICD-10-CM F32.9 (no published example carries one).
func TestPortalHidesTheProviderOfASensitiveNotice(t *testing.T) {
	const clinic = "Riverside Behavioral Health"
	named := editJSON(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), func(e map[string]any) {
		e["provider"].(map[string]any)["display"] = clinic
	})
	for _, c := range []struct {
		name      string
		eob       []byte
		sensitive bool
	}{
		{"the published diagnosis", named, false},
		{"a mental-health diagnosis", bytes.Replace(named, []byte(`"S06.0X1A"`), []byte(`"F32.9"`), -1), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.sensitive && !bytes.Contains(c.eob, []byte(`"F32.9"`)) {
				t.Fatal("the diagnosis was not replaced")
			}
			ts, link := portalStackWith(t, c.eob, "")
			status, page := openByBirthDate(t, ts, link)
			if status != http.StatusOK || !strings.Contains(page, `id="notice"`) {
				t.Fatalf("the notice after the date of birth: %d\n%s", status, page)
			}
			if !strings.Contains(page, "XXX Health Plan") {
				t.Errorf("the page does not name the payer:\n%s", page)
			}
			if strings.Contains(page, clinic) == c.sensitive {
				t.Errorf("sensitive %v, the page names the provider %v:\n%s", c.sensitive, !c.sensitive, page)
			}
			if strings.Contains(page, "F32") || strings.Contains(page, "S06") {
				t.Errorf("the page shows a diagnosis code:\n%s", page)
			}
		})
	}
}

// A patient who opted out of the portal still gets the mailed notice (email
// is not opted out), and its link shows nothing of it ("cannot be shown
// here", without asking who they are): the policy's opted-out-channel rule
// decides the portal view from the contact the worker gives it.
func TestPortalShowsNothingToAPatientWhoOptedOutOfIt(t *testing.T) {
	ts, link := portalStackWith(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"),
		`{"email": "member@example.org", "opted_out_channels": ["portal"]}`)
	if msgs := ts.Mail.Messages(); len(msgs) != 1 || msgs[0].To[0] != "member@example.org" {
		t.Fatalf("mail to %v, want the notice to member@example.org", recipients(msgs))
	}
	status, page := openByBirthDate(t, ts, link)
	if status != http.StatusNotFound || !strings.Contains(page, "This message cannot be shown here") || strings.Contains(page, `id="notice"`) {
		t.Errorf("the page after the date of birth: %d\n%s", status, page)
	}
	for _, phi := range []string{"XXX Health Plan", "$"} {
		if strings.Contains(page, phi) {
			t.Errorf("the portal shows %q to a patient who opted out of it:\n%s", phi, page)
		}
	}
	var reasons []string
	ts.app.store.RawScan(context.Background(), &reasons, `SELECT r FROM policy_decisions, jsonb_array_elements_text(reasons) r WHERE channel = 'portal'`)
	if !slices.Contains(reasons, "the patient opted out of portal") {
		t.Errorf("the portal decision's reasons %q", reasons)
	}
}
