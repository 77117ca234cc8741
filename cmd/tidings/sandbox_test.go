package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
)

// sprintfBomb is issue 10's candidate: a few hundred bytes that ask for a
// million-digit string per element of a long array. In the serve process
// it took gigabytes and ran far past the dry run's time limit.
const sprintfBomb = `package tidings.notice

pad(i) := sprintf("%0999999[1]d", [i])

decision := {"allow": false, "deny": [pad(i) | some i in numbers.range(1, 100000)], "redact": [], "obligations": {}}
`

// A candidate that would exhaust the API process is stopped in its own
// process with a 422, intake keeps answering 202 while it runs, and neither
// the sample input (a PHI canary here) nor Tidings' secrets reach the
// child's arguments or environment.
func TestCandidateBombIsContained(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	token := ts.apiKey(t, "dev", access.Compliance)
	t.Setenv("TIDINGS_CANARY_SECRET", "not-for-the-child") // what a real serve's environment holds
	pol, err := ts.app.tenantPolicies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h, err := ts.app.handler(pol)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- api.Serve(ctx, ln, h, ts.Log) }()
	t.Cleanup(func() { cancel(); <-served })
	base := "http://" + ln.Addr().String()

	const canary = "Zebediah Quimby-Canary"
	body, _ := json.Marshal(map[string]any{
		"input":  map[string]any{"notice_type": "eob", "channel": map[string]any{"type": "email"}, "payload": map[string]any{"patient_name": canary}},
		"policy": map[string]string{"bomb.rego": sprintfBomb},
	})
	type answer struct {
		status int
		body   string
		took   time.Duration
	}
	bombDone := make(chan answer, 1)
	start := time.Now()
	go func() {
		status, b := postJSON(t, base+"/v1/policy/evaluate", token, body)
		bombDone <- answer{status, b, time.Since(start)}
	}()

	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	var during int
	var slowest time.Duration
	var sawChild bool
	var bomb answer
	hang := time.After(60 * time.Second)
loop:
	for i := 0; ; i++ {
		select {
		case bomb = <-bombDone:
			break loop
		case <-hang:
			t.Fatal("the dry run did not end within 60s")
		default:
		}
		sawChild = checkSandboxChildren(t, canary) || sawChild
		sent := time.Now()
		status, b := postNotification(t, base, ts.Secret, ts.wrap(t, withID(t, eob, fmt.Sprintf("EOBDuringBomb%d", i))))
		if status != http.StatusAccepted {
			t.Fatalf("intake during the dry run: %d %s", status, b)
		}
		slowest = max(slowest, time.Since(sent))
		during++
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("bomb answered %d after %s: %s; %d notifications accepted meanwhile, slowest %s",
		bomb.status, bomb.took.Round(time.Millisecond), bomb.body, during, slowest.Round(time.Millisecond))
	if bomb.status != http.StatusUnprocessableEntity ||
		!regexp.MustCompile(`the dry run exceeded its (time|memory) limit`).MatchString(bomb.body) {
		t.Fatalf("bomb: %d %s, want 422 naming the limit", bomb.status, bomb.body)
	}
	if during < 3 {
		t.Errorf("only %d notifications were posted while the dry run ran", during)
	}
	if !sawChild {
		t.Error("no sandbox child process was seen while the dry run ran")
	}
	if strings.Contains(ts.Logs.String(), canary) {
		t.Error("the sample input is in the logs")
	}

	// The process still answers dry runs, in and out of the sandbox.
	ok, _ := json.Marshal(map[string]any{
		"input":  map[string]any{"notice_type": "eob"},
		"policy": map[string]string{"p.rego": "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": [], \"obligations\": {}}\n"},
	})
	if status, b := postJSON(t, base+"/v1/policy/evaluate", token, ok); status != 200 ||
		!strings.Contains(b, `"allow":true`) || !strings.Contains(b, `"fired":["data.tidings.notice.decision (p.rego:3)"]`) {
		t.Fatalf("candidate after the bomb: %d %s", status, b)
	}
}

// checkSandboxChildren fails the test if a running sandbox child of this
// process has canary in its arguments or environment, or any TIDINGS_
// variable; it reports whether it saw one.
func checkSandboxChildren(t *testing.T, canary string) bool {
	t.Helper()
	saw := false
	for _, pid := range ourChildren(t) {
		dir := "/proc/" + strconv.Itoa(pid)
		cmdline, err := os.ReadFile(dir + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte("policy\x00sandbox\x00")) {
			continue
		}
		saw = true
		environ, err := os.ReadFile(dir + "/environ")
		if err != nil {
			continue // it ended meanwhile
		}
		if bytes.Contains(cmdline, []byte(canary)) || bytes.Contains(environ, []byte(canary)) {
			t.Errorf("sandbox child %d has the sample input in its arguments or environment", pid)
		}
		for kv := range bytes.SplitSeq(environ, []byte{0}) {
			if bytes.HasPrefix(kv, []byte("TIDINGS_")) {
				t.Errorf("sandbox child %d inherited %s", pid, bytes.SplitN(kv, []byte("="), 2)[0])
			}
		}
	}
	return saw
}

func postJSON(t *testing.T, url, token string, body []byte) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return do(t, req)
}

func postNotification(t *testing.T, base, secret string, body []byte) (int, string) {
	req, err := http.NewRequest(http.MethodPost, base+"/fhir/r4/notify/"+devSubscription, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+secret)
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// withID is a published resource under another id, so that intake takes it
// as a new event rather than a duplicate.
func withID(t *testing.T, raw []byte, id string) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["id"] = id
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
