package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

type workflowLoad struct {
	runs, due, clients, workers int
	appointment                 string // a published Appointment, or a Bundle holding one
}

// Phase 2's reminders fall due from dueLead after its bookings start,
// spread over dueSpread (variables so that a test need not wait 90 s).
var (
	dueLead   = 30 * time.Second
	dueSpread = time.Minute
)

// appointmentIn finds the Appointment in doc (an Appointment, or a Bundle
// holding one) and its first Patient participant's reference; nil when
// there is none. Whatever shape the file has, it answers rather than
// panics.
func appointmentIn(doc map[string]any) (appt map[string]any, patientRef string) {
	appt = doc
	if doc["resourceType"] == "Bundle" {
		entries, _ := doc["entry"].([]any)
		for _, e := range entries {
			entry, _ := e.(map[string]any)
			if res, _ := entry["resource"].(map[string]any); res["resourceType"] == "Appointment" {
				appt = res
				break
			}
		}
	}
	if appt["resourceType"] != "Appointment" {
		return nil, ""
	}
	participants, _ := appt["participant"].([]any)
	for _, p := range participants {
		participant, _ := p.(map[string]any)
		actor, _ := participant["actor"].(map[string]any)
		if ref, _ := actor["reference"].(string); strings.HasPrefix(ref, "Patient/") {
			return appt, ref
		}
	}
	return nil, ""
}

// loadWorkflowID is the built-in appointment workflow without its
// confirmation: the load measures scheduling and wake-ups, not N
// confirmations through SMTP.
const loadWorkflowID = "appointment-reminders-load"

// runWorkflowLoad books appointments (copies of the published SIU S12
// example with new ids and starts) in two phases. First runs-due far-off
// appointments: how fast runs are created, and what the waiting runs cost in
// Redis and Postgres. Then `due` appointments whose 72 h reminder comes due
// within the next minute and a half: how late each reminder is sent after
// its due time, with every other run waiting in the same tables.
func runWorkflowLoad(ctx context.Context, o workflowLoad, stdout, stderr io.Writer) error {
	if o.due <= 0 || o.due >= o.runs {
		return usageError{"-due must be positive and below -n"}
	}
	raw, err := os.ReadFile(o.appointment)
	if err != nil {
		return err
	}
	s, err := startStack(ctx, stackOptions{Concurrency: o.workers, Progress: stderr, NoWorkflows: true})
	if err != nil {
		return err
	}
	defer s.Close()
	var def workflow.Definition
	for _, d := range workflow.Builtins() {
		if d.ID == "appointment-reminders" {
			def = d
		}
	}
	def.ID, def.Steps = loadWorkflowID, def.Steps[1:] // without the confirmation
	if problems := workflow.Validate(def, journey.Registry(nil)); len(problems) > 0 {
		return fmt.Errorf("load workflow: %v", problems)
	}
	if err := s.app.store.InstallWorkflows(ctx, devTenant, []workflow.Definition{def}); err != nil {
		return err
	}
	// The patient's zone is one where it is about noon now, so the reminders
	// fall inside the 09:00–18:00 window and are not moved.
	offset := (12 - time.Now().UTC().Hour() + 24) % 24
	if offset > 12 {
		offset -= 24
	}
	zone := "Etc/GMT"
	if offset != 0 {
		zone = fmt.Sprintf("Etc/GMT%+d", -offset) // Etc/GMT-5 is UTC+5
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", o.appointment, err)
	}
	appt, patientRef := appointmentIn(doc)
	if appt == nil {
		return fmt.Errorf("%s: no Appointment with a Patient participant", o.appointment)
	}
	if err := s.app.store.UpsertContact(ctx, devTenant, patientRef, delivery.Contact{Email: "load-patient@patients.invalid", TimeZone: zone, Source: "api"}); err != nil {
		return err
	}
	booking := func(i int, start time.Time) ([]byte, error) {
		appt["id"] = fmt.Sprintf("load-%d", i)
		appt["start"] = start.Format(time.RFC3339)
		appt["end"] = start.Add(50 * time.Minute).Format(time.RFC3339)
		b, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		return fhir.WrapResources(b, s.BaseURL+"/fhir/r4/Subscription/"+devSubscription, "load", time.Now().UTC())
	}

	rc := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rc.Close()
	redisBefore := redisUsed(ctx, rc)
	far := o.runs - o.due
	fmt.Fprintf(stderr, "phase 1: booking %d appointments 30–60 days ahead with %d clients …\n", far, o.clients)
	t0 := time.Now()
	base := t0.Add(30 * 24 * time.Hour)
	lat, failed, err := postAll(ctx, s, o.clients, far, stderr, func(i int) ([]byte, error) {
		return booking(i, base.Add(time.Duration(i)*(30*24*time.Hour)/time.Duration(far)).Truncate(time.Minute))
	})
	if err != nil {
		return err
	}
	intake := time.Since(t0)
	if err := waitRuns(ctx, s, int64(far-failed), stderr); err != nil {
		return err
	}
	created := time.Since(t0)
	redisAfter := redisUsed(ctx, rc)
	sizes, err := tableSizes(ctx, s)
	if err != nil {
		return err
	}

	fmt.Fprintf(stderr, "phase 2: booking %d appointments whose 72 h reminder is due in %s–%s …\n", o.due, dueLead, dueLead+dueSpread)
	dueAt := make([]time.Time, o.due)
	p2 := time.Now().Add(dueLead).Truncate(time.Second)
	_, failed2, err := postAll(ctx, s, o.clients, o.due, stderr, func(i int) ([]byte, error) {
		dueAt[i] = p2.Add(time.Duration(i) * dueSpread / time.Duration(o.due))
		return booking(far+i, dueAt[i].Add(72*time.Hour))
	})
	if err != nil {
		return err
	}
	delays, err := waitReminders(ctx, s, far, dueAt, o.due-failed2, stderr)
	if err != nil {
		return err
	}

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	fmt.Fprintln(stdout, inProcessNote)
	fmt.Fprintf(stdout, "machine: %s\ncommit: %s\n", machine(), commit())
	fmt.Fprintf(stdout, "settings: %d appointment runs (%d far, %d due now), %d clients, worker concurrency %d\n", o.runs, far, o.due, o.clients, o.workers)
	fmt.Fprintf(stdout, "booking intake: %.0f notifications/s  p50 %s  p99 %s  (non-202: %d)\n",
		float64(far)/intake.Seconds(), pctOf(lat, 0.50), pctOf(lat, 0.99), failed)
	fmt.Fprintf(stdout, "runs created:   %.0f runs/s (%d runs started and waiting in %s)\n", float64(far-failed)/created.Seconds(), far-failed, created.Round(time.Second))
	fmt.Fprintf(stdout, "redis:          %s used with %d runs waiting (%s before; their wake-ups are in Postgres until due within the horizon)\n",
		mib(redisAfter), far-failed, mib(redisBefore))
	fmt.Fprintf(stdout, "postgres:       %s\n", sizes)
	fmt.Fprintf(stdout, "wake-up delay:  due → reminder sent over STARTTLS for %d runs: p50 %s  p99 %s  max %s\n",
		len(delays), pctOf(delays, 0.50), pctOf(delays, 0.99), delays[len(delays)-1].Round(time.Millisecond))
	return nil
}

// postAll posts n notifications built by body from c clients, with a
// progress line to progress every progressEvery, and returns the
// latencies of those accepted, sorted, and the count of those not.
func postAll(ctx context.Context, s *stack, c, n int, progress io.Writer, body func(i int) ([]byte, error)) ([]time.Duration, int, error) {
	bodies := make([][]byte, n)
	for i := range bodies {
		b, err := body(i)
		if err != nil {
			return nil, 0, err
		}
		bodies[i] = b
	}
	p := notifier(s.BaseURL, devSubscription, s.Secret, c, func(i int) []byte { return bodies[i] })
	stop := progressLines(sayTo(progress), func() string {
		return fmt.Sprintf("%d of %d notifications accepted", p.accepted.Load(), n)
	})
	res := p.closedLoop(ctx, c, 0, n)
	stop()
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if len(res.lat) == 0 {
		return nil, 0, fmt.Errorf("no notification was accepted (first failure: %s)", res.firstErr)
	}
	return res.lat, res.failures(), nil
}

// waitRuns waits until n runs wait (their first wait reached), printing a
// progress line every 10 seconds.
func waitRuns(ctx context.Context, s *stack, n int64, progress io.Writer) error {
	last := time.Now()
	for {
		var waiting int64
		if err := s.app.store.RawScan(ctx, &waiting, `SELECT count(*) FROM runs WHERE status = 'waiting' AND step <> ''`); err != nil {
			return err
		}
		if waiting >= n {
			return nil
		}
		if time.Since(last) > progressEvery {
			fmt.Fprintf(progress, "  %d of %d runs waiting …\n", waiting, n)
			last = time.Now()
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitReminders waits until the phase-2 runs have sent their 72 h reminder
// and returns, per run, how long after its due time the message was sent.
func waitReminders(ctx context.Context, s *stack, first int, dueAt []time.Time, want int, progress io.Writer) ([]time.Duration, error) {
	type row struct {
		Subject string
		SentAt  time.Time
	}
	deadline := time.Now().Add(10 * time.Minute)
	last := time.Now()
	for {
		var rows []row
		if err := s.app.store.RawScan(ctx, &rows, `SELECT r.subject, d.updated_at AS sent_at FROM notices n
			JOIN runs r ON r.id = n.run_id JOIN deliveries d ON d.notice_id = n.id
			WHERE n.step = 'reminder-72h' AND d.status = 'sent'`); err != nil {
			return nil, err
		}
		if len(rows) >= want {
			out := make([]time.Duration, 0, len(rows))
			for _, r := range rows {
				var i int
				if _, err := fmt.Sscanf(strings.TrimPrefix(r.Subject, "Appointment/load-"), "%d", &i); err != nil || i < first || i-first >= len(dueAt) {
					return nil, fmt.Errorf("unexpected reminder for %s", r.Subject)
				}
				out = append(out, r.SentAt.Sub(dueAt[i-first]))
			}
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("timed out waiting for the reminders")
		}
		if time.Since(last) > progressEvery {
			fmt.Fprintf(progress, "  %d of %d reminders sent …\n", len(rows), want)
			last = time.Now()
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func redisUsed(ctx context.Context, rc *redis.Client) int64 {
	n, _ := strconv.ParseInt(redisInfo(ctx, rc, "memory")["used_memory"], 10, 64)
	return n
}

// redisInfo is one section of Redis' INFO as a map; empty when Redis does
// not answer.
func redisInfo(ctx context.Context, rc *redis.Client, section string) map[string]string {
	out := map[string]string{}
	info, err := rc.Info(ctx, section).Result()
	if err != nil {
		return out
	}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func pctOf(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(p*float64(len(d))))].Round(10 * time.Microsecond)
}

// tableSizes reports rows and on-disk size (with indexes) of the tables a
// waiting run occupies, and the whole database.
func tableSizes(ctx context.Context, s *stack) (string, error) {
	var parts []string
	for _, t := range []string{"runs", "run_steps", "events", "audit_log"} {
		var r struct {
			N    int64
			Size string
		}
		if err := s.app.store.RawScan(ctx, &r, `SELECT (SELECT count(*) FROM `+t+`) AS n, pg_size_pretty(pg_total_relation_size('`+t+`')) AS size`); err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s %d rows %s", t, r.N, r.Size))
	}
	var db string
	if err := s.app.store.RawScan(ctx, &db, `SELECT pg_size_pretty(pg_database_size(current_database()))`); err != nil {
		return "", err
	}
	return strings.Join(parts, ", ") + "; database " + db, nil
}
