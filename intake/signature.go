package intake

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/fault"
)

// Why a signed notification is refused. Each names what is wrong, never a
// value sent.
var (
	// ErrBadSignature: X-Signature is missing, not hex, or not the HMAC of
	// "<timestamp>.<body>" under the subscription's key.
	ErrBadSignature = fault.New(fault.Unauthorized, "missing or invalid notification signature")
	// ErrNoSignatureTimestamp: a subscription that signs must send
	// X-Signature-Timestamp; a signature over the body alone could be
	// replayed at any time.
	ErrNoSignatureTimestamp = fault.New(fault.Unauthorized,
		"X-Signature-Timestamp is required: this subscription signs its notifications, and X-Signature must be the HMAC of \"<timestamp>.<body>\"")
	// ErrStaleSignature: the signed timestamp is outside ReplayWindow.
	ErrStaleSignature = fault.New(fault.Unauthorized,
		fmt.Sprintf("X-Signature-Timestamp is outside the replay window (%s of now)", ReplayWindow))
	// ErrReplayedSignature: this very signed request was received before.
	ErrReplayedSignature = fault.New(fault.Conflict,
		"this signed notification was already received; a retry must be signed again with a new timestamp")
)

// ReplayWindow is how far a signed timestamp may be from now.
const ReplayWindow = 5 * time.Minute

// VerifySignature checks a notification's signature when its subscription
// has a signing key: X-Signature is the hex HMAC-SHA256 of
// "<timestamp>.<body>", X-Signature-Timestamp (Unix seconds) is required
// and must be within ReplayWindow of now, and the same signature is
// accepted once: a replay within the window is refused. Subscriptions
// without a key need no signature. When the notification then fails to
// take effect, ForgetSignature lets the source send it again.
func (s *Service) VerifySignature(ctx context.Context, sub Subscription, body []byte, signature, timestamp string) error {
	key := sub.SigningKey
	if len(key) == 0 {
		return nil
	}
	got, err := hex.DecodeString(signature)
	if err != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	if timestamp == "" {
		return ErrNoSignatureTimestamp
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), got) {
		return ErrBadSignature
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	now, signedAt := s.now(), time.Unix(sec, 0)
	if d := now.Sub(signedAt); d > ReplayWindow || d < -ReplayWindow {
		return ErrStaleSignature
	}
	// Kept twice the window, so that a replica whose clock runs behind
	// still finds it.
	fresh, err := s.Store.ClaimSignature(ctx, sub.TenantID, sub.ID, got, signedAt, now.Add(-2*ReplayWindow))
	if err != nil {
		return err
	}
	if !fresh {
		return ErrReplayedSignature
	}
	return nil
}

// ForgetSignature releases a signature VerifySignature accepted, for a
// notification that failed before it took effect (a 5xx), so that the
// source's retry of the same request is not taken for a replay.
func (s *Service) ForgetSignature(ctx context.Context, sub Subscription, signature string) error {
	if len(sub.SigningKey) == 0 {
		return nil
	}
	got, err := hex.DecodeString(signature)
	if err != nil {
		return nil // never claimed
	}
	return s.Store.ReleaseSignature(ctx, sub.TenantID, sub.ID, got)
}
