package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/seal"
)

// Task types. Each task only says "work on row N of this tenant now"; the
// row in Postgres holds the truth.
const (
	TypeFetch   = intake.TaskFetch // fetch what a notification did not carry
	TypeRunWake = "run:wake"       // advance a workflow run
)

// Queues and their weights: fetches on default; workflow
// wake-ups on one queue per priority, so a flood of low-priority journeys
// does not hold back an appointment reminder.
var Queues = map[string]int{"default": 4, "workflow_high": 6, "workflow": 3, "workflow_low": 1}

func queueFor(priority string) string {
	switch priority {
	case "high":
		return "workflow_high"
	case "low":
		return "workflow_low"
	}
	return "workflow"
}

// taskPayload is every task's payload, sealed (for its task type) before it
// reaches Redis.
type taskPayload struct {
	TenantID string `json:"tenant_id"`
	ID       int64  `json:"id"`
	Seq      int64  `json:"seq,omitempty"` // run wake-ups: the run's wake_seq
}

// Client enqueues tasks with sealed payloads.
type Client struct {
	asynq     *asynq.Client
	inspector *asynq.Inspector
	keys      *seal.Keyring
	// MaxRetry is how often a failing task is retried before the notice fails.
	MaxRetry int
}

// RedisOpt builds Asynq's connection options with short timeouts so a dead
// Redis is noticed quickly instead of holding requests.
func RedisOpt(addr, password string, db int) asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: addr, Password: password, DB: db,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 20}
}

// NewClient returns an enqueuer; close it with Close.
func NewClient(opt asynq.RedisClientOpt, keys *seal.Keyring) *Client {
	return &Client{asynq: asynq.NewClient(opt), inspector: asynq.NewInspector(opt), keys: keys, MaxRetry: 20}
}

// Close releases the Redis connections.
func (c *Client) Close() error {
	return errors.Join(c.asynq.Close(), c.inspector.Close())
}

// QueueNames are the queues the worker serves, in a fixed order.
func QueueNames() []string {
	names := make([]string, 0, len(Queues))
	for q := range Queues {
		names = append(names, q)
	}
	slices.Sort(names)
	return names
}

// QueueStats reads the depth and lateness of the worker's queues that
// exist yet (a queue appears with its first task), for the metrics: a few
// Redis commands per queue.
func (c *Client) QueueStats(context.Context) ([]metrics.QueueStat, error) {
	existing, err := c.inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("queues: %w", err)
	}
	var out []metrics.QueueStat
	for _, q := range existing {
		if _, ours := Queues[q]; !ours {
			continue
		}
		info, err := c.inspector.GetQueueInfo(q)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", q, err)
		}
		out = append(out, metrics.QueueStat{Queue: q, Pending: info.Pending, Active: info.Active,
			Scheduled: info.Scheduled, Retry: info.Retry, Archived: info.Archived, Latency: info.Latency})
	}
	return out, nil
}

// EnqueueFetch schedules a fetch.
func (c *Client) EnqueueFetch(ctx context.Context, tenantID string, fetchID int64) error {
	return c.enqueue(ctx, TypeFetch, tenantID, fetchID)
}

// EnqueueRun hands a run's wake-up to the queue, to be processed after
// delay. The task id is derived from run, step and seq, so enqueuing the same
// wake-up twice while it is queued is a no-op that reports queued=false.
func (c *Client) EnqueueRun(ctx context.Context, w journey.Wake, delay time.Duration) (bool, error) {
	plain, err := json.Marshal(taskPayload{TenantID: w.TenantID, ID: w.ID, Seq: w.WakeSeq})
	if err != nil {
		return false, err
	}
	task := asynq.NewTask(TypeRunWake, c.keys.Seal(plain, taskPlace(TypeRunWake)))
	id := "run:" + strconv.FormatInt(w.ID, 10) + ":" + w.Step + ":" + strconv.FormatInt(w.WakeSeq, 10)
	queued, err := c.put(ctx, task, queueFor(w.Priority), id, asynq.ProcessIn(max(delay, 0)))
	if err != nil {
		return false, fmt.Errorf("enqueue run %d: %w", w.ID, err)
	}
	return queued, nil
}

// put enqueues a task under its id. If a task with that id is still queued,
// it does nothing and reports queued=false. If one sits archived (it ran out
// of retries, yet its row says the work is still to do, or the reconciler
// would not have asked), it replaces it: the work must not stay stuck behind
// its own dead task.
func (c *Client) put(ctx context.Context, task *asynq.Task, queue, id string, extra ...asynq.Option) (bool, error) {
	opts := append([]asynq.Option{asynq.TaskID(id), asynq.MaxRetry(c.MaxRetry), asynq.Timeout(2 * time.Minute), asynq.Queue(queue)}, extra...)
	_, err := c.asynq.EnqueueContext(ctx, task, opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		info, ierr := c.inspector.GetTaskInfo(queue, id)
		if ierr != nil || info.State != asynq.TaskStateArchived {
			return false, nil
		}
		if err := c.inspector.DeleteTask(queue, id); err != nil {
			return false, err
		}
		_, err = c.asynq.EnqueueContext(ctx, task, opts...)
	}
	return err == nil, err
}

// enqueue seals the payload and enqueues it under a task id derived from the
// row ("event:12"), so enqueuing twice while the first is queued is a no-op.
func (c *Client) enqueue(ctx context.Context, taskType, tenantID string, id int64) error {
	plain, err := json.Marshal(taskPayload{TenantID: tenantID, ID: id})
	if err != nil {
		return err
	}
	kind, _, _ := strings.Cut(taskType, ":")
	task := asynq.NewTask(taskType, c.keys.Seal(plain, taskPlace(taskType)))
	if _, err := c.put(ctx, task, "default", kind+":"+strconv.FormatInt(id, 10)); err != nil {
		return fmt.Errorf("enqueue %s %d: %w", kind, id, err)
	}
	return nil
}

// openTask opens a task's sealed payload.
// taskPlace is where a task payload is sealed for: its task type. A task
// lives in Redis, not in a row; it names its row inside the payload.
func taskPlace(taskType string) seal.Place {
	return seal.Place{Table: "asynq", Column: taskType, Legacy: "asynq:" + taskType}
}

func openTask(keys *seal.Keyring, t *asynq.Task) (taskPayload, error) {
	plain, err := keys.Open(t.Payload(), taskPlace(t.Type()))
	if err != nil {
		return taskPayload{}, err
	}
	var p taskPayload
	if err := json.Unmarshal(plain, &p); err != nil {
		return taskPayload{}, fmt.Errorf("decode task payload: %w", err)
	}
	return p, nil
}
