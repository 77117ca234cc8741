package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
)

// Wake-ups asked for in a burst are sent as a few notifications, at most
// one per interval, and the last comes after the last ask: a commit is
// never left without a notification after it.
func TestWakerCoalescesAndNeverDropsTheLast(t *testing.T) {
	var mu sync.Mutex
	var sent []time.Time
	w := &waker{every: 20 * time.Millisecond, notify: func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, time.Now())
		return nil
	}}
	start := time.Now()
	var last time.Time
	for range 200 {
		w.wake()
		last = time.Now()
		time.Sleep(500 * time.Microsecond)
	}
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond) // the sender's last interval ends
	mu.Lock()
	defer mu.Unlock()
	if most := int(elapsed/w.every) + 2; len(sent) < 2 || len(sent) > most {
		t.Errorf("200 wake-ups over %v sent %d notifications, want 2 to %d (one per %v)", elapsed, len(sent), most, w.every)
	}
	if len(sent) > 0 && sent[len(sent)-1].Before(last) {
		t.Errorf("the last notification (%v) came before the last wake-up (%v)", sent[len(sent)-1].Sub(start), last.Sub(start))
	}
	w.mu.Lock()
	busy := w.busy
	w.mu.Unlock()
	if busy {
		t.Error("the sender still runs after a quiet interval")
	}
}

// Against Postgres: commits of new events one after another reach a
// listener as fewer notifications than commits, one of them after the
// last commit; a notification that brings only duplicates wakes nobody.
func TestInsertEventsWakesListenersAfterCommit(t *testing.T) {
	s, url, _ := mustStoreAt(t)
	// An interval far longer than a commit, so that coalescing shows even
	// when a loaded machine makes each commit take longer than wakeEvery.
	s.eventsWake.every = 250 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+EventsChannel); err != nil {
		t.Fatal(err)
	}
	event := func(i int) intake.NewEvent {
		id := fmt.Sprintf("wake-%d", i)
		return intake.NewEvent{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit", ResourceID: id,
			VersionID: "1", DedupeKey: "sub1|ExplanationOfBenefit|" + id + "|v:1", Record: fhir.Event{Focus: json.RawMessage(`{}`)}}
	}
	const commits = 40
	for i := range commits {
		if _, err := s.InsertEvents(ctx, []intake.NewEvent{event(i)}); err != nil {
			t.Fatal(err)
		}
	}
	lastCommit := time.Now()
	got, after := notificationsFor(t, conn, time.Second)
	if got == 0 || got >= commits {
		t.Errorf("%d commits of new events gave %d notifications, want between 1 and %d", commits, got, commits-1)
	}
	if after.Before(lastCommit) {
		t.Errorf("no notification after the last commit (the last came %v before it)", lastCommit.Sub(after))
	}
	// Only duplicates: nothing new to claim.
	if _, err := s.InsertEvents(ctx, []intake.NewEvent{event(0)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := notificationsFor(t, conn, 500*time.Millisecond); n != 0 {
		t.Errorf("a duplicate woke the listener %d times", n)
	}
}

// notificationsFor counts the notifications conn receives within d and
// says when the last arrived.
func notificationsFor(t *testing.T, conn *pgx.Conn, d time.Duration) (int, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n int
	var last time.Time
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() == nil {
				t.Fatal(err)
			}
			return n, last
		}
		n++
		last = time.Now()
	}
}
