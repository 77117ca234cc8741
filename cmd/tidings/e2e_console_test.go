package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tidings-health/tidings/access"
)

// The console in headless Chromium, on serve's own handler with a notice
// sent: each role signs in with its API key and finds its pages on the
// home page; the compliance analyst dry-runs the playground and sees the
// rules fired, verifies the audit chain and reads a patient's
// disclosures; the operator sees the EOB workflow's steps and the run's
// path; the integration engineer the subscription; and a page of another
// role answers 403. With TIDINGS_CONSOLE_SCREENSHOTS set to a folder, the
// test saves the pages the README shows there (docs/console/*.png).
func TestConsoleInChromium(t *testing.T) {
	exe := chromium(t)
	ts, _ := portalStack(t)
	shots := os.Getenv("TIDINGS_CONSOLE_SCREENSHOTS")

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1200, 800))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()

	base := ts.BaseURL + "/console"
	signIn := func(role access.Role) {
		t.Helper()
		err := chromedp.Do(browser,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.ID("key")), // signed out: the sign-in form
			chromedp.SendKeys(chromedp.ID("key"), ts.apiKey(t, "dev", role)),
			chromedp.Click(chromedp.ID("signin")),
			chromedp.WaitVisible(chromedp.ID("pages")),
		)
		if err != nil {
			t.Fatalf("signing in as %s: %v", role, err)
		}
	}
	signOut := func() {
		t.Helper()
		if err := chromedp.Do(browser, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("key"))); err != nil {
			t.Fatalf("signing out: %v", err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	status := func(path string) int64 {
		t.Helper()
		res, err := chromedp.Run(browser, chromedp.NavigateResponse(base+path))
		if err != nil {
			t.Fatalf("opening %s: %v", path, err)
		}
		return res.Status
	}
	// screenshot saves the top height pixels of the page, 1200 wide.
	screenshot := func(name string, height int64) {
		t.Helper()
		if shots == "" {
			return
		}
		if err := chromedp.Do(browser, chromedp.EmulateViewport(1200, height)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(browser, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	signIn(access.Compliance)
	if home := text("#pages"); !strings.Contains(home, "Policy playground") || strings.Contains(home, "Workflows") {
		t.Errorf("compliance's home page lists: %s", home)
	}
	err := chromedp.Do(browser,
		chromedp.Navigate(base+"/policy"),
		chromedp.WaitVisible(chromedp.ID("dryrun")),
		chromedp.Click(chromedp.ID("dryrun")),
		chromedp.WaitVisible(chromedp.ID("fired")),
	)
	if err != nil {
		t.Fatalf("the playground's dry run: %v", err)
	}
	if fired := text("#fired"); !strings.Contains(fired, "data.tidings.notice.decision (notice.rego:") {
		t.Errorf("rules fired: %s", fired)
	}
	if d := text("#decision"); !strings.Contains(d, "yes") {
		t.Errorf("the sample input's decision: %s", d)
	}
	screenshot("playground.png", 1250)
	err = chromedp.Do(browser,
		chromedp.Navigate(base+"/audit"),
		chromedp.WaitVisible(chromedp.ID("verify")),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.ID("verification")),
	)
	if err != nil {
		t.Fatalf("verifying the audit chain: %v", err)
	}
	if v := text("#verification"); !strings.HasPrefix(v, "OK") || !strings.Contains(v, "tenant dev") {
		t.Errorf("the chain's verification: %s", v)
	}
	err = chromedp.Do(browser,
		chromedp.Navigate(base+"/disclosures"),
		chromedp.SendKeys(chromedp.ID("patient"), "Patient/Patient2"),
		chromedp.Click(chromedp.ID("report")),
		chromedp.WaitVisible(chromedp.ID("disclosures")),
	)
	if err != nil {
		t.Fatalf("the disclosures report: %v", err)
	}
	if d := text("#disclosures"); !strings.Contains(d, "email") || !strings.Contains(d, "payment") {
		t.Errorf("Patient2's disclosures: %s", d)
	}
	for _, path := range []string{"/workflows", "/subscriptions"} {
		if s := status(path); s != 403 {
			t.Errorf("compliance opens %s: %d, want 403", path, s)
		}
	}
	if body := text("main"); !strings.Contains(body, "needs an API key with role integration") {
		t.Errorf("the 403 page says: %s", body)
	}
	signOut()

	signIn(access.Operator)
	err = chromedp.Do(browser,
		chromedp.Navigate(base+"/workflows"),
		chromedp.Click(chromedp.CSS(`a[href="/console/workflows/eob-notice"]`)),
		chromedp.WaitVisible(chromedp.ID("steps")),
	)
	if err != nil {
		t.Fatalf("the EOB workflow: %v", err)
	}
	var subject string
	ts.app.store.RawScan(context.Background(), &subject, `SELECT subject FROM runs WHERE workflow_id = 'eob-notice'`)
	err = chromedp.Do(browser,
		chromedp.SendKeys(chromedp.ID("subject"), subject),
		chromedp.Click(chromedp.ID("path")),
		chromedp.WaitVisible(chromedp.CSS("li.on-path")),
	)
	if err != nil {
		t.Fatalf("the run's path: %v", err)
	}
	if p := text("table.path"); !strings.Contains(p, "notice") || !strings.Contains(p, "wait-viewed") {
		t.Errorf("the run's path: %s", p)
	}
	screenshot("workflow.png", 900)
	if s := status("/policy"); s != 403 {
		t.Errorf("operator opens /policy: %d, want 403", s)
	}
	signOut()

	signIn(access.Integration)
	if err := chromedp.Do(browser, chromedp.Navigate(base+"/subscriptions"), chromedp.WaitVisible(chromedp.ID("subscriptions"))); err != nil {
		t.Fatalf("subscriptions: %v", err)
	}
	if s := text("#subscriptions"); !strings.Contains(s, "active") {
		t.Errorf("the subscriptions table: %s", s)
	}
	screenshot("subscriptions.png", 420)
	if logs := ts.Logs.String(); strings.Contains(logs, "Patient2") || !strings.Contains(logs, "/console/policy") {
		t.Errorf("the logs name the patient, or no console route")
	}
}
