package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	mail "github.com/wneessen/go-mail"

	"github.com/tidings-health/tidings/mailcatch"
)

// baselineRowBytes is the size of a baseline row: about a sealed EOB event.
const baselineRowBytes = 12 << 10

// baselines are what the machine does without Tidings in between.
type baselines struct {
	PGRate        float64 // single-row transactions/s
	SMTPReuse     float64 // mails/s, each client reusing one connection
	SMTPEach      float64 // mails/s, one connection per mail
	SMTPMailBytes int64   // size of one baseline mail as the catcher got it
}

// measureBaselines runs each baseline for d from clients goroutines.
func measureBaselines(ctx context.Context, s *procStack, clients int, d time.Duration) (b baselines, err error) {
	if b.PGRate, err = baselinePostgres(ctx, s.roleURL(baselineDatabase), clients, d); err != nil {
		return b, fmt.Errorf("postgres baseline: %w", err)
	}
	n0, bytes0, _ := s.Mail.Accepted()
	if b.SMTPReuse, err = baselineSMTP(ctx, s.Mail, clients, d, true); err != nil {
		return b, fmt.Errorf("smtp baseline: %w", err)
	}
	if n1, bytes1, _ := s.Mail.Accepted(); n1 > n0 {
		b.SMTPMailBytes = (bytes1 - bytes0) / int64(n1-n0)
	}
	if b.SMTPEach, err = baselineSMTP(ctx, s.Mail, clients, d, false); err != nil {
		return b, fmt.Errorf("smtp baseline: %w", err)
	}
	return b, nil
}

// baselinePostgres is the rate of BEGIN; INSERT one 12 KB row; COMMIT from
// clients connections for d, in a database of its own on the same server.
func baselinePostgres(ctx context.Context, url string, clients int, d time.Duration) (float64, error) {
	setup, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	_, err = setup.Exec(ctx, `CREATE TABLE IF NOT EXISTS baseline (id bigserial PRIMARY KEY, payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`)
	setup.Close(context.Background())
	if err != nil {
		return 0, err
	}
	// Random bytes do not compress, like a sealed resource.
	payload := make([]byte, baselineRowBytes)
	rand.Read(payload)
	conns := make([]*pgx.Conn, clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i := range conns {
		if conns[i], err = pgx.Connect(ctx, url); err != nil {
			return 0, err
		}
	}
	return timed(ctx, clients, d, func(ctx context.Context, i int) error {
		return pgx.BeginFunc(ctx, conns[i], func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO baseline (payload) VALUES ($1)`, payload)
			return err
		})
	})
}

// baselineSMTP is the rate of STARTTLS sends to the catcher from clients
// goroutines for d, each reusing one connection or dialling one per mail.
func baselineSMTP(ctx context.Context, mc *mailcatch.Server, clients int, d time.Duration, reuse bool) (float64, error) {
	host, portText, _ := net.SplitHostPort(mc.Addr())
	port, _ := strconv.Atoi(portText)
	newClient := func() (*mail.Client, error) {
		return mail.NewClient(host, mail.WithPort(port), mail.WithTLSPolicy(mail.TLSMandatory),
			mail.WithTLSConfig(&tls.Config{ServerName: host, RootCAs: mc.CertPool(), MinVersion: tls.VersionTLS12}),
			mail.WithTimeout(30*time.Second))
	}
	cs := make([]*mail.Client, clients)
	for i := range cs {
		c, err := newClient()
		if err != nil {
			return 0, err
		}
		if reuse {
			if err := c.DialWithContext(ctx); err != nil {
				return 0, err
			}
			defer c.Close()
		}
		cs[i] = c
	}
	return timed(ctx, clients, d, func(ctx context.Context, i int) error {
		m, err := baselineMail()
		if err != nil {
			return err
		}
		if reuse {
			return cs[i].Send(m)
		}
		return cs[i].DialAndSendWithContext(ctx, m)
	})
}

// baselineMail is a notice-like message: a short text part and an HTML
// alternative, from and to the addresses Tidings' mails use here.
func baselineMail() (*mail.Msg, error) {
	m := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := m.From("Tidings load <notices@tidings.invalid>"); err != nil {
		return nil, err
	}
	if err := m.To(loadEmail); err != nil {
		return nil, err
	}
	m.SetMessageID()
	m.SetDate()
	m.Subject("A new Explanation of Benefits is ready")
	m.SetBodyString(mail.TypeTextPlain, baselineText)
	m.AddAlternativeString(mail.TypeTextHTML, "<!doctype html><html><body><p>"+strings.ReplaceAll(baselineText, "\n\n", "</p><p>")+"</p></body></html>")
	return m, nil
}

var baselineText = strings.Repeat("Your plan has processed a claim and a new Explanation of Benefits is ready. Open the secure link below to read it.\n\n", 6) +
	"https://portal.example.org/portal/notices/0123456789abcdef0123456789abcdef\n"

// timed runs op from clients goroutines until d has passed and returns the
// operations per second, counted until the last one ended.
func timed(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context, client int) error) (float64, error) {
	var done atomic.Int64
	var first error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx, i); err != nil {
					once.Do(func() { first = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
