package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
)

const disclosuresUsage = `Usage: tidings disclosures [flags] | tidings disclosures purge [flags]

  (no command)  --tenant T --patient Patient/123 [--from --to] [--format csv|json]:
                the patient's accounting of disclosures (HIPAA 164.528), oldest
                first, recipients opened
  purge         [--before TIME] [--tenant T]: delete the disclosures older than
                the retention (TIDINGS_DISCLOSURE_RETENTION_YEARS, default 6)
                and audit how many per tenant; runs as the database owner
`

func runDisclosures(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return runGroup(ctx, "disclosures", disclosuresUsage, map[string]action{"purge": runDisclosuresPurge}, args, stdout, stderr)
	}
	return runDisclosuresList(ctx, args, stdout, stderr)
}

// disclosurePage is how many entries one query reads.
const disclosurePage = 500

func runDisclosuresList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("disclosures --tenant T --patient Patient/123 [--from T] [--to T] [--format csv|json]",
		`Prints a patient's accounting of disclosures (HIPAA 164.528) in a tenant,
oldest first: when, status (sent; unknown: may have gone out; viewed),
channel and recipient, the kind of notice and how much of it (full,
redacted and which fields, portal-only), the purpose, and the notice and
delivery ids. The patient is looked up by its blind index; the output holds
the recipients' addresses: keep it as you would PHI. It needs the sealing
keys (TIDINGS_SEAL_KEYS, TIDINGS_BLIND_INDEX_KEY). See also: tidings disclosures purge --help.`, stderr)
	tenant := fs.String("tenant", "", "the tenant")
	patient := fs.String("patient", "", "the patient: Patient/{id}")
	from := fs.String("from", "", "from this time (RFC 3339) or date, inclusive")
	to := fs.String("to", "", "until this time or date, exclusive")
	format := fs.String("format", "csv", "csv | json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	q := delivery.DisclosureQuery{TenantID: *tenant, PatientRef: *patient, Limit: disclosurePage}
	var problems []string
	if !subscriptionID.MatchString(*tenant) {
		problems = append(problems, "--tenant is required: 1-64 of A-Z a-z 0-9 . _ -")
	}
	if !api.IsPatientRef(*patient) {
		problems = append(problems, "--patient must be Patient/ followed by 1-64 of A-Z a-z 0-9 - .")
	}
	var err error
	if q.From, err = api.ParseDisclosureTime(*from); err != nil {
		problems = append(problems, "--from: "+err.Error())
	}
	if q.To, err = api.ParseDisclosureTime(*to); err != nil {
		problems = append(problems, "--to: "+err.Error())
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		problems = append(problems, "--to must be after --from")
	}
	if *format != "csv" && *format != "json" {
		problems = append(problems, "--format must be csv or json")
	}
	if fs.NArg() != 0 {
		problems = append(problems, "no arguments are taken besides the flags")
	}
	if len(problems) > 0 {
		fs.Usage()
		return usageError{strings.Join(problems, "; ")}
	}
	st, err := openOperatorStore(ctx, true)
	if err != nil {
		return err
	}
	defer st.Close()
	var all []api.DisclosureBody
	for {
		ds, next, err := st.Disclosures(ctx, q)
		if err != nil {
			return err
		}
		for _, d := range ds {
			all = append(all, api.ToDisclosureBody(d))
		}
		if next.ID == 0 {
			break
		}
		q.After = next
	}
	if *format == "json" {
		if all == nil {
			all = []api.DisclosureBody{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			return err
		}
	} else if err := writeDisclosuresCSV(stdout, all); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d disclosures\n", len(all))
	return nil
}

func writeDisclosuresCSV(w io.Writer, ds []api.DisclosureBody) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"id", "at", "status", "channel", "recipient", "notice_type", "detail", "redacted", "purpose", "notice_id", "delivery_id"})
	for _, d := range ds {
		_ = cw.Write([]string{strconv.FormatInt(d.ID, 10), d.At.UTC().Format(time.RFC3339), d.Status, d.Channel, d.Recipient, d.NoticeType,
			d.Detail, strings.Join(d.Redacted, ";"), d.Purpose, strconv.FormatInt(d.NoticeID, 10), strconv.FormatInt(d.DeliveryID, 10)})
	}
	cw.Flush()
	return cw.Error()
}

func runDisclosuresPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("disclosures purge [--before TIME] [--tenant T]", `Deletes the disclosures made before --before (default: the retention,
TIDINGS_DISCLOSURE_RETENTION_YEARS years back, six unless set longer) and
writes an audit row per tenant with how many it removed (actor "cli").
--before cannot be later than the retention allows. The service's database
role may not delete disclosures: run it with the owner's
TIDINGS_DATABASE_URL, the one migrations run as.`, stderr)
	before := fs.String("before", "", "delete what is older than this time (RFC 3339) or date")
	tenant := fs.String("tenant", "", "only this tenant's (default: every tenant's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || (*tenant != "" && !subscriptionID.MatchString(*tenant)) {
		fs.Usage()
		return usageError{"disclosures purge takes --before and --tenant only"}
	}
	cfg, err := loadConfig(config.RoleMigrate)
	if err != nil {
		return err
	}
	cutoff := cfg.DisclosureCutoff(time.Now().UTC())
	at := cutoff
	if *before != "" {
		if at, err = api.ParseDisclosureTime(*before); err != nil {
			fs.Usage()
			return usageError{"--before: " + err.Error()}
		}
		if at.After(cutoff) {
			return usageError{fmt.Sprintf("--before %s is within the retention of %d years: the earliest allowed now is %s",
				at.Format(time.RFC3339), cfg.DisclosureRetentionYears, cutoff.Format(time.RFC3339))}
		}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	removed, err := st.PurgeDisclosures(ctx, *tenant, at, cliActor)
	if err != nil {
		return err
	}
	tenants := make([]string, 0, len(removed))
	var total int64
	for t, n := range removed {
		tenants, total = append(tenants, t), total+n
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		fmt.Fprintf(stdout, "%s: %d removed\n", t, removed[t])
	}
	fmt.Fprintf(stderr, "%d disclosures made before %s removed (audited)\n", total, at.Format(time.RFC3339))
	return nil
}
