package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
)

// Role is what a key may do.
type Role string

// The roles. Admin may do what every other role may.
const (
	Integration Role = "integration"
	Operator    Role = "operator"
	Contacts    Role = "contacts"
	Compliance  Role = "compliance"
	Admin       Role = "admin"
)

// Roles lists every role, in the order the documentation gives them.
var Roles = []Role{Integration, Operator, Contacts, Compliance, Admin}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles, r) {
		return "", fault.Errorf(fault.Invalid, "unknown role %q (want one of integration, operator, contacts, compliance, admin)", s)
	}
	return r, nil
}

// Key is an API key as an administrator sees it: never its secret.
type Key struct {
	ID        string     `json:"id"`
	TenantID  string     `json:"tenant"`
	Role      Role       `json:"role"`
	Name      string     `json:"name,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// usableAt reports whether k may authenticate at t.
func (k Key) usableAt(t time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || t.Before(*k.ExpiresAt))
}

// Principal is who made a request: the key, its tenant and its role.
type Principal struct {
	KeyID    string
	TenantID string
	Role     Role
}

// Actor is the principal's name in the audit log.
func (p Principal) Actor() string { return "key:" + p.KeyID }

// May reports whether the principal's role may use a route that requires
// role.
func (p Principal) May(role Role) bool { return p.Role == role || p.Role == Admin }

// The token's parts: "tdk_" + 16 hex characters of id + "_" + 43 characters
// of base64url secret (32 random bytes).
const (
	tokenPrefix = "tdk_"
	idLen       = 16
	secretLen   = 43
	tokenLen    = len(tokenPrefix) + idLen + 1 + secretLen
)

// newToken returns a fresh key id, its token and the hash to store.
func newToken() (id, token string, hash []byte) {
	var idb [idLen / 2]byte
	var secret [32]byte
	_, _ = rand.Read(idb[:]) // crypto/rand.Read never fails
	_, _ = rand.Read(secret[:])
	id = hex.EncodeToString(idb[:])
	s := base64.RawURLEncoding.EncodeToString(secret[:])
	return id, tokenPrefix + id + "_" + s, hashSecret(s)
}

// splitToken returns a well-formed token's key id and secret.
func splitToken(token string) (id, secret string, ok bool) {
	if len(token) != tokenLen || !strings.HasPrefix(token, tokenPrefix) || token[len(tokenPrefix)+idLen] != '_' {
		return "", "", false
	}
	id = token[len(tokenPrefix) : len(tokenPrefix)+idLen]
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, token[len(tokenPrefix)+idLen+1:], true
}

// hashSecret is what the store keeps of a secret. The secret is 256 random
// bits, so a plain hash cannot be reversed by guessing.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func sameHash(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Store keeps keys; package store implements it.
type Store interface {
	// InsertKey stores a new key with its secret's hash and audits
	// "key.created" by actor in the same transaction.
	InsertKey(ctx context.Context, k Key, secretHash []byte, actor string) error
	// KeyByID returns a key and its secret's hash, or a fault.NotFound error.
	KeyByID(ctx context.Context, id string) (Key, []byte, error)
	// ListKeys returns a tenant's keys, newest first.
	ListKeys(ctx context.Context, tenantID string) ([]Key, error)
	// RevokeKey marks a tenant's key revoked at t and audits "key.revoked"
	// by actor; a fault.NotFound error when the tenant has no such key.
	RevokeKey(ctx context.Context, tenantID, id string, t time.Time, actor string) error
}
