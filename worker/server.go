package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// ServerConfig configures the Asynq server.
type ServerConfig struct {
	Concurrency int
	Log         *slog.Logger
}

// NewServer builds the Asynq server and its mux for the handlers.
func NewServer(opt asynq.RedisClientOpt, cfg ServerConfig, h *Handlers) (*asynq.Server, *asynq.ServeMux) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 10
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:     cfg.Concurrency,
		Queues:          Queues,
		ShutdownTimeout: 30 * time.Second, // longer than an SMTP exchange may take
		// Scheduled wake-ups move to their queue when due: look every second
		// (Asynq's default is 5 s, which would make reminders up to 5 s late).
		DelayedTaskCheckInterval: time.Second,
		Logger:                   asynqLogger{log.With("component", "asynq")},
		LogLevel:                 asynq.WarnLevel,
		RetryDelayFunc: func(n int, _ error, _ *asynq.Task) time.Duration {
			// 1 s doubling to 30 min: 20 retries span about seven hours, enough
			// to ride out a relay or database outage.
			d := time.Duration(1<<min(n, 11)) * time.Second
			return min(d, 30*time.Minute)
		},
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			// Task errors are written by our handlers and hold no PHI.
			id, _ := asynq.GetTaskID(ctx)
			log.Warn("task failed", "task_type", t.Type(), "task_id", id, "err", err)
		}),
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeRunWake, h.HandleRunTask)
	if h.Fetcher != nil {
		mux.HandleFunc(TypeFetch, h.HandleFetchTask)
	}
	return srv, mux
}

// asynqLogger adapts slog to Asynq's logger.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
