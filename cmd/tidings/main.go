// Command tidings is the one Tidings binary: serve, worker, migrate, dev,
// load, keys, deliveries, disclosures and audit. Subcommands only wire packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := func() {}
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "worker") {
		ownsProcess = true
		lessGC(ctx)
		stopProfile = profileCPU(os.Args[1])
	}
	err := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "tidings:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// profileCPU writes a CPU profile of this process, until the returned
// function is called, to $TIDINGS_CPU_PROFILE.<command>, when that is set
// (tidings load -cpuprofile sets it for serve and worker).
func profileCPU(command string) func() {
	path := os.Getenv("TIDINGS_CPU_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path + "." + command)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tidings: TIDINGS_CPU_PROFILE:", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

const usage = `tidings turns FHIR notifications into minimum-necessary, policy-checked patient notices.

Usage: tidings <command> [flags]

Commands:
  serve     run the HTTP API (FHIR notification intake, contacts, health)
  worker    run the Asynq worker (notices, delivery), the outbox reconciler
            and the audit chainer
  migrate   apply or inspect database migrations: up | down | status
  dev       run everything locally (Postgres, Redis, mail catcher, API, worker)
            and replay sample notifications
  load      measure intake and delivery throughput on a local stack
  subscription
            add | list: register a FHIR subscription (and its tenant) and make
            its secret; list subscriptions with handshake/heartbeat status
  source    add: register a FHIR server to fetch from (bearer or SMART Backend
            Services; credentials sealed)
  workflow  install --tenant T --builtins | --file F: save and activate
            workflow definitions; list --tenant T
  policy    test [DIR]: run the policies' tests with coverage;
            eval --input FILE [--dir DIR]: decide one sample input
  keys      create --tenant T --role R | list --tenant T | revoke --tenant T ID:
            API keys for /v1; rotate [--check]: re-seal every sealed value
            with the primary key, so an old key can be removed; reindex
            --tenant T | --all [--check]: re-key patient indexes to the
            current blind index key version; new: print a new random key
  deliveries
            unknown [--tenant T]: list deliveries whose outcome is unknown;
            resolve ID --sent | --resend: record one sent, or send it again
  disclosures
            --tenant T --patient Patient/123 [--from --to] [--format csv|json]:
            a patient's accounting of disclosures; purge [--before]: remove
            those past the retention (six years unless configured longer)
  audit     verify [--tenant T]: check the audit chains and their signed
            checkpoints; export --tenant T --from --to: an excerpt an auditor
            can verify; keygen: new chain and checkpoint signing keys
  evidence  --tenant T --from --to --out DIR: what an auditor asks for (policy
            tests and coverage, decision log, audit chain verification, keys,
            the last test run, and the HIPAA safeguards map)
  health    GET a /readyz or /healthz URL and exit 0 when it answers 200
            (for container health checks, where there is no curl)

Configuration comes from TIDINGS_* environment variables; see README.md.
Run "tidings <command> --help" for a command's flags.
`

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"a command is required"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "worker":
		return runWorker(ctx, rest, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "load":
		return runLoad(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "subscription":
		return runSubscription(ctx, rest, stdout, stderr)
	case "source":
		return runSource(ctx, rest, stdout, stderr)
	case "workflow":
		return runWorkflow(ctx, rest, stdout, stderr)
	case "policy":
		return runPolicy(ctx, rest, stdout, stderr)
	case "evidence":
		return runEvidence(ctx, rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "deliveries":
		return runDeliveries(ctx, rest, stdout, stderr)
	case "disclosures":
		return runDisclosures(ctx, rest, stdout, stderr)
	case "health":
		return runHealth(ctx, rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

// action is one command of a command group such as keys or audit.
type action func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// runGroup runs the action of group that args[0] names, or prints the
// group's usage: to stdout when asked for help, else to stderr with an error.
func runGroup(ctx context.Context, group, usage string, actions map[string]action, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{group + " needs a command"}
	}
	if a, ok := actions[args[0]]; ok {
		return a(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown %s command %q", group, args[0])}
}

func newFlags(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tidings "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tidings %s\n\n%s\n", name, summary)
		if hasFlags(fs) {
			fmt.Fprintln(stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}
