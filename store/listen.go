package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Listen delivers a signal on the returned channel whenever a transaction
// that notified channelName commits, until ctx ends. Signals coalesce: one
// waiting signal stands for any number of notifications. It holds one
// connection of the pool, and reconnects after a failure; a listener that
// may miss signals while reconnecting should also look now and then.
func (s *Store) Listen(ctx context.Context, channelName string) <-chan struct{} {
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for ctx.Err() == nil {
			_ = s.listenOnce(ctx, channelName, signal)
			signal() // something may have been missed while not listening
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return out
}

func (s *Store) listenOnce(ctx context.Context, channelName string, signal func()) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		c := driverConn.(*stdlib.Conn).Conn()
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{channelName}.Sanitize()); err != nil {
			return err
		}
		defer c.Exec(context.WithoutCancel(ctx), "UNLISTEN *") //nolint:errcheck // the connection goes back to the pool
		for {
			if _, err := c.WaitForNotification(ctx); err != nil {
				return err
			}
			signal()
		}
	})
}
