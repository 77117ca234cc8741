package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const loadEOB = "../../examples/replay/ExplanationOfBenefit-EOBProfessional1.json"

// `tidings load` end to end with a tiny N: serve and worker as separate
// processes of the (test) binary, every figure in the report, the counts
// adding up, and nothing left running or on disk afterwards.
func TestLoadReport(t *testing.T) {
	t.Setenv(asTidingsEnv, "1")
	kids, dirs := ourChildren(t), loadDirs(t)
	defer func(every time.Duration) { progressEvery = every }(progressEvery)
	progressEvery = time.Millisecond // a progress line even in this short window
	var out, progress bytes.Buffer
	err := realMain(t.Context(), []string{"load", "-n", "50", "-reps", "1", "-baseline", "300ms", "-eob", loadEOB}, &out, &progress)
	if err != nil {
		t.Fatalf("load: %v\nprogress:\n%s", err, progress.String())
	}
	if !regexp.MustCompile(`(?m)^  \d+ of 50 notifications accepted, \d+ mails …$`).MatchString(progress.String()) {
		t.Errorf("no progress line in the window:\n%s", progress.String())
	}
	report := out.String()
	t.Logf("report:\n%s", report)
	for _, want := range []string{
		"machine: ", "commit: ", "settings: 50 notifications all for the example's patient, 16 clients (closed loop), 1 rep(s)",
		"tidings serve and tidings worker as separate processes", "rate limit default (10,000/s, burst 20000", "worker concurrency default (10)",
		"servers: PostgreSQL ", "intake latency: p50 ", "top statements by calls", "notices after the run: 50 sent\n",
		"database after the run: 50 events", "rows written per delivered notice, from the window's start", " audit_log ", " events 1/",
		"intake non-2xx: 0 throttled (429, retried after Retry-After), 0 other non-2xx or no answer\n",
		"worker priority default (nice 10)\n",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	positive := func(pattern string) float64 {
		t.Helper()
		m := regexp.MustCompile(pattern).FindStringSubmatch(report)
		if m == nil {
			t.Errorf("report lacks %s", pattern)
			return 0
		}
		x, err := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
		if err != nil || x <= 0 {
			t.Errorf("%s: %q is not a positive number", pattern, m[1])
		}
		return x
	}
	positive(`baseline postgres: ([\d,.]+) single-row transactions/s \(16 clients, 12 KB rows`)
	positive(`baseline smtp: ([\d,.]+) mails/s reusing connections`)
	positive(`, ([\d,.]+) mails/s one connection each`)
	positive(`intake: ([\d,.]+) notifications/s \(50 accepted`)
	e2e := positive(`end to end: ([\d,.]+) notices/s \(50 in `)
	positive(`= ([\d,.e-]+) × postgres baseline`)
	positive(`, ([\d,.e-]+) × smtp baseline`)
	if got := positive(`delivered: ([\d,]+) mails of 50 accepted notifications`); got != 50 {
		t.Errorf("delivered %v of 50", got)
	}
	statements := positive(`statements per delivered notice: ([\d,.]+) \(`)
	calls := positive(`\(([\d,]+) calls sent by serve and worker`)
	if statements*50 < calls*0.99 || statements*50 > calls*1.01 {
		t.Errorf("%v statements per notice × 50 notices ≠ %v calls", statements, calls)
	}
	positive(`nested statements per delivered notice: ([\d,.]+)`)
	positive(`transactions per delivered notice: ([\d,.]+)`)
	positive(`statement time per delivered notice: ([\d,.]+) ms`)
	serve, worker := positive(`memory: serve ([\d,.]+) MiB`), positive(`, worker ([\d,.]+) MiB peak RSS`)
	if sum := positive(`together ([\d,.]+) MiB`); sum < (serve+worker)*0.98 || sum > (serve+worker)*1.02 {
		t.Errorf("memory: %v + %v ≠ %v", serve, worker, sum)
	}
	own := positive(`memory at the last mail: serve ([\d,.]+) MiB own`)
	low, high := positive(`together they hold between ([\d,.]+) MiB`), positive(`MiB \(own \+ the larger file-backed part\) and ([\d,.]+) MiB \(the sum of RSS\)`)
	if own >= low || low > high {
		t.Errorf("memory at the last mail: serve's own %v, together between %v and %v", own, low, high)
	}
	cpuServe := positive(`cpu in the window: serve ([\d,.]+) s`)
	positive(`, postgres ([\d,.]+) s`)
	// A short run may give a process no kernel tick: 0 is a fair answer.
	if m := regexp.MustCompile(`of it in the kernel \(system time\): serve ([\d,.]+) s, .*; ([\d,.]+)% of the CPU time above`).FindStringSubmatch(report); m == nil {
		t.Error("report lacks the kernel's part of the CPU time")
	} else {
		sysServe, _ := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
		share, err := strconv.ParseFloat(strings.ReplaceAll(m[2], ",", ""), 64)
		if sysServe > cpuServe || err != nil || share < 0 || share > 100 {
			t.Errorf("kernel time: serve %s s of %v s, %s%% of all", m[1], cpuServe, m[2])
		}
	}
	if m := regexp.MustCompile(`end to end by tenth of the mails: ((?:[\d,.]+, ){9}[\d,.]+) notices/s`).FindStringSubmatch(report); m == nil {
		t.Error("no rate for each tenth")
	} else if e2e > 0 {
		t.Logf("tenths %s; whole run %v/s", m[1], e2e)
	}
	// A tenth holds 5 of the 50 notifications: its p99 is the largest of
	// their latencies, so within the whole run's maximum.
	if m := regexp.MustCompile(`intake latency p99 by tenth of the notifications, in the order of first attempt: ((?:[\d,.]+ ms, ){9}[\d,.]+ ms)\n`).FindStringSubmatch(report); m == nil {
		t.Error("no intake p99 for each tenth")
	} else {
		most := positive(`intake latency: p50 .*, max ([\d,.]+) ms`)
		for _, part := range strings.Split(m[1], ", ") {
			x, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSuffix(part, " ms"), ",", ""), 64)
			if err != nil || x <= 0 || x > most {
				t.Errorf("tenth's p99 %q: not a latency within the run's maximum %v ms", part, most)
			}
		}
	}
	// The worker process lowered its threads' priority (TIDINGS_WORKER_NICE's
	// default); serve kept the one it was started with, this test's.
	if own := threadsNice(os.Getpid()); own.Threads == 0 {
		t.Error("no thread's nice value read for this process")
	} else if want := regexp.MustCompile(fmt.Sprintf(`(?m)^priority at the last mail: serve all \d+ threads at nice %d, worker all \d+ threads at nice %d \(TIDINGS_WORKER_NICE\)$`, own.High, max(10, own.High))); !want.MatchString(report) {
		t.Errorf("report lacks %s", want)
	}
	if strings.Contains(report, "median of") {
		t.Error("a median printed for one rep")
	}
	if strings.Contains(report+progress.String(), loadEmail) {
		t.Error("the patient's email address is in the output")
	}
	assertNothingLeft(t, kids, dirs)
}

// A run that fails half-way (here: no mail within a millisecond of the
// first POST) stops everything it started.
func TestLoadFailureLeavesNothing(t *testing.T) {
	t.Setenv(asTidingsEnv, "1")
	kids, dirs := ourChildren(t), loadDirs(t)
	var out, progress bytes.Buffer
	err := realMain(t.Context(), []string{"load", "-n", "20", "-baseline", "100ms", "-stall", "1ms", "-eob", loadEOB}, &out, &progress)
	if err == nil || !strings.Contains(err.Error(), "no mail for 1ms") {
		t.Fatalf("load: %v, want no mail for 1ms\nprogress:\n%s", err, progress.String())
	}
	assertNothingLeft(t, kids, dirs)
}

// ourChildren lists this process's children: the test servers of
// testenv.Main, and whatever a test started and did not stop.
func ourChildren(t *testing.T) []int {
	t.Helper()
	var kids []int
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(pid); len(f) > 1 && f[0] != "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			kids = append(kids, pid)
		}
	}
	slices.Sort(kids)
	return kids
}

func loadDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "tidings-load-*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// assertNothingLeft checks that the load command stopped every process it
// started and removed its folders.
func assertNothingLeft(t *testing.T, kidsBefore []int, dirsBefore []string) {
	t.Helper()
	if kids := ourChildren(t); !slices.Equal(kids, kidsBefore) {
		t.Errorf("child processes %v after the load, %v before", kids, kidsBefore)
	}
	if dirs := loadDirs(t); !slices.Equal(dirs, dirsBefore) {
		t.Errorf("folders %v after the load, %v before", dirs, dirsBefore)
	}
}

// Bodies are the template with the id and the event number in place, and
// nothing else changed.
func TestEOBNotificationBodies(t *testing.T) {
	raw, err := os.ReadFile(loadEOB)
	if err != nil {
		t.Fatal(err)
	}
	notes, err := newEOBNotifications(raw, "http://127.0.0.1:1/fhir/r4/Subscription/load-eob", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(notes.Patients, []string{"Patient/Patient2"}) {
		t.Errorf("patients %q", notes.Patients)
	}
	a, b := notes.body("load-7", 8), notes.body("load-12", 13)
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &bundle); err != nil || len(bundle.Entry) < 2 {
		t.Fatalf("body does not parse: %v", err)
	}
	var eob struct{ ID, ResourceType string }
	json.Unmarshal(bundle.Entry[1].Resource, &eob)
	if eob.ID != "load-12" || eob.ResourceType != "ExplanationOfBenefit" {
		t.Errorf("focus %s/%s", eob.ResourceType, eob.ID)
	}
	for _, want := range []string{`"event-number","valueString":"13"`, `"events-since-subscription-start","valueString":"13"`, `"ExplanationOfBenefit/load-12"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("body lacks %s", want)
		}
	}
	if bytes.Contains(b, []byte(idMarker)) || bytes.Contains(b, []byte(numberMarker)) {
		t.Error("a marker left in the body")
	}
	same := bytes.ReplaceAll(bytes.ReplaceAll(a, []byte("load-7"), []byte("load-12")), []byte(`"8"`), []byte(`"13"`))
	if !bytes.Equal(same, b) {
		t.Error("two bodies differ in more than the id and the number")
	}
	if !bytes.Contains(b, []byte(`"patient":{"reference":"Patient/Patient2"}`)) {
		t.Error("the example's patient is not the one notified")
	}

	three, err := newEOBNotifications(raw, "http://127.0.0.1:1/fhir/r4/Subscription/load-eob", 3)
	if err != nil {
		t.Fatal(err)
	}
	for number, want := range map[int]string{1: "Patient/load-0", 2: "Patient/load-1", 3: "Patient/load-2", 4: "Patient/load-0"} {
		if !bytes.Contains(three.body("x", number), []byte(`"patient":{"reference":"`+want+`"}`)) {
			t.Errorf("event %d is not about %s", number, want)
		}
	}
	if !slices.Equal(three.Patients, []string{"Patient/load-0", "Patient/load-1", "Patient/load-2"}) {
		t.Errorf("patients %q", three.Patients)
	}
}

func TestTenthsAndMedian(t *testing.T) {
	start := time.Unix(1000, 0)
	times := make([]time.Time, 100)
	for i := range times {
		// 10 mails a second for the first half, 20 for the second.
		if i < 50 {
			times[i] = start.Add(time.Duration(i+1) * 100 * time.Millisecond)
		} else {
			times[i] = start.Add(5*time.Second + time.Duration(i-49)*50*time.Millisecond)
		}
	}
	got := tenths(start, times)
	for k, want := range []float64{10, 10, 10, 10, 10, 20, 20, 20, 20, 20} {
		if got[k] < want*0.999 || got[k] > want*1.001 {
			t.Errorf("tenth %d: %v/s, want %v", k+1, got[k], want)
		}
	}
	// Latencies that began in order 0..99 ms: the first tenth slow.
	began, lat := make([]time.Duration, 100), make([]time.Duration, 100)
	for i := range began {
		j := i * 37 % 100 // recorded out of order, as answers arrive
		began[i] = time.Duration(j) * time.Millisecond
		lat[i] = time.Duration(1+j%10) * time.Millisecond
		if j < 10 {
			lat[i] = time.Second + time.Duration(j)*time.Millisecond
		}
	}
	p99s := latencyTenths(began, lat, 0.99)
	if p99s[0] != time.Second+9*time.Millisecond {
		t.Errorf("first tenth's p99 %v, want 1.009s", p99s[0])
	}
	for k := 1; k < 10; k++ {
		if p99s[k] != 10*time.Millisecond {
			t.Errorf("tenth %d: p99 %v, want 10ms", k+1, p99s[k])
		}
	}
	reps := []repResult{
		{E2ERate: 3, P99: 30 * time.Millisecond, Tenths: [10]float64{1}, Costs: pgCosts{Statements: 9}, FirstErr: "x"},
		{E2ERate: 1, P99: 10 * time.Millisecond, Tenths: [10]float64{5}, Costs: pgCosts{Statements: 1}},
		{E2ERate: 2, P99: 20 * time.Millisecond, Tenths: [10]float64{3}, Costs: pgCosts{Statements: 4}},
	}
	m := medianRep(reps)
	if m.E2ERate != 2 || m.P99 != 20*time.Millisecond || m.Tenths[0] != 3 || m.Costs.Statements != 4 || m.FirstErr != "" {
		t.Errorf("median %+v", m)
	}
	if got := medianRep(reps[:2]); got.E2ERate != 2 || got.Costs.Statements != 5 {
		t.Errorf("median of two: %v, %v", got.E2ERate, got.Costs.Statements)
	}
	for x, want := range map[float64]string{2617.4: "2,617", 58.04: "58", 0.02164: "0.0216", 1234567: "1,234,567", 100: "100"} {
		if got := num(x); got != want {
			t.Errorf("num(%v) = %q, want %q", x, got, want)
		}
	}
}

// The sql prefill copies a real warm-up's rows with new keys (the database's
// own constraints check that every copy is consistent), and the timed run
// then adds its own on top.
func TestLoadPrefillSQL(t *testing.T) {
	t.Setenv(asTidingsEnv, "1")
	var out, progress bytes.Buffer
	err := realMain(t.Context(), []string{"load", "-n", "20", "-prefill", "200", "-prefill-warmup", "40", "-baseline", "100ms", "-eob", loadEOB}, &out, &progress)
	if err != nil {
		t.Fatalf("load: %v\nprogress:\n%s", err, progress.String())
	}
	report := out.String()
	for _, want := range []string{
		"prefill: 200 events before the window: 40 notifications delivered through serve and worker",
		"then their rows copied 4 times with new keys by SQL (",
		"delivered: 20 mails of 20 accepted notifications",
		"notices after the run: 220 sent\n",
		"database after the run: 220 events",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, table := range []string{"events", "runs", "notices", "deliveries", "audit_log"} {
		if !regexp.MustCompile(`by SQL \([^)]*\b` + table + `\b`).MatchString(report) {
			t.Errorf("%s not copied", table)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// The writes reported are those of the window: the counters read when it
// started are taken off, and a table nothing wrote to in it is left out.
func TestWritesSince(t *testing.T) {
	before := []tableWrites{{Table: "audit_log", Inserted: 5, Indexes: 3}, {Table: "tenants", Inserted: 1, Indexes: 1}}
	now := []tableWrites{{Table: "audit_log", Inserted: 75, Indexes: 3}, {Table: "events", Inserted: 10, Updated: 20, HOT: 4, Indexes: 5, Toast: 20},
		{Table: "tenants", Inserted: 1, Indexes: 1}}
	got := writesSince(before, now)
	want := []tableWrites{{Table: "audit_log", Inserted: 70, Indexes: 3}, {Table: "events", Inserted: 10, Updated: 20, HOT: 4, Indexes: 5, Toast: 20}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("writesSince = %+v, want %+v", got, want)
	}
}

// progressLines says its line on every tick until stopped, and stopping it
// twice is harmless.
func TestProgressLines(t *testing.T) {
	defer func(every time.Duration) { progressEvery = every }(progressEvery)
	progressEvery = time.Millisecond
	lines := make(chan string, 1000)
	n := 0
	stop := progressLines(func(format string, args ...any) { lines <- fmt.Sprintf(format, args...) }, func() string {
		n++
		return fmt.Sprintf("%d done", n)
	})
	for want := 1; want <= 3; want++ {
		select {
		case l := <-lines:
			if l != fmt.Sprintf("  %d done …", want) {
				t.Fatalf("line %d: %q", want, l)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no progress line %d in 10 s", want)
		}
	}
	stop()
	stop()
	left := len(lines)
	time.Sleep(20 * time.Millisecond)
	if len(lines) != left {
		t.Errorf("%d lines after stop", len(lines)-left)
	}
}

// The workflows mode end to end with a small N and phase 2's reminders due
// within seconds: every figure printed, every reminder accounted for, and
// nothing left running.
func TestWorkflowLoadReport(t *testing.T) {
	defer func(lead, spread time.Duration) { dueLead, dueSpread = lead, spread }(dueLead, dueSpread)
	dueLead, dueSpread = 3*time.Second, 2*time.Second
	kids := ourChildren(t)
	var out, progress bytes.Buffer
	err := realMain(t.Context(), []string{"load", "-mode", "workflows", "-n", "60", "-due", "10", "-c", "4",
		"-appointment", "../../fhir/testdata/hl7-fhir-r4-spec/appointment-example.json"}, &out, &progress)
	if err != nil {
		t.Fatalf("load: %v\nprogress:\n%s", err, progress.String())
	}
	report := out.String()
	t.Logf("report:\n%s", report)
	for _, want := range []string{
		"in-process: the API and the worker run inside this command", "machine: ", "commit: ",
		"settings: 60 appointment runs (50 far, 10 due now), 4 clients",
		"booking intake: ", "(non-202: 0)", "(50 runs started and waiting in ", "used with 50 runs waiting",
		"postgres:       runs 50 rows", "wake-up delay:  due → reminder sent over STARTTLS for 10 runs: p50 ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if !strings.Contains(progress.String(), "whose 72 h reminder is due in 3s–5s") {
		t.Errorf("progress does not say when the reminders fall due:\n%s", progress.String())
	}
	if after := ourChildren(t); !slices.Equal(after, kids) {
		t.Errorf("child processes %v after the load, %v before", after, kids)
	}
}

// appointmentIn finds the Appointment and its patient in the published
// example and in a Bundle holding it, and answers nil for files of any
// other shape instead of panicking.
func TestAppointmentIn(t *testing.T) {
	raw, err := os.ReadFile("../../fhir/testdata/hl7-fhir-r4-spec/appointment-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var appt map[string]any
	if err := json.Unmarshal(raw, &appt); err != nil {
		t.Fatal(err)
	}
	if got, ref := appointmentIn(appt); got == nil || ref != "Patient/example" {
		t.Errorf("the example: %v, %q", got != nil, ref)
	}
	bundle := map[string]any{"resourceType": "Bundle", "entry": []any{"x", map[string]any{"resource": "y"}, map[string]any{"resource": appt}}}
	if got, ref := appointmentIn(bundle); got == nil || ref != "Patient/example" {
		t.Errorf("in a Bundle: %v, %q", got != nil, ref)
	}
	for name, doc := range map[string]string{
		"no entries":             `{"resourceType":"Bundle","entry":{"resource":{}}}`,
		"entry not an object":    `{"resourceType":"Bundle","entry":[1,"two",null]}`,
		"participant not a list": `{"resourceType":"Appointment","participant":{"actor":{}}}`,
		"actor not an object":    `{"resourceType":"Appointment","participant":[{"actor":"Patient/1"}]}`,
		"no patient":             `{"resourceType":"Appointment","participant":[{"actor":{"reference":"Practitioner/1"}}]}`,
		"not an appointment":     `{"resourceType":"Patient","participant":[{"actor":{"reference":"Patient/1"}}]}`,
	} {
		var d map[string]any
		if err := json.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		if got, ref := appointmentIn(d); got != nil || ref != "" {
			t.Errorf("%s: %v, %q", name, got, ref)
		}
	}
}

// The id-only mode end to end with a small N: the worker reads every EOB
// from the command's FHIR server and every notice goes out.
func TestIDOnlyLoadReport(t *testing.T) {
	kids := ourChildren(t)
	var out, progress bytes.Buffer
	if err := realMain(t.Context(), []string{"load", "-mode", "id-only", "-n", "30", "-c", "4", "-stall", "1m", "-eob", loadEOB}, &out, &progress); err != nil {
		t.Fatalf("load: %v\nprogress:\n%s", err, progress.String())
	}
	report := out.String()
	t.Logf("report:\n%s", report)
	for _, want := range []string{
		"in-process: the API and the worker run inside this command",
		"settings: id-only, 30 notifications, 4 clients, worker concurrency 20, the worker stopped during intake",
		"(non-202: 0)", "(30 sent, 0 denied, 0 failed in ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if after := ourChildren(t); !slices.Equal(after, kids) {
		t.Errorf("child processes %v after the load, %v before", after, kids)
	}
}

// Flags of one mode given to another are refused before anything starts;
// -stall is shared by full-resource and id-only.
func TestLoadRefusesAnotherModesFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-mode", "workflows", "-stall", "1s"}, "-stall is for the full-resource mode"},
		{[]string{"-mode", "id-only", "-reps", "2"}, "-reps is for the full-resource mode"},
		{[]string{"-mode", "id-only", "-stall", "0s"}, "-baseline and -stall must be positive"},
		{[]string{"-mode", "sideways"}, "-mode must be full-resource, id-only or workflows"},
		{[]string{"-mode", "workflows", "-worker-nice", "0"}, "-worker-nice is for the full-resource mode"},
		{[]string{"-worker-nice", "20"}, "-worker-nice must be from 0 to 19"},
	} {
		var out, progress bytes.Buffer
		err := realMain(t.Context(), append([]string{"load"}, c.args...), &out, &progress)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("load %v: %v, want a usage error saying %q", c.args, err, c.want)
		}
		if progress.Len() != 0 {
			t.Errorf("load %v started something:\n%s", c.args, progress.String())
		}
	}
}
