package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("load [flags]", `Measures Tidings on this machine and prints a plain-text report, one figure a line.

The default (full-resource) mode starts PostgreSQL (with pg_stat_statements), Redis
and a STARTTLS mail catcher, prepares the database as an operator would (tidings
migrate up, subscription add, workflow install --builtins), and runs tidings serve
and tidings worker as separate processes of this binary configured only by TIDINGS_*
variables, with their default settings unless -rate-limit, -worker-concurrency or
-worker-nice is given. In the same run it first measures two baselines: single-row Postgres
transactions (BEGIN; INSERT one 12 KB row; COMMIT) and bare STARTTLS sends to the
same catcher. Then it posts N distinct EOB notifications (copies of one published
example with new ids and event numbers) from C clients, or at a fixed arrival rate
with -rate, while the worker runs; the window runs from the first POST until the
catcher accepts the last expected mail, and nothing reads Postgres inside it. It
reports intake rate and latency (and the latency's p99 by tenth of the
notifications, so that a tail at one moment shows as such), notices/s end to
end and as ratios to the baselines, the rate by tenth of the run, statements
and transactions per delivered notice (pg_stat_statements, pg_stat_database), the top statements, the peak RSS of
serve and worker, the nice values their threads run at (the worker lowers its
own: TIDINGS_WORKER_NICE), and the CPU time of each process (and how much of it
the kernel took). -reps K repeats all of it on fresh stacks and prints the median of each
figure.

-mode id-only (the worker reads each EOB from a FHIR server inside this command)
and -mode workflows (N appointment runs; how late reminders go out) run the API and
the worker inside this command, and say so. Nothing leaves this machine.`, stderr)
	mode := fs.String("mode", "full-resource", "full-resource (serve and worker as separate processes), id-only or workflows (both in-process)")
	n := fs.Int("n", 20000, "notifications to post (-mode workflows: appointments, default 100000)")
	conc := fs.Int("c", 16, "concurrent clients, and connections of each baseline")
	reps := fs.Int("reps", 1, "full-resource: measure this many times, each on a fresh stack, and print the medians")
	rate := fs.Float64("rate", 0, "full-resource: post at this fixed arrival rate (notifications/s, open loop) instead of from -c clients as fast as they are answered")
	rateLimit := fs.Float64("rate-limit", 0, "full-resource: serve's TIDINGS_RATE_PER_SECOND (burst twice that); 0: its default")
	workers := fs.Int("worker-concurrency", 0, "TIDINGS_WORKER_CONCURRENCY; 0: the worker's default (in-process modes: 20)")
	nice := fs.Int("worker-nice", -1, "full-resource: TIDINGS_WORKER_NICE, the nice value the worker lowers its threads to (0: as started); -1: the worker's default")
	patients := fs.Int("patients", 1, "full-resource: spread the notifications over this many patients (Patient/load-0 …), each with a contact registered through the API; 1: all for the example's own patient")
	prefill := fs.Int("prefill", 0, "full-resource: first grow the tables to about this many events (untimed, serve and worker without the rate limit), then restart serve and worker and measure")
	prefillVia := fs.String("prefill-via", prefillSQL, "how -prefill grows the tables: sql (send -prefill-warmup notifications through serve and worker, then copy the rows they wrote, with new keys, by SQL) or intake (send them all through serve and worker)")
	warmup := fs.Int("prefill-warmup", 1000, "with -prefill-via sql: how many notifications go through serve and worker before their rows are copied")
	baseline := fs.Duration("baseline", 5*time.Second, "full-resource: how long each baseline runs")
	stall := fs.Duration("stall", 2*time.Minute, "full-resource: give up when no mail arrives for this long; id-only: when no notice settles for this long")
	near := fs.Int("due", 2000, "with -mode workflows: of the N runs, how many have a reminder due during the run")
	apptFile := fs.String("appointment", "fhir/testdata/hl7-fhir-r4-spec/appointment-example.json", "with -mode workflows: the Appointment (or Bundle holding one) to copy")
	tmpl := fs.String("eob", "examples/replay/ExplanationOfBenefit-EOBProfessional1.json", "EOB resource to copy")
	cpuProfile := fs.String("cpuprofile", "", "write CPU profiles: in-process modes, of the whole run to this file; full-resource, of serve and worker (their whole life, each rep) to this path with .serve and .worker added")
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *n <= 0 || *conc <= 0 || *reps <= 0 || *patients <= 0 || *rate < 0 || *rateLimit < 0 || *workers < 0 || *prefill < 0 || *warmup <= 0 || *baseline <= 0 || *stall <= 0 {
		return usageError{"-n, -c, -reps, -patients, -prefill-warmup, -baseline and -stall must be positive; -rate, -rate-limit, -worker-concurrency and -prefill not negative"}
	}
	if *nice < -1 || *nice > 19 {
		return usageError{"-worker-nice must be from 0 to 19, or -1 for the worker's default"}
	}
	niceSetting := ""
	if *nice >= 0 {
		niceSetting = strconv.Itoa(*nice)
	}
	inProcess := *mode == "id-only" || *mode == "workflows"
	if !inProcess && *mode != "full-resource" {
		return usageError{"-mode must be full-resource, id-only or workflows"}
	}
	if *prefillVia != prefillSQL && *prefillVia != prefillIntake {
		return usageError{"-prefill-via must be sql or intake"}
	}
	for _, f := range []string{"reps", "patients", "rate", "rate-limit", "prefill", "prefill-via", "prefill-warmup", "baseline", "stall", "worker-nice"} {
		if inProcess && given[f] && (f != "stall" || *mode != "id-only") {
			return usageError{"-" + f + " is for the full-resource mode"}
		}
	}
	if *cpuProfile != "" && inProcess {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if inProcess && *workers == 0 {
		*workers = 20
	}
	switch *mode {
	case "workflows":
		if !given["n"] {
			*n = 100000
		}
		return runWorkflowLoad(ctx, workflowLoad{runs: *n, due: *near, clients: *conc, workers: *workers, appointment: *apptFile}, stdout, stderr)
	case "id-only":
		return runIDOnlyLoad(ctx, *n, *conc, *workers, *tmpl, *stall, stdout, stderr)
	}
	raw, err := os.ReadFile(*tmpl)
	if err != nil {
		return err
	}
	o := eobLoad{
		n: *n, clients: *conc, rate: *rate, patients: *patients, prefill: *prefill, prefillVia: *prefillVia, warmup: *warmup, baseline: *baseline, stall: *stall,
		settings: serviceSettings{RatePerSecond: *rateLimit, Concurrency: *workers, WorkerNice: niceSetting, CPUProfile: *cpuProfile},
		eob:      raw, prefillRate: 1e6,
		say: sayTo(stderr),
	}
	printLoadHeader(stdout, o, *reps)
	var results []repResult
	for i := 1; i <= *reps; i++ {
		o.say("rep %d of %d: starting a fresh stack …", i, *reps)
		r, err := runEOBRep(ctx, o)
		if err != nil {
			return fmt.Errorf("rep %d: %w", i, err)
		}
		fmt.Fprintf(stdout, "rep %d of %d:\n", i, *reps)
		printRep(stdout, o, r, false)
		results = append(results, r)
	}
	if *reps > 1 {
		fmt.Fprintf(stdout, "median of %d reps:\n", *reps)
		printRep(stdout, o, medianRep(results), true)
	}
	return nil
}
