package worker

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/store"
)

// claimEnv is a claimer on a real store with the workflow engine, no
// workflows installed: an EOB event is closed with a skipped notice.
func claimEnv(t *testing.T) (*store.Store, *Claimer) {
	t.Helper()
	e := newRunEnv(t, waitOnly)
	if err := e.st.CreateSubscription(context.Background(), intake.Subscription{ID: "sub1", TenantID: "t1"}, "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
	return e.st, &Claimer{Store: e.st, Journeys: e.runs, Batch: 10, MaxAttempts: 3, Lease: time.Minute}
}

func insertEvent(t *testing.T, st *store.Store, typ, id, file string) int64 {
	t.Helper()
	raw, err := os.ReadFile("../fhir/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.InsertEvents(context.Background(), []intake.NewEvent{{TenantID: "t1", SubscriptionID: "sub1",
		ResourceType: typ, ResourceID: id, DedupeKey: "sub1|" + typ + "|" + id, Record: fhir.Event{Focus: json.RawMessage(raw)}}})
	if err != nil {
		t.Fatal(err)
	}
	return got[0].EventID
}

// A claimed batch is processed and marked done; nothing is claimed twice.
func TestClaimerProcessesABatch(t *testing.T) {
	st, c := claimEnv(t)
	ctx := context.Background()
	insertEvent(t, st, "ExplanationOfBenefit", "EOBOral1", "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")
	insertEvent(t, st, "ExplanationOfBenefit", "EOBPharmacy1", "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	if n, err := c.Once(ctx); err != nil || n != 2 {
		t.Fatalf("first pass claimed %d (%v), want 2", n, err)
	}
	if n, err := c.Once(ctx); err != nil || n != 0 {
		t.Fatalf("second pass claimed %d (%v), want nothing", n, err)
	}
	outcomes, err := st.NoticeOutcomes(ctx, "t1")
	if err != nil || len(outcomes) != 2 || outcomes[0].Status != delivery.NoticeSkipped || outcomes[1].Status != delivery.NoticeSkipped {
		t.Fatalf("outcomes %+v (%v): each event closed with a skipped notice (no workflow)", outcomes, err)
	}
	if n, _ := st.Unsettled(ctx, "t1", time.Now()); n != 0 {
		t.Fatalf("%d events still unprocessed", n)
	}
}

// An event that keeps failing is retried with backoff and, after its last
// attempt, given up visibly on its notice, then never claimed again.
func TestClaimerRetriesThenGivesUp(t *testing.T) {
	st, c := claimEnv(t)
	ctx := context.Background()
	id := insertEvent(t, st, "Appointment", "example", "hl7-fhir-r4-spec/appointment-example.json")
	// Another replica holds the appointment: every attempt fails, transiently.
	held := make(chan struct{})
	release := make(chan struct{})
	go st.WithSubjectLock(ctx, "t1", "subscription/sub1", "Appointment/example", func() error { close(held); <-release; return nil })
	<-held
	defer close(release)
	for attempt := 1; attempt <= 3; attempt++ {
		if n, err := c.Once(ctx); err != nil || n != 1 {
			t.Fatalf("attempt %d claimed %d (%v)", attempt, n, err)
		}
		if attempt < 3 {
			// Not due yet: the backoff holds the claim.
			if n, _ := c.Once(ctx); n != 0 {
				t.Fatalf("attempt %d: claimed again before its retry was due", attempt)
			}
			if err := st.RawScan(ctx, new(int), `UPDATE events SET claimed_until = now() WHERE id = ? RETURNING 1`, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	var last struct {
		Attempts  int
		LastError string
		Done      bool
	}
	if err := st.RawScan(ctx, &last, `SELECT attempts, last_error, processed_at IS NOT NULL AS done FROM events WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	outcomes, _ := st.NoticeOutcomes(ctx, "t1")
	if !last.Done || last.Attempts != 2 || len(outcomes) != 1 || outcomes[0].Status != delivery.NoticeFailed ||
		len(outcomes[0].Reasons) != 1 || outcomes[0].Reasons[0][:len("gave up after the last retry")] != "gave up after the last retry" {
		t.Fatalf("after the last attempt: %+v, notices %+v", last, outcomes)
	}
	if n, _ := c.Once(ctx); n != 0 {
		t.Fatal("a given-up event was claimed again")
	}
}

// overlapStore is the real store, counting the claimed batches not yet
// marked processed; a batch's marking waits (up to a bound) until another
// batch is in hand, so that a claimer that takes one batch at a time is
// seen to.
type overlapStore struct {
	*store.Store
	mu          sync.Mutex
	inHand, max int
	overlapped  chan struct{} // closed when two batches were in hand at once
}

func (o *overlapStore) ClaimEvents(ctx context.Context, limit int, lease time.Duration) ([]*journey.Event, error) {
	evs, err := o.Store.ClaimEvents(ctx, limit, lease)
	if len(evs) > 0 {
		o.mu.Lock()
		o.inHand++
		if o.inHand == 2 && o.max < 2 {
			close(o.overlapped)
		}
		o.max = max(o.max, o.inHand)
		o.mu.Unlock()
	}
	return evs, err
}

func (o *overlapStore) MarkEventsProcessed(ctx context.Context, ids []int64) error {
	select {
	case <-o.overlapped:
	case <-time.After(5 * time.Second):
	}
	o.mu.Lock()
	o.inHand--
	o.mu.Unlock()
	return o.Store.MarkEventsProcessed(ctx, ids)
}

// By default two batches are processed at once, and every event is still
// processed exactly once.
func TestClaimerProcessesBatchesAtOnce(t *testing.T) {
	st, c := claimEnv(t)
	files := []string{"EOBInpatient1", "EOBOral1", "EOBOutpatient1", "EOBPharmacy1", "EOBProfessional1", "EOBProfessionalTransportation1"}
	for _, f := range files {
		insertEvent(t, st, "ExplanationOfBenefit", f, "carin-bb-2.0.0/ExplanationOfBenefit-"+f+".json")
	}
	o := &overlapStore{Store: st, overlapped: make(chan struct{})}
	c.Store, c.Batch, c.Workers = o, 2, 0 // the default number of workers
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	waitSettled(t, st)
	cancel()
	<-done
	if o.max < 2 {
		t.Errorf("at most %d batch in hand at once, want 2 (DefaultClaimWorkers)", o.max)
	}
	outcomes, err := st.NoticeOutcomes(context.Background(), "t1")
	if err != nil || len(outcomes) != len(files) {
		t.Fatalf("%d notices (%v), want one per event: %d", len(outcomes), err, len(files))
	}
	for _, o := range outcomes {
		if o.Status != delivery.NoticeSkipped {
			t.Errorf("notice %+v, want skipped (no workflow)", o)
		}
	}
}

// Events stored while the workers are idle wake all of them: two batches
// are in hand at once long before either worker's poll comes round.
func TestClaimerWakesEveryWorker(t *testing.T) {
	st, c := claimEnv(t)
	o := &overlapStore{Store: st, overlapped: make(chan struct{})}
	c.Store, c.Batch, c.Workers, c.Poll = o, 2, 2, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond) // both workers found nothing and wait
	files := []string{"EOBInpatient1", "EOBOral1", "EOBOutpatient1", "EOBPharmacy1"}
	var batch []intake.NewEvent
	for _, f := range files {
		raw, err := os.ReadFile("../fhir/testdata/carin-bb-2.0.0/ExplanationOfBenefit-" + f + ".json")
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, intake.NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: f,
			DedupeKey: "sub1|ExplanationOfBenefit|" + f, Record: fhir.Event{Focus: json.RawMessage(raw)}})
	}
	if _, err := st.InsertEvents(context.Background(), batch); err != nil { // one commit, one signal
		t.Fatal(err)
	}
	select {
	case <-o.overlapped:
	case <-time.After(20 * time.Second):
		t.Fatal("the second worker did not wake: never two batches in hand at once")
	}
	waitSettled(t, st)
}

// waitSettled waits (up to 30 s) until every event of tenant t1 is processed.
func waitSettled(t *testing.T, st *store.Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := st.Unsettled(context.Background(), "t1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still unprocessed after 30 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
