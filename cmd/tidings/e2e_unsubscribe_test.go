package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/links"
	"github.com/tidings-health/tidings/mailcatch"
)

// dkimKeyFile writes a fresh Ed25519 DKIM key and returns its file and
// the TXT record a receiver would look up.
func dkimKeyFile(t *testing.T) (string, string) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "plan-dkim.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pemFile, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
}

// headerOf parses a captured mail's header.
func headerOf(t *testing.T, m mailcatch.Message) mail.Header {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header
}

// mailFrom finds the one captured mail whose header From is addr.
func mailFrom(t *testing.T, msgs []mailcatch.Message, addr string) mailcatch.Message {
	t.Helper()
	var found []mailcatch.Message
	for _, m := range msgs {
		if strings.Contains(headerOf(t, m).Get("From"), addr) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d mails from %s, want 1", len(found), addr)
	}
	return found[0]
}

// httpDo sends a request to the running server.
func httpDo(t *testing.T, method, u, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, loc
	}
	return resp.StatusCode, string(b)
}

func (ts *testStack) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := ts.app.store.RawScan(context.Background(), &n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

const oneClick = "application/x-www-form-urlencoded"

// A marketing workflow's mail offers RFC 8058 one-click unsubscribe in
// headers DKIM signs; the required EOB notice sent alongside does not.
// A GET of the link changes nothing; the one-click POST opts the patient
// out, records the engagement and an audit row, and the next marketing
// notice is denied by the policy while the required one still goes.
// Tampered, expired and malformed requests get 4xx. No token, URL or log
// carries the patient's address or reference.
func TestMarketingMailUnsubscribesInOneClick(t *testing.T) {
	pemFile, record := dkimKeyFile(t)
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true, DKIMKeys: "dev:plan.example:s2026:" + pemFile})
	token := ts.apiKey(t, "dev", access.Operator)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	offerAndRequiredEOBWorkflows(t, h, token)
	ts.putContact(t, "Patient2", `{"email":"member@example.org","marketing_authorized":true}`)

	const eobFile = "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json" // about Patient2
	if r := ts.notify(t, ts.wrap(t, fixture(t, eobFile))); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 2)
	msgs := ts.Mail.Messages()
	offer, required := mailFrom(t, msgs, "offers@plan.example"), mailFrom(t, msgs, "eob@plan.example")

	if h := headerOf(t, required); h.Get("List-Unsubscribe") != "" || h.Get("List-Unsubscribe-Post") != "" {
		t.Fatalf("the required notice offers unsubscribe: %q", h.Get("List-Unsubscribe"))
	}
	oh := headerOf(t, offer)
	if got := oh.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Fatalf("List-Unsubscribe-Post %q", got)
	}
	unsubURL := strings.TrimSuffix(strings.TrimPrefix(oh.Get("List-Unsubscribe"), "<"), ">")
	if !strings.HasPrefix(unsubURL, ts.BaseURL+"/u/") {
		t.Fatalf("List-Unsubscribe %q", oh.Get("List-Unsubscribe"))
	}
	// DKIM covers both headers, and verifies with another implementation.
	lookup := func(name string) ([]string, error) {
		if name == "s2026._domainkey.plan.example" {
			return []string{record}, nil
		}
		return nil, errors.New("no such record")
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(offer.Data), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM: %v %+v", err, vs)
	}
	signed := strings.ToLower(strings.Join(vs[0].HeaderKeys, ":"))
	if !strings.Contains(signed, "list-unsubscribe:") || !strings.Contains(signed, "list-unsubscribe-post") {
		t.Fatalf("DKIM signs %s, not both List-Unsubscribe headers", signed)
	}
	// A relay that swaps the link breaks the signature.
	swapped := bytes.Replace(offer.Data, []byte("/u/"), []byte("/x/"), 1)
	if vs, _ := dkim.VerifyWithOptions(bytes.NewReader(swapped), &dkim.VerifyOptions{LookupTXT: lookup}); len(vs) != 1 || vs[0].Err == nil {
		t.Fatal("a changed List-Unsubscribe still verifies")
	}

	optOuts := func() int { return ts.count(t, `SELECT count(*) FROM purpose_opt_outs`) }
	// A link scanner's GET shows the button and changes nothing.
	if code, body := httpDo(t, "GET", unsubURL, "", ""); code != 200 || !strings.Contains(body, `<form method="post"`) || !strings.Contains(body, `value="One-Click"`) {
		t.Fatalf("GET: %d %s", code, body)
	}
	if n := optOuts(); n != 0 {
		t.Fatalf("a GET opted out (%d rows)", n)
	}
	// Refusals.
	raw := unsubURL[len(ts.BaseURL+"/u/"):]
	tampered := ts.BaseURL + "/u/" + raw[:len(raw)-2] + map[bool]string{true: "AA", false: "AB"}[strings.HasSuffix(raw, "AB")]
	signer, err := ts.app.linkSigner()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signer.Verify(raw, links.KindUnsubscribe, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expiredTok := tok
	expiredTok.Expires = time.Now().Add(-time.Minute).Truncate(time.Second)
	expired := ts.BaseURL + "/u/" + signer.Sign(expiredTok)
	for _, c := range []struct {
		name, url, body string
		want            int
	}{
		{"tampered", tampered, "List-Unsubscribe=One-Click", 404},
		{"expired", expired, "List-Unsubscribe=One-Click", 410},
		{"not one-click", unsubURL, "List-Unsubscribe=Later", 400},
		{"no body", unsubURL, "", 400},
		{"oversized", unsubURL, "List-Unsubscribe=One-Click&pad=" + strings.Repeat("x", 4096), 400},
	} {
		if code, body := httpDo(t, "POST", c.url, oneClick, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if n := optOuts(); n != 0 {
		t.Fatalf("a refused request opted out (%d rows)", n)
	}
	// The one-click POST, as a mail client sends it; again, it changes nothing more.
	for range 2 {
		if code, body := httpDo(t, "POST", unsubURL, oneClick, "List-Unsubscribe=One-Click"); code != 200 || !strings.Contains(body, "You are unsubscribed") {
			t.Fatalf("POST: %d %s", code, body)
		}
	}
	if n := optOuts(); n != 1 {
		t.Fatalf("%d opt-outs, want 1", n)
	}
	if n := ts.count(t, `SELECT count(*) FROM engagements WHERE type = 'unsubscribed'`); n != 1 {
		t.Fatalf("%d unsubscribed engagements, want 1", n)
	}
	if n := ts.count(t, `SELECT count(*) FROM audit_log WHERE action = 'contact.unsubscribed' AND detail->>'purpose' = 'marketing'`); n != 1 {
		t.Fatalf("%d audit rows, want 1", n)
	}

	// The next EOB: the required notice goes, the marketing one is denied.
	second := editJSON(t, fixture(t, eobFile), func(eob map[string]any) { eob["id"] = "EOBPharmacy1-second" })
	if r := ts.notify(t, ts.wrap(t, second)); r.Status != 202 {
		t.Fatalf("second notification: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 4)
	var reasons []string
	if err := ts.app.store.RawScan(context.Background(), &reasons, `SELECT n.reasons::text FROM notices n JOIN runs r ON r.id = n.run_id
		WHERE r.workflow_id = 'eob-offers' AND n.status = 'denied'`); err != nil {
		t.Fatal(err)
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "the patient unsubscribed from marketing notices") {
		t.Fatalf("denied marketing notices: %q", reasons)
	}
	if n := ts.count(t, `SELECT count(*) FROM notices n JOIN runs r ON r.id = n.run_id WHERE r.workflow_id = 'eob-required' AND n.status = 'sent'`); n != 2 {
		t.Fatalf("%d required notices sent, want 2", n)
	}
	if n := len(ts.Mail.Messages()); n != 3 {
		t.Fatalf("%d mails, want 3 (two required, one offer)", n)
	}

	// No PHI in the link, its token or the logs.
	decoded, _ := base64.RawURLEncoding.DecodeString(raw)
	logs := ts.Logs.String()
	for _, phi := range []string{"member@example.org", "Patient2", "Patient/Patient2"} {
		if strings.Contains(unsubURL, phi) || bytes.Contains(decoded, []byte(phi)) {
			t.Errorf("the unsubscribe link carries %q", phi)
		}
		if strings.Contains(logs, phi) {
			t.Errorf("the logs carry %q", phi)
		}
	}
	if strings.Contains(logs, raw) {
		t.Error("the logs carry the unsubscribe token")
	}
	if u, _ := url.Parse(unsubURL); u.RawQuery != "" {
		t.Errorf("the link has a query %q", u.RawQuery)
	}
}
