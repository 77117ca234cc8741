package access

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tidings-health/tidings/fault"
)

// CacheTTL is how long Authenticate trusts what it read of a key: a revoked
// or expired key stops working within this time.
const CacheTTL = 5 * time.Second

// ErrUnauthenticated is the one answer for a missing, malformed, unknown,
// wrong, expired or revoked token, so that a caller learns nothing about
// which keys exist.
var ErrUnauthenticated = fault.New(fault.Unauthorized, "missing or invalid API key")

// Service creates, lists, revokes and checks API keys.
type Service struct {
	Store Store
	Now   func() time.Time // time.Now when nil

	mu    sync.Mutex
	cache map[string]cached // key id → what the store said, for CacheTTL
}

type cached struct {
	key  Key
	hash []byte
	at   time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Create makes a key for tenant with role, valid for ttl (forever when ttl
// is zero), and returns it with its token, which is never shown again.
// actor is who asked, for the audit log.
func (s *Service) Create(ctx context.Context, tenantID string, role Role, name string, ttl time.Duration, actor string) (Key, string, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Key{}, "", err
	}
	if tenantID == "" {
		return Key{}, "", fault.New(fault.Invalid, "a key needs a tenant")
	}
	if ttl < 0 {
		return Key{}, "", fault.New(fault.Invalid, "a key's lifetime must be positive")
	}
	if len(name) > 200 {
		return Key{}, "", fault.New(fault.Invalid, "a key's name is at most 200 characters")
	}
	id, token, hash := newToken()
	now := s.now().UTC().Truncate(time.Microsecond)
	k := Key{ID: id, TenantID: tenantID, Role: role, Name: name, CreatedAt: now}
	if ttl > 0 {
		exp := now.Add(ttl)
		k.ExpiresAt = &exp
	}
	if err := s.Store.InsertKey(ctx, k, hash, actor); err != nil {
		return Key{}, "", err
	}
	return k, token, nil
}

// List returns a tenant's keys, revoked and expired ones included.
func (s *Service) List(ctx context.Context, tenantID string) ([]Key, error) {
	return s.Store.ListKeys(ctx, tenantID)
}

// Revoke stops a tenant's key; it fails with fault.NotFound when the tenant
// has no key with that id.
func (s *Service) Revoke(ctx context.Context, tenantID, id, actor string) error {
	if err := s.Store.RevokeKey(ctx, tenantID, id, s.now().UTC(), actor); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
	return nil
}

// Authenticate returns the principal of a token, or ErrUnauthenticated.
// Other errors mean the store could not be asked.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	id, secret, ok := splitToken(token)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	now := s.now()
	k, hash, err := s.lookup(ctx, id, now)
	if err != nil {
		return Principal{}, err
	}
	if !sameHash(hashSecret(secret), hash) || !k.usableAt(now) {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{KeyID: k.ID, TenantID: k.TenantID, Role: k.Role}, nil
}

func (s *Service) lookup(ctx context.Context, id string, now time.Time) (Key, []byte, error) {
	s.mu.Lock()
	c, ok := s.cache[id]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < CacheTTL && now.Sub(c.at) >= 0 {
		return c.key, c.hash, nil
	}
	k, hash, err := s.Store.KeyByID(ctx, id)
	if errors.Is(err, fault.NotFound) {
		return Key{}, nil, ErrUnauthenticated
	}
	if err != nil {
		return Key{}, nil, err
	}
	s.mu.Lock()
	if s.cache == nil || len(s.cache) > 10000 {
		s.cache = map[string]cached{}
	}
	s.cache[id] = cached{key: k, hash: hash, at: now}
	s.mu.Unlock()
	return k, hash, nil
}
