package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

// claimedNotice is a run's first notice with its delivery claimed by an
// attempt (status sending, attempt 1) that never finishes.
func claimedNotice(t *testing.T, s *Store, resourceID string) (delivery.Notice, delivery.Delivery) {
	t.Helper()
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", resourceID, "1")
	w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/" + resourceID, EventID: &ev}, t0)
	mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
	n, err := s.EnsureRunNotice(ctx, mustLoad(t, s, w.ID), "confirm", "appointment.confirmation", "appointment", ev)
	if err != nil {
		t.Fatal(err)
	}
	dl, proceed, err := s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{})
	if err != nil || !proceed {
		t.Fatalf("first claim: %v %v", proceed, err)
	}
	return n, dl
}

func deliveryStatus(t *testing.T, s *Store, id int64) (delivery, notice string) {
	t.Helper()
	d, err := s.DeliveryByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.Status, d.NoticeStatus
}

// A later attempt that finds the delivery still "sending" (the first one's
// process died after the relay may have taken it) marks it unknown, in a
// commit of its own, and does not send; the notice waits for an operator.
func TestLaterAttemptMarksUnfinishedDeliveryUnknown(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	n, dl := claimedNotice(t, s, "a1")
	for i := range 2 {
		_, proceed, err := s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{})
		if !errors.Is(err, delivery.ErrOutcomeUnknown) || proceed {
			t.Fatalf("claim %d after the unfinished one: proceed=%v err=%v, want ErrOutcomeUnknown", i+2, proceed, err)
		}
	}
	if d, nst := deliveryStatus(t, s, dl.ID); d != delivery.DeliveryUnknown || nst != delivery.NoticePending {
		t.Fatalf("delivery %s, notice %s; want unknown and pending", d, nst)
	}
	if rows := auditRows(t, s, "t1", "delivery.unknown"); len(rows) != 1 {
		t.Fatalf("%d delivery.unknown audit rows, want 1", len(rows))
	}
	list, err := s.UnknownDeliveries(ctx, "t1")
	if err != nil || len(list) != 1 || list[0].ID != dl.ID || list[0].NoticeID != n.ID || list[0].Channel != "email" {
		t.Fatalf("unknown list %+v, %v", list, err)
	}
	if other, _ := s.UnknownDeliveries(ctx, "t2"); len(other) != 0 {
		t.Fatalf("another tenant's list shows %d", len(other))
	}
}

// The reconciler's pass marks unknown only deliveries left sending past
// their lease.
func TestMarkUnfinishedUnknownAfterLease(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	_, old := claimedNotice(t, s, "a1")
	_, fresh := claimedNotice(t, s, "a2")
	if err := s.q(ctx).Exec(`UPDATE deliveries SET updated_at = now() - interval '11 minutes' WHERE id = ?`, old.ID).Error; err != nil {
		t.Fatal(err)
	}
	n, err := s.MarkUnfinishedUnknown(ctx, 10*time.Minute, 100)
	if err != nil || n != 1 {
		t.Fatalf("marked %d, %v; want 1", n, err)
	}
	if d, _ := deliveryStatus(t, s, old.ID); d != delivery.DeliveryUnknown {
		t.Errorf("delivery past its lease is %s", d)
	}
	if d, _ := deliveryStatus(t, s, fresh.ID); d != delivery.DeliverySending {
		t.Errorf("delivery within its lease is %s", d)
	}
}

// An operator resolves an unknown delivery as sent (nothing is sent), or
// asks for a resend, which the next claim with resend takes even though
// the run has ended normally since; a cancelled run's is not resent.
func TestResolveUnknownDelivery(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	n, dl := claimedNotice(t, s, "a1")
	if err := s.ResolveSent(ctx, dl.ID, "cli"); !errors.Is(err, ErrNotUnknown) {
		t.Fatalf("resolving a sending delivery: %v, want ErrNotUnknown", err)
	}
	s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{}) // marks it unknown
	if err := s.ResolveSent(ctx, dl.ID, "cli"); err != nil {
		t.Fatal(err)
	}
	if d, nst := deliveryStatus(t, s, dl.ID); d != delivery.DeliverySent || nst != delivery.NoticeSent {
		t.Fatalf("after resolve --sent: delivery %s, notice %s", d, nst)
	}
	var actors []string
	s.RawScan(ctx, &actors, `SELECT actor FROM audit_log WHERE action = 'delivery.resolved'`)
	if len(actors) != 1 || actors[0] != "cli" {
		t.Fatalf("resolution audited by %v", actors)
	}
	if err := s.ResolveSent(ctx, dl.ID, "cli"); !errors.Is(err, ErrNotUnknown) {
		t.Fatalf("resolving twice: %v", err)
	}

	for _, tc := range []struct {
		outcome string
		proceed bool
	}{{workflow.OutcomeCompleted, true}, {workflow.OutcomeCancelled, false}} {
		n, dl := claimedNotice(t, s, "b-"+tc.outcome)
		s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{}) // marks it unknown
		rec, err := s.RequestResend(ctx, dl.ID, "cli")
		if err != nil || rec.RunID == nil || rec.Step != "confirm" {
			t.Fatalf("request resend: %+v %v", rec, err)
		}
		if err := s.q(ctx).Exec(`UPDATE runs SET status = 'ended', outcome = ? WHERE id = ?`, tc.outcome, *n.RunID).Error; err != nil {
			t.Fatal(err)
		}
		if _, proceed, err := s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{}); proceed || !errors.Is(err, delivery.ErrOutcomeUnknown) {
			t.Fatalf("%s: a claim without resend: %v %v", tc.outcome, proceed, err)
		}
		got, proceed, err := s.BeginDelivery(ctx, n, "email", "", true, delivery.Disclosure{})
		if tc.proceed && (err != nil || !proceed || got.Attempts != 2) {
			t.Fatalf("%s: resend claim: proceed=%v attempts=%d err=%v", tc.outcome, proceed, got.Attempts, err)
		}
		if !tc.proceed && (proceed || !errors.Is(err, delivery.ErrRunEnded)) {
			t.Fatalf("%s: resend claim: proceed=%v err=%v, want ErrRunEnded", tc.outcome, proceed, err)
		}
	}
}

// A batch start that finds its run already there is an event tried before
// by a worker that stopped mid-batch: the deliveries that attempt handed
// to the relay and left "sending" become unknown; those it never handed
// over stay to be sent by the run's re-drive; nothing is written twice.
func TestBatchStartAgainMarksUnfinishedDeliveriesUnknown(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", "b1", "1")
	start := delivery.RunStart{
		Start: journey.Start{Now: t0, State: workflow.State{Step: "confirm", Visited: []string{"confirm"}},
			Run: journey.NewRun{TenantID: "t1", WorkflowID: "reminders", WorkflowVersion: 1, Subject: "Appointment/b1",
				EventID: &ev, PatientIndex: s.PatientIndex("t1", "Patient/p1"), Priority: workflow.PriorityNormal}},
		Notices: []delivery.NoticeStart{{Step: "confirm", Template: "appointment.confirmation", Type: "appointment",
			PortalToken: "tok-b1", Status: delivery.NoticePending, Channel: "email"}},
	}
	first, err := s.BeginStarts(ctx, []delivery.RunStart{start})
	if err != nil || !first[0].Created || first[0].Deliveries[0].ID == 0 {
		t.Fatalf("first start: %+v, %v", first, err)
	}
	dl := first[0].Deliveries[0]
	// Claimed but never handed over: a retry leaves it to be sent again.
	if _, err := s.BeginStarts(ctx, []delivery.RunStart{start}); err != nil {
		t.Fatal(err)
	}
	if st, _ := deliveryStatus(t, s, dl.ID); st != delivery.DeliverySending {
		t.Fatalf("a delivery never handed over is %s after a retry, want still sending (to be re-driven)", st)
	}
	if n, _, err := s.BeginDelivery(ctx, first[0].Notices[0], "email", "", false, delivery.Disclosure{}); err != nil || n.Attempts != 1 {
		t.Fatalf("the re-drive's claim of a delivery never handed over: %+v, %v; want attempt 1", n, err)
	}
	// Handed over (attempt 1) and never finished: a retry marks it unknown.
	again, err := s.BeginStarts(ctx, []delivery.RunStart{start})
	if err != nil || again[0].Created {
		t.Fatalf("second start: %+v, %v", again, err)
	}
	if st, nst := deliveryStatus(t, s, dl.ID); st != delivery.DeliveryUnknown || nst != delivery.NoticePending {
		t.Fatalf("after the second start: delivery %s, notice %s; want unknown, pending", st, nst)
	}
	if rows := auditRows(t, s, "t1", "delivery.unknown"); len(rows) != 1 {
		t.Fatalf("%d delivery.unknown audit rows, want 1", len(rows))
	}
	var deliveries int
	s.RawScan(ctx, &deliveries, `SELECT count(*) FROM deliveries`)
	if deliveries != 1 {
		t.Fatalf("%d deliveries, want 1", deliveries)
	}
}
