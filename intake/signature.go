package intake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/fault"
)

// ErrBadSignature means a subscription that signs its notifications sent one
// without a valid signature, or with a timestamp outside the replay window.
var ErrBadSignature = fault.New(fault.Unauthorized, "missing or invalid notification signature")

// ReplayWindow is how far a signed timestamp may be from now.
const ReplayWindow = 5 * time.Minute

// VerifySignature checks a notification's signature when its subscription
// has a signing key: X-Signature is the hex HMAC-SHA256 of the raw body, or,
// when X-Signature-Timestamp (Unix seconds) is sent, of "<timestamp>.<body>",
// and that timestamp must be within ReplayWindow of now. Subscriptions
// without a key need no signature.
func (s *Service) VerifySignature(sub Subscription, body []byte, signature, timestamp string) error {
	key := sub.SigningKey
	if len(key) == 0 {
		return nil
	}
	want, err := hex.DecodeString(signature)
	if err != nil || len(want) != sha256.Size {
		return ErrBadSignature
	}
	m := hmac.New(sha256.New, key)
	if timestamp != "" {
		sec, err := strconv.ParseInt(timestamp, 10, 64)
		if err != nil {
			return ErrBadSignature
		}
		if d := s.now().Sub(time.Unix(sec, 0)); d > ReplayWindow || d < -ReplayWindow {
			return ErrBadSignature
		}
		m.Write([]byte(timestamp))
		m.Write([]byte{'.'})
	}
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), want) {
		return ErrBadSignature
	}
	return nil
}
