package worker

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/workflow"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}

// fixedClock is a clock a test sets.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *fixedClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

type runEnv struct {
	st     *store.Store
	client *Client
	insp   *asynq.Inspector
	runs   *journey.Engine
	clock  *fixedClock
}

// newRunEnv is a real store on a migrated database and a real Redis DB,
// with a one-step-then-wait workflow active for tenant t1.
func newRunEnv(t *testing.T, def workflow.Definition) *runEnv {
	t.Helper()
	ctx := context.Background()
	keys, _ := seal.ParseKeys("k1:" + seal.NewRandomKey())
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.NewDB(t), kr, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.EnsureTenant(ctx, "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	if err := st.InstallWorkflows(ctx, "t1", []workflow.Definition{def}); err != nil {
		t.Fatal(err)
	}
	addr, db := testenv.NewRedisDB(t)
	opt := RedisOpt(addr, "", db)
	client := NewClient(opt, kr)
	t.Cleanup(func() { client.Close() })
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { insp.Close() })
	clock := &fixedClock{t: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)}
	return &runEnv{st: st, client: client, insp: insp, clock: clock,
		runs: &journey.Engine{Store: st, Queue: client, Clock: clock, Horizon: time.Hour}}
}

// waitOnly waits two hours and ends: no send, so no channel is needed.
var waitOnly = workflow.Definition{ID: "pause", Trigger: workflow.Trigger{APIEvent: "portal.login"},
	Steps: []workflow.Step{{ID: "hold", Type: workflow.StepWait, Duration: "2h"}, {ID: "done", Type: workflow.StepEnd}}}

func (e *runEnv) start(t *testing.T) journey.Wake {
	t.Helper()
	idx := e.st.PatientIndex("t1", "Patient/p1")
	w, created, err := e.st.StartRun(context.Background(), journey.NewRun{TenantID: "t1", WorkflowID: "pause", WorkflowVersion: 1,
		Priority: "normal", Subject: "patient:" + idx, PatientIndex: idx, Facts: workflow.Facts{"patient": "Patient/p1"}}, e.clock.Now())
	if err != nil || !created {
		t.Fatalf("start run: %v %v", created, err)
	}
	return w
}

func (e *runEnv) queued(t *testing.T, queue string) []*asynq.TaskInfo {
	t.Helper()
	var all []*asynq.TaskInfo
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		e.insp.ListPendingTasks, e.insp.ListScheduledTasks, e.insp.ListArchivedTasks, e.insp.ListRetryTasks} {
		tasks, err := list(queue)
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatal(err)
		}
		all = append(all, tasks...)
	}
	return all
}

// A wake-up that ran out of retries sits archived under its task id; the
// run still waits on that seq. Enqueuing it again replaces the dead task
// instead of being refused as a duplicate, and the scheduler does so for
// every overdue run, page after page.
func TestArchivedWakeUpIsReplaced(t *testing.T) {
	e := newRunEnv(t, waitOnly)
	ctx := context.Background()
	w := e.start(t)
	queued, err := e.client.EnqueueRun(ctx, w, 0)
	if err != nil || !queued {
		t.Fatalf("first enqueue: %v %v", queued, err)
	}
	if queued, err := e.client.EnqueueRun(ctx, w, 0); err != nil || queued {
		t.Fatalf("the same wake-up again while queued: queued=%v err=%v; want a no-op", queued, err)
	}
	id := "run:" + itoa(w.ID) + "::" + itoa(w.WakeSeq)
	if err := e.insp.ArchiveTask("workflow", id); err != nil {
		t.Fatal(err)
	}
	if err := e.st.MarkPromoted(ctx, []journey.Wake{w}); err != nil {
		t.Fatal(err)
	}
	// Overdue by more than the slack: the scheduler puts it back.
	e.clock.Add(5 * time.Minute)
	sched := &Scheduler{Store: e.st, Runs: e.runs, Slack: time.Minute, Batch: 1}
	rep, err := sched.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != 1 {
		t.Fatalf("restored %d, want 1", rep.Restored)
	}
	infos := e.queued(t, "workflow")
	if len(infos) != 1 || infos[0].ID != id || infos[0].State == asynq.TaskStateArchived {
		t.Fatalf("queue holds %+v; want the wake-up back, not archived", infos)
	}
}

// Advance takes the run's first step, saves it, and hands the next wake-up
// (two hours on) to the queue; a stale wake-up does nothing; a wake-up
// that comes early does not lose the run.
func TestAdvanceSavesAndSchedules(t *testing.T) {
	e := newRunEnv(t, waitOnly)
	ctx := context.Background()
	w := e.start(t)
	if err := e.advance(ctx, w.ID, w.WakeSeq, nil); err != nil {
		t.Fatal(err)
	}
	run, err := e.st.LoadRun(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	due := e.clock.Now().Add(2 * time.Hour)
	if run.Status != workflow.StatusWaiting || run.Step != "hold" || run.DueAt == nil || !run.DueAt.Equal(due) || len(run.Pending) != 0 {
		t.Fatalf("run after its first wake-up: status %s step %s due %v pending %v", run.Status, run.Step, run.DueAt, run.Pending)
	}
	// Two hours is beyond nothing here: the horizon is an hour, so the
	// wake-up waits in Postgres and Redis holds nothing.
	if infos := e.queued(t, "workflow"); len(infos) != 0 {
		t.Fatalf("queue holds %d tasks; a wake-up beyond the horizon belongs in Postgres", len(infos))
	}
	// The old seq is stale: nothing changes.
	if err := e.advance(ctx, w.ID, w.WakeSeq, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := e.st.LoadRun(ctx, w.ID); again.WakeSeq != run.WakeSeq {
		t.Fatalf("a stale wake-up moved the run: seq %d → %d", run.WakeSeq, again.WakeSeq)
	}
	// Within the horizon the scheduler promotes it, with a delay.
	e.clock.Add(90 * time.Minute)
	sched := &Scheduler{Store: e.st, Runs: e.runs}
	if rep, err := sched.Once(ctx); err != nil || rep.Promoted != 1 {
		t.Fatalf("promoted %d, %v; want 1", rep.Promoted, err)
	}
	// An early wake-up (another host's clock) keeps the run waiting and
	// queues a wake-up of its own for the due time.
	if err := e.advance(ctx, w.ID, run.WakeSeq, nil); err != nil {
		t.Fatal(err)
	}
	early, _ := e.st.LoadRun(ctx, w.ID)
	if early.Status != workflow.StatusWaiting || early.Step != "hold" || early.WakeSeq == run.WakeSeq {
		t.Fatalf("early wake-up: status %s step %s seq %d", early.Status, early.Step, early.WakeSeq)
	}
	found := false
	for _, info := range e.queued(t, "workflow") {
		found = found || info.ID == "run:"+itoa(w.ID)+":hold:"+itoa(early.WakeSeq)
	}
	if !found {
		t.Fatal("the early wake-up did not queue one for the run's new seq")
	}
	// At the due time the run ends.
	e.clock.Set(due)
	if err := e.advance(ctx, w.ID, early.WakeSeq, nil); err != nil {
		t.Fatal(err)
	}
	done, _ := e.st.LoadRun(ctx, w.ID)
	if done.Status != workflow.StatusEnded || done.Outcome != workflow.OutcomeCompleted {
		t.Fatalf("at the due time: status %s outcome %s", done.Status, done.Outcome)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A go-to into another workflow ends this run ("goto") and starts that
// workflow for the same subject, once.
func TestGotoStartsTheOtherWorkflow(t *testing.T) {
	first := workflow.Definition{ID: "first", Trigger: workflow.Trigger{APIEvent: "portal.login"},
		Steps: []workflow.Step{{ID: "over", Type: workflow.StepGoto, Workflow: "pause"}}}
	e := newRunEnv(t, first)
	ctx := context.Background()
	if err := e.st.InstallWorkflows(ctx, "t1", []workflow.Definition{waitOnly}); err != nil {
		t.Fatal(err)
	}
	idx := e.st.PatientIndex("t1", "Patient/p1")
	w, _, err := e.st.StartRun(ctx, journey.NewRun{TenantID: "t1", WorkflowID: "first", WorkflowVersion: 1, Priority: "normal",
		Subject: "patient:" + idx, PatientIndex: idx, Facts: workflow.Facts{"patient": "Patient/p1"}}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.advance(ctx, w.ID, w.WakeSeq, nil); err != nil {
		t.Fatal(err)
	}
	runs, err := e.st.RunsForSubject(ctx, "t1", "", "patient:"+idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].WorkflowID != "first" || runs[0].Status != "ended" || runs[0].Outcome != workflow.OutcomeGoto ||
		runs[1].WorkflowID != "pause" || runs[1].Status != "waiting" {
		t.Fatalf("runs %+v; want first ended by goto and pause started", runs)
	}
}

// scriptedSender stands in for the policy and SMTP path (exercised end to
// end in cmd/tidings) where a test needs something to happen while a send
// is under way.
type scriptedSender struct {
	calls  []string
	during func(step string, n int) error
}

func (s *scriptedSender) Send(ctx context.Context, req journey.Send) (bool, error) {
	s.calls = append(s.calls, req.Action.Step)
	if s.during != nil {
		return false, s.during(req.Action.Step, len(s.calls))
	}
	return false, nil
}

// advance processes one wake-up with a sender (nil: none).
func (e *runEnv) advance(ctx context.Context, runID, seq int64, s *scriptedSender) error {
	e.runs.Sender = nil
	if s != nil {
		e.runs.Sender = s
	}
	return e.runs.Advance(ctx, "t1", runID, seq)
}

func (e *runEnv) startSubject(t *testing.T, wf string) journey.Wake {
	t.Helper()
	idx := e.st.PatientIndex("t1", "Patient/p1")
	w, created, err := e.st.StartRun(context.Background(), journey.NewRun{TenantID: "t1", WorkflowID: wf, WorkflowVersion: 1,
		Priority: "normal", Subject: "Appointment/a1", PatientIndex: idx, Facts: workflow.Facts{"patient": "Patient/p1"}}, e.clock.Now())
	if err != nil || !created {
		t.Fatalf("start run: %v %v", created, err)
	}
	return w
}

// wakeQueuedNow reports whether the run's current wake-up waits in Redis
// to be processed now (pending), not scheduled for later.
func (e *runEnv) wakeQueuedNow(t *testing.T, runID int64) (journey.Run, bool) {
	t.Helper()
	run, err := e.st.LoadRun(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := e.insp.ListPendingTasks("workflow")
	for _, task := range tasks {
		if strings.HasPrefix(task.ID, "run:"+itoa(runID)+":") && strings.HasSuffix(task.ID, ":"+itoa(run.WakeSeq)) {
			return run, true
		}
	}
	return run, false
}

func sendsDef(steps ...workflow.Step) workflow.Definition {
	return workflow.Definition{ID: "sends", Trigger: workflow.Trigger{Event: "appointment.booked"}, Steps: steps}
}

// Work left when a wake-up's rounds run out (a send decided in the last
// round, an event that came during a send) is picked up by a wake-up queued
// at once, not at the run's due time.
func TestWorkLeftOverIsWokenAtOnce(t *testing.T) {
	t.Run("a send decided in the last round", func(t *testing.T) {
		e := newRunEnv(t, sendsDef(
			workflow.Step{ID: "a", Type: workflow.StepSend, Channel: "email", Template: "appointment.confirmation"},
			workflow.Step{ID: "w1", Type: workflow.StepWaitEvent, Events: []string{"delivered"}, Timeout: "72h", OnTimeout: "done"},
			workflow.Step{ID: "b", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
			workflow.Step{ID: "done", Type: workflow.StepEnd}))
		ctx := context.Background()
		w := e.startSubject(t, "sends")
		s := &scriptedSender{during: func(string, int) error {
			_, err := e.st.RecordDelivered(ctx, "t1", "Patient/p1", "Appointment/a1", e.clock.Now())
			return err
		}}
		if err := e.advance(ctx, w.ID, w.WakeSeq, s); err != nil {
			t.Fatal(err)
		}
		run, queued := e.wakeQueuedNow(t, w.ID)
		if !queued {
			t.Fatalf("sends %v, run pending %v due %v: the decided send waits for its grace period", s.calls, run.Pending, run.DueAt)
		}
		if err := e.advance(ctx, w.ID, run.WakeSeq, s); err != nil {
			t.Fatal(err)
		}
		if done, _ := e.st.LoadRun(ctx, w.ID); !slices.Equal(s.calls, []string{"a", "b"}) || done.Status != workflow.StatusEnded {
			t.Fatalf("sends %v, run %s; want a then b and the run ended", s.calls, done.Status)
		}
	})
	t.Run("an event during the last round's send", func(t *testing.T) {
		e := newRunEnv(t, sendsDef(
			workflow.Step{ID: "a", Type: workflow.StepSend, Channel: "email", Template: "appointment.confirmation"},
			workflow.Step{ID: "w1", Type: workflow.StepWaitEvent, Events: []string{"x"}, Timeout: "72h", OnTimeout: "late"},
			workflow.Step{ID: "b", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
			workflow.Step{ID: "w2", Type: workflow.StepWaitEvent, Events: []string{"y"}, Timeout: "72h", OnTimeout: "late"},
			workflow.Step{ID: "c", Type: workflow.StepSend, Channel: "email", Template: "appointment.survey"},
			workflow.Step{ID: "done", Type: workflow.StepEnd},
			workflow.Step{ID: "late", Type: workflow.StepEnd}))
		ctx := context.Background()
		w := e.startSubject(t, "sends")
		s := &scriptedSender{during: func(step string, n int) error {
			switch {
			case step == "a" && n == 1:
				return errors.New("relay deferred") // retried from Postgres
			case step == "b":
				_, _, err := e.st.RecordEngagement(ctx, "t1", "Patient/p1", "Appointment/a1", "y", nil, e.clock.Now())
				return err
			}
			return nil
		}}
		if err := e.advance(ctx, w.ID, w.WakeSeq, s); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.st.RecordEngagement(ctx, "t1", "Patient/p1", "Appointment/a1", "x", nil, e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(10 * time.Second) // the deferred retry comes due
		for i := 0; i < 4; i++ {
			run, _ := e.st.LoadRun(ctx, w.ID)
			if run.Status == workflow.StatusEnded {
				break
			}
			if err := e.advance(ctx, w.ID, run.WakeSeq, s); err != nil {
				t.Fatal(err)
			}
		}
		run, _ := e.st.LoadRun(ctx, w.ID)
		if !slices.Equal(s.calls, []string{"a", "a", "b", "c"}) || run.Status != workflow.StatusEnded || run.Outcome != workflow.OutcomeCompleted {
			t.Fatalf("sends %v, run %s %s at %s; want a (failed), a, b, c and the run completed without waiting 72 h", s.calls, run.Status, run.Outcome, run.Step)
		}
	})
}
