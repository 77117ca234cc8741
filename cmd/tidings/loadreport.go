package main

import (
	"fmt"
	"io"
	"math"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidings-health/tidings/config"
)

// num formats a figure: whole, with thousands separators, from 100 up;
// three significant digits below.
func num(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	if math.Abs(x) < 100 {
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	digits := strconv.FormatInt(int64(math.Round(math.Abs(x))), 10)
	var b strings.Builder
	if x < 0 {
		b.WriteByte('-')
	}
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ms(d time.Duration) string   { return num(float64(d)/float64(time.Millisecond)) + " ms" }
func secs(d time.Duration) string { return num(d.Seconds()) + " s" }

// per is x per delivered notice.
func (r repResult) per(x float64) string { return num(x / float64(max(1, r.Mails))) }

// serviceDefaults are the settings serve and worker take when no variable
// sets them.
func serviceDefaults() config.Config {
	cfg, _ := config.FromEnv(func(string) (string, bool) { return "", false })
	return cfg
}

// printLoadHeader prints the machine, the code and the settings.
func printLoadHeader(w io.Writer, o eobLoad, reps int) {
	def := serviceDefaults()
	fmt.Fprintln(w, "tidings load: EOB notices end to end (full-resource notifications)")
	fmt.Fprintf(w, "machine: %s\n", machine())
	fmt.Fprintf(w, "commit: %s\n", commit())
	clients := fmt.Sprintf("%d clients (closed loop)", o.clients)
	if o.rate > 0 {
		clients = fmt.Sprintf("fixed arrival rate %s/s (open loop)", num(o.rate))
	}
	prefill := "none"
	switch {
	case o.prefill > 0 && o.prefillVia == prefillSQL:
		prefill = fmt.Sprintf("about %s events: %s notifications through serve and worker, their rows then copied by SQL with new keys (the copies keep the originals' timestamps, sealed contents and audit hashes, so their audit chain does not verify)",
			num(float64(o.prefill)), num(float64(min(o.prefill, o.warmup))))
	case o.prefill > 0:
		prefill = fmt.Sprintf("%s notifications through serve and worker", num(float64(o.prefill)))
	}
	patients := "all for the example's patient"
	if o.patients > 1 {
		patients = fmt.Sprintf("for %s patients in turn", num(float64(o.patients)))
	}
	fmt.Fprintf(w, "settings: %d notifications %s, %s, %d rep(s) on fresh stacks, baselines %s each, prefill %s\n", o.n, patients, clients, reps, o.baseline, prefill)
	limit := fmt.Sprintf("default (%s/s, burst %d, per client address and per subscription)", num(def.RatePerSecond), def.RateBurst)
	if o.settings.RatePerSecond > 0 {
		limit = fmt.Sprintf("TIDINGS_RATE_PER_SECOND=%s, TIDINGS_RATE_BURST=%d (-rate-limit)", num(o.settings.RatePerSecond), max(1, int(2*o.settings.RatePerSecond)))
	}
	conc := fmt.Sprintf("default (%d)", def.Concurrency)
	if o.settings.Concurrency > 0 {
		conc = fmt.Sprintf("TIDINGS_WORKER_CONCURRENCY=%d (-worker-concurrency)", o.settings.Concurrency)
	}
	prio := fmt.Sprintf("default (nice %d)", def.WorkerNice)
	if o.settings.WorkerNice != "" {
		prio = fmt.Sprintf("TIDINGS_WORKER_NICE=%s (-worker-nice)", o.settings.WorkerNice)
	}
	fmt.Fprintf(w, "services: tidings serve and tidings worker as separate processes of this binary, configured by TIDINGS_* variables only; rate limit %s; worker concurrency %s; worker priority %s\n", limit, conc, prio)
	fmt.Fprintln(w, "mail: a STARTTLS catcher inside this command that counts messages and keeps none; the window ends when it accepts the last expected mail")
}

// printRep prints one measurement, or with median the median of several
// (per figure; without the lists).
func printRep(w io.Writer, o eobLoad, r repResult, median bool) {
	if r.Servers != "" {
		fmt.Fprintf(w, "servers: %s\n", r.Servers)
	}
	fmt.Fprintf(w, "baseline postgres: %s single-row transactions/s (%d clients, %d KB rows, BEGIN; INSERT; COMMIT for %s)\n",
		num(r.Base.PGRate), o.clients, baselineRowBytes>>10, o.baseline)
	fmt.Fprintf(w, "baseline smtp: %s mails/s reusing connections, %s mails/s one connection each (%d clients, STARTTLS, %.1f KB mails)\n",
		num(r.Base.SMTPReuse), num(r.Base.SMTPEach), o.clients, float64(r.Base.SMTPMailBytes)/1024)
	if p := r.Prefill; p.Events > 0 {
		copied := ""
		if p.Copies > 0 {
			copied = fmt.Sprintf(", then their rows copied %s times with new keys by SQL", num(float64(p.Copies)))
			if len(p.Tables) > 0 {
				copied += " (" + strings.Join(p.Tables, ", ") + ")"
			}
		}
		fmt.Fprintf(w, "prefill: %s events before the window: %s notifications delivered through serve and worker in %s (%s/s, rate limit lifted, untimed)%s; %s in all; serve and worker then restarted\n",
			num(float64(p.Events)), num(float64(p.Sent)), secs(p.Through), num(float64(p.Sent)/p.Through.Seconds()), copied, secs(p.Time))
	}
	how := fmt.Sprintf("from %d clients", o.clients)
	since := "its first attempt"
	if o.rate > 0 {
		how = fmt.Sprintf("at a fixed arrival rate of %s/s", num(o.rate))
		since = "its scheduled time"
	}
	fmt.Fprintf(w, "intake: %s notifications/s (%s accepted in %s %s, worker running)\n", num(r.IntakeRate), num(float64(r.Accepted)), secs(r.IntakeTime), how)
	fmt.Fprintf(w, "intake latency: p50 %s, p90 %s, p99 %s, max %s (a notification, from %s to its 2xx)\n", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), since)
	tenth := make([]string, len(r.P99Tenths))
	for i, d := range r.P99Tenths {
		tenth[i] = ms(d)
	}
	fmt.Fprintf(w, "intake latency p99 by tenth of the notifications, in the order of %s: %s\n", strings.TrimPrefix(since, "its "), strings.Join(tenth, ", "))
	first := ""
	if r.FirstErr != "" && !median {
		first = " (first: " + cut(r.FirstErr, 80) + ")"
	}
	fmt.Fprintf(w, "intake non-2xx: %s throttled (429, retried after Retry-After), %s other non-2xx or no answer%s\n", num(float64(r.Throttled)), num(float64(r.Failed)), first)
	fmt.Fprintf(w, "end to end: %s notices/s (%s in %s, first POST to last mail accepted) = %s × postgres baseline, %s × smtp baseline\n",
		num(r.E2ERate), num(float64(r.Mails)), secs(r.E2ETime), num(r.E2ERate/r.Base.PGRate), num(r.E2ERate/r.Base.SMTPReuse))
	parts := make([]string, len(r.Tenths))
	for i, t := range r.Tenths {
		parts[i] = num(t)
	}
	fmt.Fprintf(w, "end to end by tenth of the mails: %s notices/s (last tenth / first tenth %s)\n", strings.Join(parts, ", "), num(r.Tenths[9]/r.Tenths[0]))
	fmt.Fprintf(w, "delivered: %s mails of %s accepted notifications (%.1f KB each)\n", num(float64(r.Mails)), num(float64(r.Accepted)), float64(r.MailBytes)/1024)
	fmt.Fprintf(w, "statements per delivered notice: %s (%s calls sent by serve and worker; of these, %s per notice are BEGIN/COMMIT/ROLLBACK/SAVEPOINT)\n",
		r.per(float64(r.Costs.Statements)), num(float64(r.Costs.Statements)), r.per(float64(r.Costs.TxControl)))
	fmt.Fprintf(w, "nested statements per delivered notice: %s (%s calls run by Postgres inside those: foreign-key checks, functions)\n",
		r.per(float64(r.Costs.Nested)), num(float64(r.Costs.Nested)))
	fmt.Fprintf(w, "transactions per delivered notice: %s (%s commits, %s rollbacks in the Tidings database)\n",
		r.per(float64(r.Costs.Commits+r.Costs.Rollbacks)), num(float64(r.Costs.Commits)), num(float64(r.Costs.Rollbacks)))
	fmt.Fprintf(w, "statement time per delivered notice: %s ms (top-level statements, lock waits included)\n", r.per(r.Costs.ExecMS))
	fmt.Fprintf(w, "memory: serve %s MiB, worker %s MiB peak RSS (VmHWM), together %s MiB\n",
		num(float64(r.RSSServe)/(1<<20)), num(float64(r.RSSWorker)/(1<<20)), num(float64(r.RSSServe+r.RSSWorker)/(1<<20)))
	if es, ew := r.EndServe, r.EndWorker; es.Anon+ew.Anon > 0 {
		mib := func(b int64) string { return num(float64(b) / (1 << 20)) }
		fmt.Fprintf(w, "memory at the last mail: serve %s MiB own (anonymous) + %s MiB file-backed, worker %s + %s MiB; "+
			"both map the same tidings binary, whose pages the kernel holds once, so together they hold between %s MiB (own + the larger file-backed part) and %s MiB (the sum of RSS)\n",
			mib(es.Anon), mib(es.File), mib(ew.Anon), mib(ew.File),
			mib(es.Anon+ew.Anon+max(es.File, ew.File)), mib(es.Anon+es.File+ew.Anon+ew.File))
	}
	if r.NiceServe.Threads > 0 && r.NiceWorker.Threads > 0 {
		fmt.Fprintf(w, "priority at the last mail: serve %s, worker %s (TIDINGS_WORKER_NICE)\n", r.NiceServe, r.NiceWorker)
	}
	fmt.Fprintf(w, "cpu in the window: serve %s, worker %s, postgres %s, redis %s, this command (clients, mail catcher) %s; %d cores × %s = %s\n",
		secs(r.CPUServe), secs(r.CPUWorker), secs(r.CPUPostgres), secs(r.CPURedis), secs(r.CPUSelf), runtime.NumCPU(), secs(r.E2ETime), secs(time.Duration(runtime.NumCPU())*r.E2ETime))
	if all := r.CPUServe + r.CPUWorker + r.CPUPostgres + r.CPURedis + r.CPUSelf; all > 0 {
		sys := r.SysServe + r.SysWorker + r.SysPostgres + r.SysRedis + r.SysSelf
		fmt.Fprintf(w, "of it in the kernel (system time): serve %s, worker %s, postgres %s, redis %s, this command %s; %s%% of the CPU time above (system calls, scheduling, page faults; interrupt work counts to whichever process it interrupts)\n",
			secs(r.SysServe), secs(r.SysWorker), secs(r.SysPostgres), secs(r.SysRedis), secs(r.SysSelf), num(100*float64(sys)/float64(all)))
	}
	if r.Unsettled > 0 {
		fmt.Fprintf(w, "unsettled: %s tasks still queued a minute after the last mail\n", num(float64(r.Unsettled)))
	}
	if median {
		return
	}
	fmt.Fprintln(w, "top statements by calls (serve and worker):")
	for _, st := range r.Costs.Top {
		fmt.Fprintf(w, "  %9s calls  %s\n", num(float64(st.Calls)), st.label())
	}
	fmt.Fprintln(w, "top statements by time (serve and worker; lock waits included):")
	for _, st := range r.Costs.TopTime {
		fmt.Fprintf(w, "  %9s ms  %s calls  %s\n", num(st.MS), num(float64(st.Calls)), st.label())
	}
	statuses := make([]string, 0, len(r.After.Notices))
	for st, n := range r.After.Notices {
		statuses = append(statuses, fmt.Sprintf("%s %s", num(float64(n)), st))
	}
	sort.Strings(statuses)
	fmt.Fprintf(w, "notices after the run: %s\n", strings.Join(statuses, ", "))
	fmt.Fprintf(w, "database after the run: %s events, %s MiB\n", num(float64(r.After.Events)), num(float64(r.After.DBBytes)/(1<<20)))
	printWrites(w, r)
}

// printWrites prints the rows written per delivered notice from the
// window's start until serve and worker stopped, table by table, and the
// index entries they made at most.
func printWrites(w io.Writer, r repResult) {
	var ins, upd, hot, del, toast, entries int64
	var parts []string
	for _, t := range r.After.Writes {
		ins, upd, hot, del, toast = ins+t.Inserted, upd+t.Updated, hot+t.HOT, del+t.Deleted, toast+t.Toast
		entries += (t.Inserted+t.Updated-t.HOT)*int64(t.Indexes) + t.Toast
		part := fmt.Sprintf("%s %s/%s/%s (%d indexes", t.Table, r.per(float64(t.Inserted)), r.per(float64(t.Updated)), r.per(float64(t.Deleted)), t.Indexes)
		if t.HOT > 0 {
			part += fmt.Sprintf("; %s updates HOT", r.per(float64(t.HOT)))
		}
		if t.Toast > 0 {
			part += fmt.Sprintf("; %s TOAST chunks", r.per(float64(t.Toast)))
		}
		parts = append(parts, part+")")
	}
	fmt.Fprintf(w, "rows written per delivered notice, from the window's start until serve and worker stopped: %s inserted (and %s TOAST chunks), %s updated (%s of them HOT), %s deleted; up to %s index entries (an insert or a non-HOT update enters every index; a partial one only when its row matches)\n",
		r.per(float64(ins)), r.per(float64(toast)), r.per(float64(upd)), r.per(float64(hot)), r.per(float64(del)), r.per(float64(entries)))
	fmt.Fprintf(w, "  by table, inserted/updated/deleted: %s\n", strings.Join(parts, "; "))
}

// label is the statement's text, marked when Postgres ran it inside another.
func (st statement) label() string {
	if st.Nested {
		return "(nested) " + st.Query
	}
	return st.Query
}

// medianRep is, figure by figure, the median of the reps' numbers.
func medianRep(reps []repResult) repResult {
	var out repResult
	vals := make([]reflect.Value, len(reps))
	for i := range reps {
		vals[i] = reflect.ValueOf(&reps[i]).Elem()
	}
	medianInto(reflect.ValueOf(&out).Elem(), vals)
	return out
}

func medianInto(dst reflect.Value, srcs []reflect.Value) {
	switch dst.Kind() {
	case reflect.Struct, reflect.Array:
		part, n := reflect.Value.Index, dst.Len
		if dst.Kind() == reflect.Struct {
			part, n = reflect.Value.Field, dst.NumField
		}
		for i := range n() {
			parts := make([]reflect.Value, len(srcs))
			for k, s := range srcs {
				parts[k] = part(s, i)
			}
			medianInto(part(dst, i), parts)
		}
	case reflect.Int, reflect.Int64:
		xs := make([]float64, len(srcs))
		for k, s := range srcs {
			xs[k] = float64(s.Int())
		}
		dst.SetInt(int64(math.Round(medianOf(xs))))
	case reflect.Float64:
		xs := make([]float64, len(srcs))
		for k, s := range srcs {
			xs[k] = s.Float()
		}
		dst.SetFloat(medianOf(xs))
	}
	// Strings, maps and slices (lists, versions) have no median.
}

func medianOf(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
