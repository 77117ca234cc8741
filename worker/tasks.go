package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

// TypeProcessEvent is the task that builds and delivers an event's notices.
const TypeProcessEvent = store.TaskProcessEvent

const payloadContext = "asynq:" + TypeProcessEvent

// eventTask is the task payload, sealed before it reaches Redis.
type eventTask struct {
	TenantID string `json:"tenant_id"`
	EventID  int64  `json:"event_id"`
}

// Client enqueues tasks with sealed payloads.
type Client struct {
	asynq *asynq.Client
	keys  *seal.Keyring
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
	return &Client{asynq: asynq.NewClient(opt), keys: keys, MaxRetry: 20}
}

// Close releases the Redis connection.
func (c *Client) Close() error { return c.asynq.Close() }

// EnqueueEvent schedules an event for processing. The task id is derived from
// the event, so enqueuing twice while the first is pending is a no-op.
func (c *Client) EnqueueEvent(ctx context.Context, tenantID string, eventID int64) error {
	plain, err := json.Marshal(eventTask{TenantID: tenantID, EventID: eventID})
	if err != nil {
		return err
	}
	task := asynq.NewTask(TypeProcessEvent, c.keys.Seal(plain, payloadContext))
	_, err = c.asynq.EnqueueContext(ctx, task,
		asynq.TaskID("event:"+strconv.FormatInt(eventID, 10)),
		asynq.MaxRetry(c.MaxRetry), asynq.Timeout(2*time.Minute), asynq.Queue("default"))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue event %d: %w", eventID, err)
	}
	return nil
}

func openEventTask(keys *seal.Keyring, payload []byte) (eventTask, error) {
	plain, err := keys.Open(payload, payloadContext)
	if err != nil {
		return eventTask{}, err
	}
	var t eventTask
	if err := json.Unmarshal(plain, &t); err != nil {
		return eventTask{}, fmt.Errorf("decode task payload: %w", err)
	}
	return t, nil
}

// TypeFetch is the task that fetches what a notification did not carry.
const TypeFetch = store.TaskFetch

const fetchPayloadContext = "asynq:" + TypeFetch

type fetchTask struct {
	TenantID string `json:"tenant_id"`
	FetchID  int64  `json:"fetch_id"`
}

// EnqueueFetch schedules a fetch; like events, its task id makes it idempotent.
func (c *Client) EnqueueFetch(ctx context.Context, tenantID string, fetchID int64) error {
	plain, err := json.Marshal(fetchTask{TenantID: tenantID, FetchID: fetchID})
	if err != nil {
		return err
	}
	task := asynq.NewTask(TypeFetch, c.keys.Seal(plain, fetchPayloadContext))
	_, err = c.asynq.EnqueueContext(ctx, task,
		asynq.TaskID("fetch:"+strconv.FormatInt(fetchID, 10)),
		asynq.MaxRetry(c.MaxRetry), asynq.Timeout(2*time.Minute), asynq.Queue("default"))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue fetch %d: %w", fetchID, err)
	}
	return nil
}

func openFetchTask(keys *seal.Keyring, payload []byte) (fetchTask, error) {
	plain, err := keys.Open(payload, fetchPayloadContext)
	if err != nil {
		return fetchTask{}, err
	}
	var t fetchTask
	if err := json.Unmarshal(plain, &t); err != nil {
		return fetchTask{}, fmt.Errorf("decode task payload: %w", err)
	}
	return t, nil
}
