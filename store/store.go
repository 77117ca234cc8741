package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/seal"
)

var (
	// ErrNotFound means the row asked for does not exist (in this tenant).
	ErrNotFound = fault.New(fault.NotFound, "not found")
	// ErrDuplicate means a unique key already holds that value.
	ErrDuplicate = fault.New(fault.Conflict, "exists already")
	// ErrUnknownReference means a row names a tenant (or other parent) that does not exist.
	ErrUnknownReference = fault.New(fault.Conflict, "names a tenant or parent that is not set up")
)

// indexPatient is the purpose of patient references' blind indexes.
const indexPatient = "patient"

// Store is the PostgreSQL adapter. Its zero value is not usable; use Open.
type Store struct {
	db   *gorm.DB
	keys *seal.Keyring
	inTx bool
	// pendingGrace is how long a run's saved actions wait for the task
	// carrying them out before the scheduler re-drives them (PendingGrace).
	pendingGrace time.Duration

	eventWrites *groupCommit[newEventRow, intake.StoredEvent]
	eventsWake  *waker // after events commit
}

// Options tune the connection pool and the store's timing.
type Options struct {
	MaxOpenConns int
	// ApplicationName names the connections in pg_stat_activity (the
	// application_name parameter) unless the URL names them already.
	ApplicationName string
	// PendingGrace overrides PendingGrace (0: the default).
	PendingGrace time.Duration
}

// Open connects to PostgreSQL. GORM's SQL logging stays off: statements carry
// sealed values and identifiers that do not belong in logs.
func Open(ctx context.Context, dbURL string, keys *seal.Keyring, opts Options) (*Store, error) {
	dsn := withApplicationName(dbURL, opts.ApplicationName)
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		TranslateError:         false,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", errors.New(scrubDSN(scrubDSN(err.Error(), dsn), dbURL)))
	}
	if err := scrubValueErrors(db); err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = 20
	}
	sqlDB.SetMaxOpenConns(opts.MaxOpenConns)
	sqlDB.SetMaxIdleConns(opts.MaxOpenConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	st := &Store{db: db, keys: keys, pendingGrace: PendingGrace}
	if opts.PendingGrace > 0 {
		st.pendingGrace = opts.PendingGrace
	}
	// Two commits of events at once at most: while they run, requests
	// queue, and the next commit takes them all (more would commit one
	// event each and gain nothing on a few cores).
	st.eventWrites = newGroupCommit(512, 2, st.insertEvents)
	st.eventsWake = &waker{every: wakeEvery, notify: func(ctx context.Context) error {
		_, err := st.exec(ctx, `SELECT pg_notify($1, '')`, EventsChannel)
		return err
	}}
	return st, nil
}

// withApplicationName adds application_name=name to a postgres:// URL
// that sets none; other URLs, and an empty name, are left as they are.
func withApplicationName(dbURL, name string) string {
	u, err := url.Parse(dbURL)
	if name == "" || err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return dbURL
	}
	q := u.Query()
	if q.Has("application_name") {
		return dbURL
	}
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// scrubDSN keeps the database URL, which may hold a password, out of errors.
func scrubDSN(msg, dsn string) string {
	if dsn == "" {
		return msg
	}
	return strings.ReplaceAll(msg, dsn, "[database url]")
}

// Close releases the pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// InTx runs fn in one transaction; fn's store shares it. An error or panic rolls back.
func (s *Store) InTx(ctx context.Context, fn func(tx *Store) error) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return fn(&Store{db: tx, keys: s.keys, inTx: true, pendingGrace: s.pendingGrace})
	})
}

func (s *Store) q(ctx context.Context) *gorm.DB { return s.db.WithContext(ctx) }

// translate maps driver errors to the package's sentinels.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23505" {
		return fmt.Errorf("%w: %s", ErrDuplicate, pg.ConstraintName)
	}
	if errors.As(err, &pg) && pg.Code == "23503" {
		return fmt.Errorf("%w: %s", ErrUnknownReference, pg.ConstraintName)
	}
	return err
}

// EnsureTenant creates the tenant when it does not exist.
func (s *Store) EnsureTenant(ctx context.Context, id, name string) error {
	return s.q(ctx).Exec(`INSERT INTO tenants (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, name).Error
}

// CreateSubscription registers a subscription with its shared secret.
func (s *Store) CreateSubscription(ctx context.Context, sub intake.Subscription, secret string) error {
	row := Subscription{ID: sub.ID, TenantID: sub.TenantID, SecretHash: intake.SecretHash(secret), Topic: sub.Topic, SourceURL: sub.SourceURL,
		Status: sub.Status, Criteria: sub.Criteria, HeartbeatPeriodS: int(sub.HeartbeatPeriod / time.Second), RemoteRef: sub.RemoteRef}
	if len(sub.SigningKey) > 0 {
		row.HMACKeySealed = s.seal(sub.SigningKey, colSubscriptionHMAC, sub.TenantID, sub.ID)
	}
	if row.Status == "" {
		row.Status = intake.StatusActive
	}
	if sub.SourceID != "" {
		// A subscription fetches only from its own tenant's source.
		var n int64
		if err := s.q(ctx).Raw(`SELECT count(*) FROM fhir_sources WHERE tenant_id = ? AND id = ?`, sub.TenantID, sub.SourceID).Scan(&n).Error; err != nil {
			return err
		}
		if n == 0 {
			return fault.New(fault.Invalid, "source_id names no registered source of this tenant")
		}
		row.SourceID = &sub.SourceID
	}
	err := translate(s.q(ctx).Create(&row).Error)
	if errors.Is(err, ErrDuplicate) {
		// The key is (tenant_id, id): only the caller's own ids conflict.
		return fault.Wrap(err, fault.Conflict, "a subscription with this id exists")
	}
	return err
}

// SubscriptionSecret loads a tenant's subscription (its signing key, if
// any, opened) with the hash of its secret (intake.SecretHash), for intake
// to check the presented one; intake.ErrUnknownSubscription when none.
// tenantID "" (a notify URL without the tenant) finds the subscription only
// while exactly one tenant has that id: an id two tenants share is answered
// as unknown, never as either tenant's.
func (s *Store) SubscriptionSecret(ctx context.Context, tenantID, subscriptionID string) (intake.Subscription, []byte, error) {
	var rows []Subscription
	q := s.q(ctx).Where("id = ?", subscriptionID)
	if tenantID != "" {
		q = q.Where("tenant_id = ?", tenantID)
	}
	if err := q.Limit(2).Find(&rows).Error; err != nil {
		return intake.Subscription{}, nil, err
	}
	if len(rows) != 1 {
		return intake.Subscription{}, nil, intake.ErrUnknownSubscription
	}
	sub, err := s.subscription(rows[0])
	return sub, rows[0].SecretHash, err
}

// subscription converts a row, opening its signing key.
func (s *Store) subscription(row Subscription) (intake.Subscription, error) {
	sub := intake.Subscription{ID: row.ID, TenantID: row.TenantID, Topic: row.Topic, Status: row.Status,
		Criteria: row.Criteria, RemoteRef: row.RemoteRef, SourceURL: row.SourceURL, CreatedAt: row.CreatedAt,
		HeartbeatPeriod: time.Duration(row.HeartbeatPeriodS) * time.Second}
	if row.SourceID != nil {
		sub.SourceID = *row.SourceID
	}
	if len(row.HMACKeySealed) > 0 {
		key, err := s.open(row.HMACKeySealed, colSubscriptionHMAC, row.TenantID, row.ID)
		if err != nil {
			return intake.Subscription{}, fmt.Errorf("subscription %s: open signing key: %w", row.ID, err)
		}
		sub.SigningKey = key
	}
	return sub, nil
}

// RecordStatus records a handshake, heartbeat or query-status answer against a subscription.
//
// remoteStatus is the status the server reports for its Subscription: "error"
// or "off" is taken over (off stops intake); "active", or any handshake,
// makes a requested or erroring subscription active.
func (s *Store) RecordStatus(ctx context.Context, tenantID, subscriptionID, kind, remoteStatus string, eventsSinceStart int64, at time.Time) error {
	return s.InTx(ctx, func(tx *Store) error {
		var sub Subscription
		if err := tx.q(ctx).Where("tenant_id = ? AND id = ?", tenantID, subscriptionID).Take(&sub).Error; err != nil {
			return translate(err)
		}
		updates := map[string]any{}
		switch {
		case remoteStatus == "error" || remoteStatus == "off":
			updates["status"] = remoteStatus
		case (kind == "handshake" || remoteStatus == "active") && (sub.Status == "requested" || sub.Status == "error"):
			updates["status"] = "active" // the server confirmed the channel works
		}
		switch kind {
		case "handshake":
			updates["last_handshake_at"] = at
		case "heartbeat":
			updates["last_heartbeat_at"] = at
			updates["heartbeats"] = gorm.Expr("heartbeats + 1")
			updates["silent_since"] = nil
		}
		if eventsSinceStart > sub.EventsSinceStart {
			updates["events_since_start"] = eventsSinceStart
		}
		if err := tx.q(ctx).Model(&Subscription{}).Where("tenant_id = ? AND id = ?", tenantID, subscriptionID).Updates(updates).Error; err != nil {
			return err
		}
		detail := map[string]any{"remote_status": remoteStatus}
		if st, ok := updates["status"]; ok {
			detail["status"] = st
		}
		return tx.Audit(ctx, AuditRecord{
			TenantID: sub.TenantID, Actor: "subscription:" + subscriptionID, Action: "subscription." + kind,
			SubjectType: "subscription", SubjectID: subscriptionID, Detail: detail,
		})
	})
}

// SubscriptionByID loads one subscription of a tenant.
func (s *Store) SubscriptionByID(ctx context.Context, tenantID, id string) (intake.Subscription, error) {
	var row Subscription
	if err := s.q(ctx).Where("tenant_id = ? AND id = ?", tenantID, id).Take(&row).Error; err != nil {
		return intake.Subscription{}, translate(err)
	}
	return s.subscription(row)
}

// Subscriptions lists every subscription, for operators.
func (s *Store) Subscriptions(ctx context.Context) ([]intake.SubscriptionReport, error) {
	var rows []Subscription
	if err := s.q(ctx).Order("tenant_id, id").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]intake.SubscriptionReport, len(rows))
	for i, r := range rows {
		out[i] = subscriptionReport(r)
	}
	return out, nil
}

// SetSubscriptionHMACKey stores (sealed) the key a tenant's subscription's
// source signs its notifications with; nil removes it.
func (s *Store) SetSubscriptionHMACKey(ctx context.Context, tenantID, subscriptionID string, key []byte) error {
	var sealed []byte
	if len(key) > 0 {
		sealed = s.seal(key, colSubscriptionHMAC, tenantID, subscriptionID)
	}
	res := s.q(ctx).Exec(`UPDATE subscriptions SET hmac_key_sealed = ? WHERE tenant_id = ? AND id = ?`, sealed, tenantID, subscriptionID)
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	return nil
}

// ClaimSignature records the signature of a signed notification for its
// subscription: false when the same signature was claimed before (a
// replay). Signatures signed before forgetBefore are dropped on the way.
func (s *Store) ClaimSignature(ctx context.Context, tenantID, subscriptionID string, signature []byte, signedAt, forgetBefore time.Time) (bool, error) {
	res := s.q(ctx).Exec(`WITH expired AS (DELETE FROM signed_notifications WHERE tenant_id = ? AND subscription_id = ? AND signed_at < ?)
		INSERT INTO signed_notifications (tenant_id, subscription_id, signature, signed_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		tenantID, subscriptionID, forgetBefore, tenantID, subscriptionID, signature, signedAt)
	if res.Error != nil {
		return false, fmt.Errorf("claim signature: %w", translate(res.Error))
	}
	return res.RowsAffected == 1, nil
}

// ReleaseSignature forgets a claimed signature, so that the same signed
// notification may come again (its processing failed before it took effect).
func (s *Store) ReleaseSignature(ctx context.Context, tenantID, subscriptionID string, signature []byte) error {
	return s.q(ctx).Exec(`DELETE FROM signed_notifications WHERE tenant_id = ? AND subscription_id = ? AND signature = ?`,
		tenantID, subscriptionID, signature).Error
}

// scrubValueErrors applies scrub to every statement GORM runs.
func scrubValueErrors(db *gorm.DB) error {
	scrubTx := func(tx *gorm.DB) { tx.Error = scrub(tx.Error) }
	cb := db.Callback()
	for _, err := range []error{
		cb.Create().After("*").Register("tidings:scrub", scrubTx),
		cb.Query().After("*").Register("tidings:scrub", scrubTx),
		cb.Update().After("*").Register("tidings:scrub", scrubTx),
		cb.Delete().After("*").Register("tidings:scrub", scrubTx),
		cb.Row().After("*").Register("tidings:scrub", scrubTx),
		cb.Raw().After("*").Register("tidings:scrub", scrubTx),
	} {
		if err != nil {
			return fmt.Errorf("open database: %w", err)
		}
	}
	return nil
}
