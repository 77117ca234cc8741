package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
)

// One patient's PHI, unique to this run, pushed through every way data
// enters Tidings and moves through it: full-resource EOB notifications (a
// bundled Patient, a contact registered through the API), an HL7v2-converted
// appointment, a workflow event, policy dry runs, a refused and a deferred
// send (whose relay echoes the address), and a sensitive diagnosis that
// sends portal-only. Afterwards none of it is anywhere but in the mail sent
// over TLS and sealed in Postgres: not in a log line, a Redis key or value
// of any database, a task's error, a Message-ID, a URL, or any table's
// clear columns (audit detail and subjects, reasons, errors, the
// accounting of disclosures).
func TestPHICanaryLeaksNowhere(t *testing.T) {
	c := newCanary(t)
	c.assertFindable(t)
	var deferred atomic.Int32
	// At debug level: an operator chasing a problem turns it on, and it
	// must not open a leak either.
	ts := newTestStack(t, testOpts{NoPlaceholder: true, DebugLog: true, WakeHorizon: 30 * 24 * time.Hour, ScheduleEvery: 200 * time.Millisecond,
		RejectRcpt: func(rcpt string) *mailcatch.Reply {
			// Like Postfix, the relay names the recipient in its reply.
			switch {
			case strings.EqualFold(rcpt, c.emailRefused):
				return &mailcatch.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "<" + rcpt + ">: Recipient address rejected: User unknown"}
			case strings.EqualFold(rcpt, c.emailContact) && deferred.Add(1) == 1:
				return &mailcatch.Reply{Code: 451, Enhanced: [3]int{4, 2, 0}, Text: "<" + rcpt + ">: Recipient address rejected: try again later"}
			}
			return nil
		}})
	ctx := context.Background()
	var paths []string // every request path this test sends
	call := func(method, path, token, body string) (int, string) {
		t.Helper()
		paths = append(paths, path)
		req, err := http.NewRequest(method, ts.BaseURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	notify := func(what string, bundle []byte) {
		t.Helper()
		paths = append(paths, "/fhir/r4/notify/"+devSubscription)
		if r := ts.notify(t, ts.wrap(t, bundle)); r.Status != 202 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	}

	// A contact registered through the API, before its EOB arrives.
	if code, body := call("PUT", "/v1/contacts/Patient/"+c.patientContact, ts.apiKey(t, devTenant, access.Contacts),
		`{"email":"`+c.emailContact+`"}`); code != 200 {
		t.Fatalf("PUT contact: %d %s", code, body)
	}
	eobSent, eobContact := "EOBcanarysent"+c.ids, "EOBcanarycontact"+c.ids
	notify("EOB with its Patient", c.collection(t, c.patient(t, c.patientSent, c.emailSent), c.eob(t, eobSent, c.patientSent, c.code)))
	notify("EOB of a registered contact", c.eob(t, eobContact, c.patientContact, c.code))
	notify("EOB to a refused address", c.collection(t, c.patient(t, c.patientRefused, c.emailRefused), c.eob(t, "EOBcanaryrefused"+c.ids, c.patientRefused, c.code)))
	notify("EOB with a sensitive diagnosis", c.collection(t, c.patient(t, c.patientSent, c.emailSent), c.eob(t, "EOBcanarysensitive"+c.ids, c.patientSent, "F32.9", c.code)))
	preauth := editJSON(t, c.eob(t, "EOBcanarypreauth"+c.ids, c.patientSent, c.code), func(e map[string]any) { e["use"] = "preauthorization" })
	notify("preauthorization (denied)", c.collection(t, c.patient(t, c.patientSent, c.emailSent), preauth))
	notify("appointment", c.appointment(t))

	// A workflow event with PHI in its data, for the run that waits for a
	// portal view of the first EOB.
	ts.waitRun(t, "ExplanationOfBenefit/"+eobSent, "eob-notice", "waiting for a portal view",
		func(r journey.RunView) bool { return r.Status == "waiting" && r.Step == "wait-viewed" })
	event := fmt.Sprintf(`{"type":"portal.viewed","patient":"Patient/%s","subject":"ExplanationOfBenefit/%s","data":{"note":"viewed by %s %s","email":%q,"member":%q,"diagnosis":%q,"amount":%s}}`,
		c.patientSent, eobSent, c.given, c.family, c.emailSent, c.memberID, c.code, c.amount)
	if code, body := call("POST", "/v1/events", ts.apiKey(t, devTenant, access.Operator), event); code != 202 {
		t.Fatalf("POST /v1/events: %d %s", code, body)
	}

	// Policy dry runs with the PHI in their input: the active policy, a
	// candidate that prints the input and puts it in a reason (both go back
	// to the analyst who sent it, nowhere else), and one that stumbles on it
	// (to_number of a name: no decision).
	compliance := ts.apiKey(t, devTenant, access.Compliance)
	input := fmt.Sprintf(`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"payer_name":"%s %s","patient_share":%q,"diagnosis":%q,"member_id":%q,"email":%q}}`,
		c.given, c.family, c.share, c.code, c.memberID, c.emailSent)
	for _, pol := range []string{"",
		`package tidings.notice

decision := {"allow": false, "deny": [sprintf("for %s", [input.payload.payer_name])], "redact": [], "obligations": {}} if {
	print("dry run for", input.payload.payer_name, input.payload.email)
}
`,
		`package tidings.notice

decision := {"allow": to_number(input.payload.payer_name) > 0, "deny": [], "redact": [], "obligations": {}}
`} {
		body := `{"input":` + input + `}`
		if pol != "" {
			files, _ := json.Marshal(map[string]string{"p.rego": pol})
			body = `{"input":` + input + `,"policy":` + string(files) + `}`
		}
		if code, resp := call("POST", "/v1/policy/evaluate", compliance, body); code != 200 && code != 422 {
			t.Fatalf("dry run: %d %s", code, resp)
		}
	}

	// Six notices, each final: the deferred one only after its retry.
	ts.waitNotices(t, 6)
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 4)
	if err != nil {
		t.Fatalf("waiting for 4 messages: %v", err)
	}
	ts.waitRun(t, "ExplanationOfBenefit/"+eobSent, "eob-notice", "ended as viewed", ended("viewed"))
	if rep := ts.verifyAudit(t); !rep.OK() || rep.Rows == 0 {
		t.Fatalf("audit chain: %s", rep)
	}

	// What must have happened, or the scan below proves nothing.
	var happened struct {
		Refused, Deferred, Denied, PortalOnly, Events, Contacts, Sealed, Audit, Engagements, Disclosures int
	}
	ts.app.store.RawScan(ctx, &happened, `SELECT
		(SELECT count(*) FROM deliveries WHERE status = 'failed' AND error <> '') AS refused,
		(SELECT count(*) FROM audit_log WHERE action = 'delivery.failed') AS deferred,
		(SELECT count(*) FROM notices WHERE status = 'denied' AND reasons::text <> '[]') AS denied,
		(SELECT count(*) FROM policy_decisions WHERE obligations::text LIKE '%portal_only%') AS portal_only,
		(SELECT count(*) FROM events) AS events,
		(SELECT count(*) FROM contacts WHERE email_sealed IS NOT NULL) AS contacts,
		(SELECT count(*) FROM events WHERE length(resource_sealed) > 0) AS sealed,
		(SELECT count(*) FROM audit_log) AS audit,
		(SELECT count(*) FROM engagements WHERE data_sealed IS NOT NULL) AS engagements,
		(SELECT count(*) FROM disclosures WHERE status = 'sent' AND length(recipient_sealed) > 0) AS disclosures`)
	if happened.Refused < 1 || happened.Deferred < 2 || happened.Denied != 1 || happened.PortalOnly < 1 || happened.Events != 6 ||
		happened.Contacts < 4 || happened.Sealed != 6 || happened.Audit == 0 || happened.Engagements < 1 || happened.Disclosures < 4 {
		var reasons []string
		ts.app.store.RawScan(ctx, &reasons, `SELECT status || ' ' || reasons::text FROM notices ORDER BY id`)
		t.Fatalf("the paths under test did not all run: %+v; notices %q", happened, reasons)
	}

	// Where the PHI must be: the first EOB's mail, sent over TLS to the
	// patient, shows the share; the registered contact got its mail.
	shown, registered := false, false
	for _, m := range msgs {
		to := strings.ToLower(strings.Join(m.To, ","))
		shown = shown || to == c.emailSent && m.TLS && strings.Contains(decodedText(t, m.Data), c.share)
		registered = registered || to == c.emailContact
	}
	if !shown || !registered {
		t.Fatalf("want a mail over TLS to %s showing %s and one to the registered %s; messages to %v",
			c.emailSent, c.share, c.emailContact, recipients(msgs))
	}

	// Where it must not be.
	c.assertAbsent(t, "the logs", []byte(ts.Logs.String()))
	c.assertAbsent(t, "the request paths", []byte(strings.Join(paths, "\n")))
	for i, m := range msgs {
		hdr, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		c.assertAbsent(t, fmt.Sprintf("message %d's Message-ID", i), []byte(hdr.Header.Get("Message-Id")))
		subject, err := new(mime.WordDecoder).DecodeHeader(hdr.Header.Get("Subject"))
		if err != nil || subject == "" {
			t.Fatalf("message %d: no readable Subject (%v)", i, err)
		}
		c.assertAbsent(t, fmt.Sprintf("message %d's Subject", i), []byte(subject))
		urls := urlRE.FindAllString(decodedText(t, m.Data), -1)
		if len(urls) == 0 {
			t.Errorf("message %d has no link: the URL check proves nothing", i)
		}
		c.assertAbsent(t, fmt.Sprintf("message %d's links", i), []byte(strings.Join(urls, "\n")))
	}
	c.assertAbsent(t, "Redis", []byte(redisDumpAll(t, ts)))
	c.assertAbsent(t, "task errors", []byte(taskErrors(t, ts)))
	c.assertAbsentFromDatabase(t, ts)
	if code, body := call("GET", "/metrics", compliance, ""); code == 200 {
		c.assertAbsent(t, "the metrics", []byte(body))
	}
}

var urlRE = regexp.MustCompile(`https?://[^\s"'<>]+`)

// canary is one run's unique PHI and the resources that carry it.
type canary struct {
	given, family, memberID, code, amount, share string
	emailSent, emailContact, emailRefused        string
	// Patient ids and the resources' ids are not PHI here; they are random
	// too, so that runs do not share rows.
	patientSent, patientContact, patientRefused, ids string
	patterns                                         map[string]*regexp.Regexp
}

func newCanary(t *testing.T) *canary {
	t.Helper()
	// Letters that are not hex digits: a canary cannot turn up by chance in
	// a hex dump or a random token.
	word := func(n int) string {
		const letters = "ghjkmnpqrstvwxyz"
		b := make([]byte, n)
		for i := range b {
			b[i] = letters[randInt(t, len(letters))]
		}
		return string(b)
	}
	digits := func(n int) string {
		var s strings.Builder
		for range n {
			s.WriteByte(byte('0' + randInt(t, 10)))
		}
		return s.String()
	}
	dollars, cents := 10000+randInt(t, 80000), 11+randInt(t, 88)
	if cents%10 == 0 {
		cents++
	}
	c := &canary{
		given: "Zyxq" + word(8), family: "Canaryfam" + word(8),
		memberID: "ZQM" + digits(9), code: "V" + digits(2) + "." + strings.ToUpper(word(4)),
		amount:    fmt.Sprintf("%d.%02d", dollars, cents),
		share:     fmt.Sprintf("$%d,%03d.%02d", dollars/1000, dollars%1000, cents),
		emailSent: "zyxq" + word(10) + "@example.org", emailContact: "zyxq" + word(10) + "@example.org",
		emailRefused: "zyxq" + word(10) + "@example.org",
		patientSent:  "pa" + digits(8), patientContact: "pb" + digits(8), patientRefused: "pr" + digits(8), ids: digits(8),
	}
	c.patterns = map[string]*regexp.Regexp{
		"given name":  textPattern(c.given),
		"family name": textPattern(c.family),
		"member id":   textPattern(c.memberID),
		"diagnosis":   textPattern(c.code),
		// As a number, as shown, and in cents.
		"amount": regexp.MustCompile(`(?i)` + regexp.QuoteMeta(c.amount) + `|` + regexp.QuoteMeta(c.share[1:]) +
			`|\b` + strings.Replace(c.amount, ".", "", 1) + `\b`),
	}
	for label, e := range map[string]string{"email": c.emailSent, "registered email": c.emailContact, "refused email": c.emailRefused} {
		c.patterns[label] = textPattern(e)
		c.patterns[label+"'s local part"] = textPattern(e[:strings.IndexByte(e, '@')])
	}
	return c
}

func randInt(t *testing.T, n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		t.Fatal(err)
	}
	return int(v.Int64())
}

// textPattern matches s in any case, hex-encoded, or inside any base64
// encoding of a longer text (at each of the three alignments).
func textPattern(s string) *regexp.Regexp {
	alts := []string{`(?i:` + regexp.QuoteMeta(s) + `)`, `(?i:` + hex.EncodeToString([]byte(s)) + `)`}
	for k := range 3 {
		part := s[k:]
		part = part[:len(part)/3*3]
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			alts = append(alts, regexp.QuoteMeta(enc.EncodeToString([]byte(part))))
		}
	}
	return regexp.MustCompile(strings.Join(alts, "|"))
}

// assertAbsent fails the test for every canary found in what.
func (c *canary) assertAbsent(t *testing.T, where string, what []byte) {
	t.Helper()
	for label, re := range c.patterns {
		if loc := re.FindIndex(what); loc != nil {
			from, to := max(0, loc[0]-200), min(len(what), loc[1]+200)
			t.Errorf("%s hold the %s: …%q…", where, label, what[from:to])
		}
	}
}

// assertFindable checks the patterns themselves: every canary is found
// in a text that holds them all, in upper case, hex or base64 (at each
// alignment); the amount in plain text, as shown, and in cents.
func (c *canary) assertFindable(t *testing.T) {
	t.Helper()
	plain := fmt.Sprintf(`{"n":"%s %s","m":"%s","d":"%s","e":["%s","%s","%s"]}`,
		c.given, c.family, c.memberID, c.code, c.emailSent, c.emailContact, c.emailRefused)
	for _, prefix := range []string{"", "x", "xy"} {
		text := []byte(prefix + plain)
		for encoding, what := range map[string]string{
			"upper case": strings.ToUpper(string(text)), "hex": hex.EncodeToString(text),
			"base64": base64.StdEncoding.EncodeToString(text), "base64url": base64.RawURLEncoding.EncodeToString(text),
		} {
			for label, re := range c.patterns {
				if label != "amount" && !re.MatchString(what) {
					t.Fatalf("the %s is not found in %s %q", label, encoding, what)
				}
			}
		}
	}
	for _, s := range []string{`{"a":` + c.amount + `}`, "Your share: " + c.share, "USD " + strings.Replace(c.amount, ".", "", 1) + " cents"} {
		if !c.patterns["amount"].MatchString(s) {
			t.Fatalf("the amount is not found in %q", s)
		}
	}
}

// patient is the published CARIN Patient2 as another patient, with the
// canary's name, member id and an email.
func (c *canary) patient(t *testing.T, id, email string) json.RawMessage {
	t.Helper()
	return editJSON(t, fixture(t, "carin-bb-2.0.0/Patient-Patient2.json"), func(p map[string]any) {
		delete(p, "text") // its narrative names the published patient
		p["id"] = id
		p["name"] = []any{map[string]any{"family": c.family, "given": []any{c.given}}}
		p["telecom"] = []any{map[string]any{"system": "email", "value": email}}
		p["identifier"].([]any)[0].(map[string]any)["value"] = c.memberID
	})
}

// eob is the published CARIN inpatient EOB as another claim of patient,
// with these diagnosis codes and the canary amount as the member's share.
func (c *canary) eob(t *testing.T, id, patient string, codes ...string) json.RawMessage {
	t.Helper()
	return editJSON(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), func(e map[string]any) {
		e["id"] = id
		e["patient"] = map[string]any{"reference": "Patient/" + patient}
		var dx []any
		for i, code := range codes {
			dx = append(dx, map[string]any{"sequence": i + 1, "diagnosisCodeableConcept": map[string]any{"coding": []any{
				map[string]any{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}}}})
		}
		e["diagnosis"] = dx
		amount, _ := strconv.ParseFloat(c.amount, 64)
		e["total"] = append(e["total"].([]any), map[string]any{
			"category": map[string]any{"coding": []any{map[string]any{
				"system": "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication", "code": "memberliability"}}},
			"amount": map[string]any{"value": amount, "currency": "USD"}})
	})
}

func (c *canary) collection(t *testing.T, resources ...json.RawMessage) []byte {
	t.Helper()
	var entries []any
	for _, r := range resources {
		var head struct{ ResourceType, ID string }
		json.Unmarshal(r, &head)
		entries = append(entries, map[string]any{"fullUrl": head.ResourceType + "/" + head.ID, "resource": r})
	}
	b, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "collection", "entry": entries})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appointment is the published HL7v2-converted SIU S12 whose Patient
// carries the canary's name, member id and an email, and whose reason is
// the canary diagnosis.
func (c *canary) appointment(t *testing.T) []byte {
	t.Helper()
	return editEntries(t, fixture(t, siuS12), func(r map[string]any) {
		switch r["resourceType"] {
		case "Patient":
			r["name"] = []any{map[string]any{"family": strings.ToUpper(c.family), "given": []any{strings.ToUpper(c.given)}}}
			r["telecom"] = []any{map[string]any{"system": "email", "value": c.emailSent}}
			for _, id := range r["identifier"].([]any) {
				id.(map[string]any)["value"] = c.memberID
			}
		case "Appointment":
			r["reasonCode"] = coded("http://hl7.org/fhir/sid/icd-10-cm", c.code)
		}
	})
}

// redisDumpAll is every key and value in every database of the test's
// Redis server, as text.
func redisDumpAll(t *testing.T, ts *testStack) string {
	t.Helper()
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: ts.app.redis.Addr})
	defer rc.Close()
	n := 16
	if cfg, err := rc.ConfigGet(ctx, "databases").Result(); err == nil {
		if v, err := strconv.Atoi(cfg["databases"]); err == nil {
			n = v
		}
	}
	var dump strings.Builder
	keys := 0
	for db := range n {
		c := redis.NewClient(&redis.Options{Addr: ts.app.redis.Addr, DB: db})
		d, k := dumpRedisDB(t, c)
		c.Close()
		dump.WriteString(d)
		keys += k
	}
	if keys == 0 {
		t.Fatal("no keys in Redis: nothing was enqueued, so a scan would prove nothing")
	}
	return dump.String()
}

// taskErrors are the errors of every task Asynq keeps to retry or in its
// archive, with their payloads.
func taskErrors(t *testing.T, ts *testStack) string {
	t.Helper()
	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: ts.app.redis.Addr, DB: ts.app.redis.DB})
	defer in.Close()
	queues, err := in.Queues()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, q := range queues {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){in.ListRetryTasks, in.ListArchivedTasks} {
			tasks, err := list(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				fmt.Fprintf(&out, "%s %s %s\n%s\n", q, task.ID, task.LastErr, task.Payload)
			}
		}
	}
	return out.String()
}

// assertAbsentFromDatabase checks every column of every table: text and
// JSON as the database shows them, bytea (the sealed columns) as stored.
func (c *canary) assertAbsentFromDatabase(t *testing.T, ts *testStack) {
	t.Helper()
	ctx := context.Background()
	var cols []struct{ TableName, ColumnName, DataType string }
	if err := ts.app.store.RawScan(ctx, &cols, `SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`); err != nil {
		t.Fatal(err)
	}
	if len(cols) == 0 {
		t.Fatal("no columns found")
	}
	for _, col := range cols {
		where := col.TableName + "." + col.ColumnName
		if col.DataType == "bytea" {
			var values [][]byte
			if err := ts.app.store.RawScan(ctx, &values, fmt.Sprintf(`SELECT %q FROM %q WHERE %q IS NOT NULL`, col.ColumnName, col.TableName, col.ColumnName)); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			c.assertAbsent(t, where, bytes.Join(values, []byte("\n")))
			continue
		}
		var values []string
		if err := ts.app.store.RawScan(ctx, &values, fmt.Sprintf(`SELECT %q::text FROM %q WHERE %q IS NOT NULL`, col.ColumnName, col.TableName, col.ColumnName)); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		c.assertAbsent(t, where, []byte(strings.Join(values, "\n")))
	}
}
