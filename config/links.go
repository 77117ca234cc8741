package config

import (
	"time"

	"github.com/tidings-health/tidings/seal"
)

// LinkConfig configures the links Tidings puts in mail besides the
// portal's: one-click unsubscribe and open/click tracking (package links).
type LinkConfig struct {
	// Key signs the link tokens (TIDINGS_LINK_KEY, base64 of 32 bytes;
	// secret). Unset: a key derived from the oldest configured blind index
	// key version, so links keep working across restarts, but not once that
	// version is removed after a re-key (README, "Blind indexes").
	Key string
	// UnsubscribeTTL is how long a mail's unsubscribe link works
	// (TIDINGS_UNSUBSCRIBE_TTL, default 2160h, 90 days); TrackingTTL, its
	// open pixel and click redirects (TIDINGS_TRACKING_TTL, default 720h).
	UnsubscribeTTL, TrackingTTL time.Duration
}

func linkConfig(get func(k, def string) string, getd func(k string, def time.Duration) time.Duration) LinkConfig {
	return LinkConfig{Key: get("TIDINGS_LINK_KEY", ""),
		UnsubscribeTTL: getd("TIDINGS_UNSUBSCRIBE_TTL", 90*24*time.Hour),
		TrackingTTL:    getd("TIDINGS_TRACKING_TTL", 30*24*time.Hour)}
}

func (l LinkConfig) validate() []string {
	var p []string
	if l.Key != "" {
		if _, err := decodeKey(l.Key); err != nil {
			p = append(p, "TIDINGS_LINK_KEY must be base64 of 32 bytes")
		}
	}
	// CAN-SPAM wants an unsubscribe link to work 30 days after sending.
	// Zero (a config built in code) means the default.
	if l.UnsubscribeTTL != 0 && l.UnsubscribeTTL < 30*24*time.Hour {
		p = append(p, "TIDINGS_UNSUBSCRIBE_TTL must be at least 720h (30 days)")
	}
	if l.TrackingTTL < 0 {
		p = append(p, "TIDINGS_TRACKING_TTL must be positive")
	}
	return p
}

// LinkKey is the key that signs link tokens: TIDINGS_LINK_KEY, else one
// derived from keys' oldest blind index key version.
func (l LinkConfig) LinkKey(keys *seal.Keyring) ([]byte, error) {
	if l.Key != "" {
		return decodeKey(l.Key)
	}
	return keys.DeriveKey("link tokens v1"), nil
}

// decodeKey reads one base64 key of 32 bytes, as seal reads its keys.
func decodeKey(s string) ([]byte, error) {
	m, err := seal.ParseKeys("x:" + s)
	if err != nil {
		return nil, err
	}
	return m["x"], nil
}
