package intake

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"
)

// signatureLedger keeps claimed signatures in memory: the one part of Store
// VerifySignature reaches. (Store.ClaimSignature itself runs against
// Postgres in cmd/tidings' TestReplayedSignedStatusChangeIsRefused.)
type signatureLedger struct {
	Store
	seen map[string]bool
}

func (l *signatureLedger) ClaimSignature(_ context.Context, tenantID, subscriptionID string, sig []byte, _, _ time.Time) (bool, error) {
	k := tenantID + "|" + subscriptionID + "|" + string(sig)
	if l.seen[k] {
		return false, nil
	}
	l.seen[k] = true
	return true, nil
}

// FuzzVerifySignature feeds X-Signature-Timestamp values and bodies, signed
// with the subscription's key or not, to the check of signed
// notifications. It never panics; it accepts a request only when the
// signature is the HMAC of "<timestamp>.<body>" and the timestamp is within
// the replay window, and then once; every refusal is one of its fixed
// errors, which repeat nothing the request sent.
func FuzzVerifySignature(f *testing.F) {
	now := time.Unix(1796688000, 0)
	f.Add([]byte(`{"resourceType":"Bundle"}`), strconv.FormatInt(now.Unix(), 10), true, "")
	f.Add([]byte(`{"resourceType":"Bundle"}`), strconv.FormatInt(now.Unix()-299, 10), true, "")
	f.Add([]byte(`{}`), strconv.FormatInt(now.Unix()-301, 10), true, "")
	f.Add([]byte(`{}`), "", true, "")
	f.Add([]byte(`{}`), "+1796688000", true, "")
	f.Add([]byte(`{}`), "9223372036854775807", true, "")
	f.Add([]byte(`{}`), "1796688000", false, "zz")
	f.Add([]byte(`{}`), "1796688000", false, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	key := []byte("the subscription's signing key, 32")
	sub := Subscription{ID: "sub", TenantID: "t1", SigningKey: key}
	f.Fuzz(func(t *testing.T, body []byte, timestamp string, sign bool, signature string) {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(timestamp + "."))
		m.Write(body)
		mac := hex.EncodeToString(m.Sum(nil))
		if sign {
			signature = mac
		}
		s := &Service{Store: &signatureLedger{seen: map[string]bool{}}, Now: func() time.Time { return now }}
		err := s.VerifySignature(context.Background(), sub, body, signature, timestamp)
		sec, perr := strconv.ParseInt(timestamp, 10, 64)
		inWindow := perr == nil && sec >= now.Add(-ReplayWindow).Unix() && sec <= now.Add(ReplayWindow).Unix()
		good, _ := hex.DecodeString(signature)
		valid := hmac.Equal(good, m.Sum(nil))
		switch {
		case err == nil:
			if !valid || !inWindow {
				t.Fatalf("accepted: valid MAC %v, timestamp %q in the window %v", valid, timestamp, inWindow)
			}
			if err := s.VerifySignature(context.Background(), sub, body, signature, timestamp); !errors.Is(err, ErrReplayedSignature) {
				t.Fatalf("the same signed request again: %v", err)
			}
		case err != ErrBadSignature && err != ErrNoSignatureTimestamp && err != ErrStaleSignature:
			t.Fatalf("refused with %v, not one of the fixed errors", err)
		case valid && inWindow:
			t.Fatalf("a valid signature in the window refused: %v", err)
		}
	})
}
