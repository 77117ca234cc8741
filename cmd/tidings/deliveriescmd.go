package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/tidings-health/tidings/delivery"
)

const deliveriesUsage = `Usage: tidings deliveries <command> [flags]

  unknown  list the deliveries whose outcome is unknown (the relay's reply
           was lost, or the worker died mid-send): never retried on their own
  resolve  ID --sent: record one as sent (you found it in the relay's logs);
           ID --resend: send it again through the normal path (policy
           checked again) and record the outcome
`

func runDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "deliveries", deliveriesUsage,
		map[string]action{"unknown": runDeliveriesUnknown, "resolve": runDeliveriesResolve}, args, stdout, stderr)
}

func runDeliveriesUnknown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("deliveries unknown [--tenant T]", `Lists the deliveries whose outcome is unknown, oldest first: id, tenant,
notice, channel, attempts, when, and the Message-ID to look for in the
relay's logs. No patient data.`, stderr)
	tenant := fs.String("tenant", "", "only this tenant's (default: every tenant's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usageError{"deliveries unknown takes no arguments"}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, err := st.UnknownDeliveries(ctx, *tenant)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tNOTICE\tCHANNEL\tATTEMPTS\tSINCE\tMESSAGE-ID")
	for _, d := range ds {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\n", d.ID, d.TenantID, d.NoticeID, d.Channel, d.Attempts,
			d.UpdatedAt.UTC().Format(time.RFC3339), d.MessageID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d deliveries with an unknown outcome\n", len(ds))
	return nil
}

func runDeliveriesResolve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("deliveries resolve ID --sent | --resend", `Resolves a delivery whose outcome is unknown. --sent records it as sent,
sending nothing (you found it in the relay's logs). --resend sends the
notice again as the worker would, with the policy asked again, and records
the outcome (it needs the worker's configuration: database, Redis, keys,
SMTP). Both are audited with the actor "cli".`, stderr)
	sent := fs.Bool("sent", false, "record it as sent")
	resend := fs.Bool("resend", false, "send it again")
	// The flag package stops at the first argument: take the id from
	// either side of the flags.
	var id string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() != 0 {
		id = ""
	}
	deliveryID, err := strconv.ParseInt(id, 10, 64)
	if err != nil || deliveryID <= 0 || *sent == *resend {
		fs.Usage()
		return usageError{"deliveries resolve needs one delivery id and exactly one of --sent and --resend"}
	}
	if *sent {
		st, err := openStoreOnly(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.ResolveSent(ctx, deliveryID, cliActor); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "delivery %d: sent (recorded; nothing was sent)\n", deliveryID)
		return nil
	}
	a, email, err := openWorker(ctx, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer email.Close()
	return a.resendDelivery(ctx, email, "", deliveryID, stdout)
}

// resendDelivery sends an unknown delivery's notice again through the
// journey engine and the delivery service, as the worker sends it, and
// reports what became of it.
func (a *app) resendDelivery(ctx context.Context, email delivery.Channel, placeholderDomain string, id int64, stdout io.Writer) error {
	d, err := a.store.RequestResend(ctx, id, cliActor)
	if err != nil {
		return err
	}
	pol, err := a.tenantPolicies(ctx)
	if err != nil {
		return err
	}
	fetcher := a.fetcher()
	sender, err := a.sender(pol, email, fetcher, placeholderDomain)
	if err != nil {
		return err
	}
	journeys := a.journeys()
	journeys.Sender = sender
	_, sendErr := journeys.Resend(ctx, *d.RunID, d.Step)
	after, err := a.store.DeliveryByID(ctx, id)
	if err != nil {
		return errors.Join(sendErr, err)
	}
	fmt.Fprintf(stdout, "delivery %d: %s (notice %d: %s)\n", id, after.Status, after.NoticeID, after.NoticeStatus)
	if sendErr != nil {
		return fmt.Errorf("resend delivery %d: %w", id, sendErr)
	}
	if after.Status != delivery.DeliverySent {
		return fmt.Errorf("delivery %d was not sent: %s", id, orNone(after.Error))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	return s
}
